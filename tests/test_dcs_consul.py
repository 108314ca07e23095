"""dcs.consul against a real Consul agent: registration with tags, meta and an
HTTP check, tag updates, check status, deregistration, errors.

The checked endpoint is a tiny aiohttp server on a free port whose answer the
test switches (200 → 503 → closed port). Consul runs checks at most once a
second, so waits are deadlines of a few seconds. Each test registers its own
service ids (the agent is shared by the module).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dcs.consul import (
    COORDINATOR_SERVICE,
    DATANODE_SERVICE,
    CheckStatus,
    ConsulCatalog,
    HttpCheck,
    Instance,
    Registration,
    coordinator_registration,
    datanode_registration,
)
from dcs.errors import StoreError, StoreUnavailable
from tests.support import ConsulAgent, async_wait_until, free_port


class HealthEndpoint:
    """``GET /health`` answering ``status``; ``stop()`` closes the port."""

    def __init__(self) -> None:
        self.status = 200
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/health"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def health(_: web.Request) -> web.Response:
            return web.Response(status=self.status, text=f"status {self.status}")

        app = web.Application()
        app.router.add_get("/health", health)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def endpoint() -> AsyncIterator[HealthEndpoint]:
    ep = HealthEndpoint()
    await ep.start()
    try:
        yield ep
    finally:
        await ep.stop()


@pytest.fixture
async def catalog(consul: ConsulAgent) -> AsyncIterator[ConsulCatalog]:
    async with ConsulCatalog(consul.http_addr, timeout=2.0) as cat:
        yield cat


def node_id() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


async def instance(
    catalog: ConsulCatalog, service: str, service_id: str, status: CheckStatus | None = None
) -> Instance:
    """Wait until the catalog shows ``service_id`` (with ``status`` if given)."""

    async def find() -> Instance | None:
        for inst in await catalog.instances(service):
            if inst.id == service_id and (status is None or inst.status == status):
                return inst
        return None

    what = f"{service}/{service_id}" + (f" {status}" if status else "")
    found = await async_wait_until(find, timeout=10, interval=0.1, what=what)
    assert found is not None
    return found


async def test_register_update_deregister_a_datanode(
    catalog: ConsulCatalog, endpoint: HealthEndpoint
) -> None:
    nid, shard = node_id(), "cd" * 20
    reg = datanode_registration(
        nid,
        "127.0.0.1",
        7001,
        role="primary",
        shard=shard,
        state="ACTIVE",
        epoch=7,
        replica_id=123,
        check=HttpCheck(endpoint.url, interval=1.0, timeout=0.5),
    )
    await catalog.register(reg)
    try:
        inst = await instance(catalog, DATANODE_SERVICE, nid, CheckStatus.PASSING)
        assert inst.name == DATANODE_SERVICE
        assert (inst.address, inst.port) == ("127.0.0.1", 7001)
        assert set(inst.tags) == {"role:primary", "primary", f"shard:{shard}", "state:ACTIVE"}
        assert inst.tag("role") == "primary" and inst.tag("shard") == shard
        assert inst.tag("zone") is None
        assert dict(inst.meta) == {"node_id": nid, "epoch": "7", "replica_id": "123"}
        assert "200" in inst.output

        # The served role changes: new tags and meta, the check keeps its status.
        updated = await catalog.update(
            nid,
            tags=["role:replica", "replica", f"shard:{shard}", "state:STANDBY"],
            meta={**reg.meta, "epoch": "8"},
        )
        assert updated.check == reg.check
        inst = await instance(catalog, DATANODE_SERVICE, nid)
        assert inst.tag("role") == "replica" and inst.tag("state") == "STANDBY"
        assert inst.meta["epoch"] == "8" and inst.status == CheckStatus.PASSING
        assert await catalog.update(nid) == updated  # nothing to change
    finally:
        await catalog.deregister(nid)
    assert nid not in [i.id for i in await catalog.instances(DATANODE_SERVICE)]
    await catalog.deregister(nid)  # idempotent
    with pytest.raises(StoreError):
        await catalog.update(nid, tags=[])


async def test_check_goes_critical_when_health_fails_or_stops_answering(
    catalog: ConsulCatalog, endpoint: HealthEndpoint
) -> None:
    nid = node_id()
    await catalog.register(
        datanode_registration(
            nid,
            "127.0.0.1",
            7002,
            role="replica",
            shard="",
            state="RECOVERING",
            epoch=1,
            replica_id=5,
            check=HttpCheck(endpoint.url, interval=1.0, timeout=0.5),
        )
    )
    try:
        inst = await instance(catalog, DATANODE_SERVICE, nid, CheckStatus.PASSING)
        assert inst.tag("shard") is None  # a node in no shard has no shard tag

        endpoint.status = 503
        inst = await instance(catalog, DATANODE_SERVICE, nid, CheckStatus.CRITICAL)
        assert "503" in inst.output
        passing = await catalog.health(DATANODE_SERVICE, passing_only=True)
        assert nid not in [i.id for i in passing.instances]

        endpoint.status = 200
        await instance(catalog, DATANODE_SERVICE, nid, CheckStatus.PASSING)
        await endpoint.stop()  # the sidecar is gone: nothing listens on the port
        inst = await instance(catalog, DATANODE_SERVICE, nid, CheckStatus.CRITICAL)
        assert "refused" in inst.output.lower()
    finally:
        await catalog.deregister(nid)


async def test_register_a_coordinator_and_block_on_changes(catalog: ConsulCatalog) -> None:
    before = await catalog.health(COORDINATOR_SERVICE)
    instance_id = f"coordinator-{uuid.uuid4().hex[:8]}"

    # A blocking query returns as soon as the service changes, well before its wait.
    waiting = asyncio.create_task(
        catalog.health(COORDINATOR_SERVICE, index=before.index, wait=20.0)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await catalog.register(coordinator_registration(instance_id, "127.0.0.1", 8080, check=None))
    try:
        changed = await asyncio.wait_for(waiting, 10)
        assert changed.index > before.index
        assert instance_id in [i.id for i in changed.instances]
        inst = await instance(catalog, COORDINATOR_SERVICE, instance_id, CheckStatus.PASSING)
        assert inst.tags == () and inst.port == 8080
    finally:
        await catalog.deregister(instance_id)


async def test_unreachable_or_paused_consul_raises_store_unavailable(consul: ConsulAgent) -> None:
    async with ConsulCatalog(f"127.0.0.1:{free_port()}", timeout=1.0) as nobody:
        with pytest.raises(StoreUnavailable):
            await nobody.instances(DATANODE_SERVICE)

    loop = asyncio.get_running_loop()
    async with ConsulCatalog(f"http://{consul.http_addr}", timeout=0.5) as cat:
        consul.pause()
        try:
            began = loop.time()
            with pytest.raises(StoreUnavailable):
                await cat.instances(DATANODE_SERVICE)
            assert loop.time() - began < 1.5
        finally:
            consul.resume()
        assert isinstance(await cat.instances(DATANODE_SERVICE), tuple)


async def test_refused_requests_raise_store_error(catalog: ConsulCatalog) -> None:
    bad_meta = Registration(
        COORDINATOR_SERVICE, "bad-meta", "127.0.0.1", 1, meta={"not a valid key!": "x"}
    )
    with pytest.raises(StoreError) as refused:
        await catalog.register(bad_meta)
    assert not isinstance(refused.value, StoreUnavailable)
    assert "bad-meta" not in [i.id for i in await catalog.instances(COORDINATOR_SERVICE)]


def test_check_worst_status() -> None:
    worst = CheckStatus.worst
    assert worst([]) == CheckStatus.PASSING
    assert worst(["passing", "warning"]) == CheckStatus.WARNING
    assert worst(["warning", "critical", "passing"]) == CheckStatus.CRITICAL
    assert worst(["maintenance"]) == CheckStatus.CRITICAL


@pytest.mark.parametrize("addr", ["", "ftp://h:1", "http://"])
def test_address_validation(addr: str) -> None:
    with pytest.raises(ValueError):
        ConsulCatalog(addr)
