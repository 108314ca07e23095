"""Smoke tests of the test infrastructure: the real stores start and answer
the client libraries the project uses (aetcd, py-consul)."""

from __future__ import annotations

import aetcd
from consul.aio import Consul

from tests.support import ConsulAgent, EtcdServer, async_wait_until, wait_until


async def test_etcd_put_get(etcd: EtcdServer) -> None:
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=5) as client:
        await client.put(b"/smoke/etcd", b"hello")
        got = await client.get(b"/smoke/etcd")
    assert got is not None
    assert got.value == b"hello"
    # etcdctl sees the same data (the CLI the docs use to inspect the cluster).
    assert etcd.etcdctl("get", "--print-value-only", "/smoke/etcd").strip() == "hello"


async def test_consul_register_and_read_back(consul: ConsulAgent) -> None:
    client = Consul(host=consul.host, port=consul.http_port)
    try:
        ok = await client.agent.service.register(
            "smoke-svc", service_id="smoke-1", address="127.0.0.1", port=7000, tags=["primary"]
        )
        assert ok is True

        services = await client.agent.services()
        assert services["smoke-1"]["Service"] == "smoke-svc"

        async def in_catalog() -> list[dict[str, object]]:
            _index, nodes = await client.catalog.service("smoke-svc")
            return list(nodes)

        nodes = await async_wait_until(in_catalog, timeout=10, what="smoke-svc in the catalog")
        assert nodes[0]["ServiceID"] == "smoke-1"
        assert nodes[0]["ServicePort"] == 7000
        assert nodes[0]["ServiceTags"] == ["primary"]
    finally:
        await client.close()


def test_etcd_fault_helpers(etcd: EtcdServer) -> None:
    etcd.etcdctl("put", "/smoke/durable", "kept")

    etcd.pause()
    try:
        assert not etcd.healthy()  # SIGSTOP: port open, no answers
    finally:
        etcd.resume()
    wait_until(etcd.healthy, timeout=10, what="etcd healthy after SIGCONT")

    old_pid = etcd.pid
    etcd.kill()
    assert not etcd.running
    etcd.start()  # same ports, same data dir
    assert etcd.pid != old_pid
    assert etcd.etcdctl("get", "--print-value-only", "/smoke/durable").strip() == "kept"
