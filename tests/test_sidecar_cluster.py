"""The sidecar in a running cluster, with real etcd, Consul, data nodes and sidecar
processes: fencing when etcd stops, fast failover when a data node dies, views
reaching the data node, Consul registration, stale specs, migrations, clean
shutdown. The test plays the coordinator (writes records into etcd).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from clusterstate.keys import Keys
from clusterstate.slots import key_slot
from clusterstate.topology import (
    Health,
    MigrationRecord,
    MigrationState,
    NodeState,
    Role,
    ShardRecord,
    Topology,
    new_id,
)
from dcs.consul import DATANODE_SERVICE, CheckStatus, ConsulCatalog, Instance
from dcs.etcd import EtcdStore
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.sidecar_fixtures import (
    TTL,
    FakeCoordinator,
    Member,
    fake_node,
    member_record,
    one_shard,
    start_member,
    start_sidecar,
)
from tests.support import ConsulAgent, EtcdServer, async_wait_until, free_port, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def store(etcd: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(etcd.endpoint, timeout=2.0) as s:
        yield s


@pytest.fixture
async def catalog(consul: ConsulAgent) -> AsyncIterator[ConsulCatalog]:
    async with ConsulCatalog(consul.http_addr) as c:
        yield c


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        with contextlib.suppress(Exception):
            proc.stop()


def can_write(node: DataNodeProcess, key: str = "probe", value: str = "v") -> bool:
    try:
        return bool(node.client(socket_timeout=2).set(key, value))
    except redis.exceptions.ClusterDownError:
        return False


def readonly_get(node: DataNodeProcess, key: str) -> Any:
    c = node.client(single_connection_client=True)
    c.execute_command("READONLY")
    return c.get(key)


def view_epoch(node: DataNodeProcess) -> int | None:
    raw = node.admin().execute_command("SLOTKEEPER", "TOPOLOGY", "GET")
    return None if raw is None else Topology.from_json(raw).epoch


async def primary_member(
    tmp_path: Path, etcd: EtcdServer, coord: FakeCoordinator, cleanup: list[Any], **kw: Any
) -> tuple[Member, Topology]:
    m = start_member(tmp_path / "n1" / "data", etcd, coord.keys.cluster, **kw)
    cleanup.append(m)
    st = await coord.wait_status(m.node_id)
    topo = one_shard([(m.node_id, st)], 1)
    await coord.write(topo)
    wait_until(lambda: can_write(m.node), timeout=5, what="primary writable")
    return m, topo


# --------------------------------------------------------------------------- fencing


async def test_etcd_stopped_fences_the_primary_within_ttl_x_0_8_then_recovers(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("fence-etcd"))
    m, _ = await primary_member(tmp_path, etcd, coord, cleanup)
    client = m.node.client(socket_timeout=2)
    client.set("k", "before")
    paused_at = time.monotonic()
    etcd.pause()
    try:
        wait_until(lambda: not can_write(m.node), timeout=TTL * 2, interval=0.01,
                   what="writes refused")
        fenced_after = time.monotonic() - paused_at
        # The last acknowledged keepalive was sent before the pause: its permit ends
        # at most TTL x 0.8 after it (plus the polling step).
        assert fenced_after <= TTL * 0.8 + 0.1, fenced_after
        assert client.get("k") == b"before"  # reads go on
        wait_until(lambda: m.sidecar.get("/health")[0] == 503, timeout=5)
        assert m.sidecar.get("/primary")[0] == 503
        # Stay away past the TTL: etcd expires the lease (status/, leases/<shard>) when it
        # comes back; the sidecar takes a new lease and the slot lease again.
        while time.monotonic() < paused_at + TTL + 0.5:
            time.sleep(0.05)
    finally:
        etcd.resume()
    wait_until(lambda: can_write(m.node, "k", "after"), timeout=10, what="writable again")
    wait_until(lambda: m.sidecar.get("/health")[0] == 200, timeout=5)
    assert m.sidecar.get("/primary")[0] == 200


# --------------------------------------------------------------------------- failover


async def test_datanode_killed_lease_gone_fast_then_the_replica_is_promoted(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("failover"))
    a = start_member(tmp_path / "a" / "data", etcd, coord.keys.cluster)
    b = start_member(tmp_path / "b" / "data", etcd, coord.keys.cluster)
    cleanup += [a, b]
    sta, stb = await coord.wait_status(a.node_id), await coord.wait_status(b.node_id)
    topo = one_shard([(a.node_id, sta), (b.node_id, stb)], 1)
    shard = topo.shards[0].id
    await coord.write(topo)
    wait_until(lambda: can_write(a.node, "k", "v1"), timeout=5)
    await coord.wait_status(b.node_id, lambda s: s.health == "online")
    wait_until(lambda: readonly_get(b.node, "k") == b"v1", timeout=5)
    assert await coord.lease_holder(shard) == a.node_id

    killed_at = time.monotonic()
    a.node.kill()

    async def lease_gone() -> bool:
        return await coord.lease_holder(shard) is None

    await async_wait_until(lease_gone, timeout=2, interval=0.002, what="leases/<shard> gone")
    gone_after = time.monotonic() - killed_at
    assert gone_after < 0.2, gone_after
    assert await coord.status(a.node_id) is None  # status/ went with the lease

    # The coordinator promotes the replica (the slot lease is absent); it becomes writable
    # only once its sidecar holds leases/<shard>.
    nodes = {n.id: n for n in topo.nodes}
    promoted = Topology.build(2, [ShardRecord(shard, ((0, 16383),), b.node_id, (a.node_id,))], [
        replace(nodes[b.node_id], role=Role.PRIMARY, state=NodeState.ACTIVE),
        replace(nodes[a.node_id], role=Role.REPLICA, state=NodeState.RECOVERING,
                health=Health.FAIL),
    ])
    await coord.write(promoted)
    wait_until(lambda: can_write(b.node, "k", "v2"), timeout=5, what="promoted replica writable")
    assert await coord.lease_holder(shard) == b.node_id

    # The old primary comes back: it registers again and follows the new primary.
    a.node = start_datanode(a.node.dir, "--cluster-enabled", "yes", port=a.node.port,
                            admin_port=a.node.admin_port)
    await coord.wait_status(a.node_id)
    back = Topology.build(3, promoted.shards, [
        promoted.nodes[0], replace(promoted.nodes[1], health=Health.LOADING)])
    await coord.write(back)
    await coord.wait_status(a.node_id, lambda s: s.role_applied == "replica"
                            and s.health == "online" and s.epoch_applied == 3)
    wait_until(lambda: readonly_get(a.node, "k") == b"v2", timeout=5)
    with pytest.raises(redis.exceptions.RedisError):
        a.node.client().set("k", "stale")


# --------------------------------------------------------------------------- views


def shard_health(client: redis.Redis, node_id: str) -> str | None:
    for shard in client.execute_command("CLUSTER", "SHARDS"):
        fields = dict(zip(shard[::2], shard[1::2], strict=True))
        for n in fields[b"nodes"]:
            nf = dict(zip(n[::2], n[1::2], strict=True))
            if nf[b"id"].decode() == node_id:
                return nf[b"health"].decode()  # type: ignore[no-any-return]
    return None


async def test_view_changes_reach_the_datanode_within_100ms_p99(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("latency"))
    m, topo = await primary_member(tmp_path, etcd, coord, cleanup)
    shard = topo.shards[0]
    other = fake_node(Role.REPLICA, shard.id)
    topo = Topology.build(2, [replace(shard, replicas=(other.id,))], [*topo.nodes, other])
    await coord.write(topo)
    client = m.node.client()
    wait_until(lambda: shard_health(client, other.id) == "online", timeout=5)
    samples = []
    for i in range(100):
        health = Health.FAIL if i % 2 == 0 else Health.ONLINE
        other = replace(other, health=health)
        epoch = topo.epoch + 1
        topo = Topology.build(epoch, topo.shards, [topo.nodes[0], other])
        t0 = time.monotonic()
        await coord.update(topo, [other])
        while shard_health(client, other.id) != health.value:
            assert time.monotonic() - t0 < 2, f"change {i} not applied"
            time.sleep(0.001)  # poll without starving the two processes under test
        samples.append(time.monotonic() - t0)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[98]
    print(f"etcd write -> CLUSTER SHARDS: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.1, samples[-5:]
    st = await coord.wait_status(m.node_id, lambda s: s.epoch_applied == topo.epoch)
    assert st.writable


async def test_a_stale_spec_is_never_applied(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("stale"))
    m, topo = await primary_member(tmp_path, etcd, coord, cleanup)
    current = Topology.build(5, topo.shards, topo.nodes)
    await coord.write(current)
    await coord.wait_status(m.node_id, lambda s: s.epoch_applied == 5)
    # An older spec (a registry restored from a backup): a different one, at epoch 3.
    hidden_spare = fake_node(Role.NONE, "", state=NodeState.ONLINE)
    await coord.write(Topology.build(3, topo.shards, [*topo.nodes, hidden_spare]), force=True)
    st = await coord.wait_status(m.node_id, lambda s: bool(s.conflict))
    assert st.epoch_applied == 5 and "behind" in st.conflict
    assert view_epoch(m.node) == 5
    repl = m.node.admin().execute_command("SLOTKEEPER", "REPLICATION")
    assert dict(zip(repl[::2], repl[1::2], strict=True))[b"epoch"] == 5
    wait_until(lambda: not can_write(m.node), timeout=3, what="read-only while in conflict")
    # The coordinator moves past it: applied, writable again.
    await coord.write(Topology.build(6, topo.shards, topo.nodes))
    await coord.wait_status(m.node_id, lambda s: s.epoch_applied == 6 and not s.conflict)
    wait_until(lambda: can_write(m.node), timeout=5, what="writable after the conflict")


# --------------------------------------------------------------------------- Consul, shutdown


async def datanode_instance(catalog: ConsulCatalog, node_id: str,
                            check: Any = lambda i: True) -> Instance:
    async def find() -> Instance | None:
        for inst in await catalog.instances(DATANODE_SERVICE):
            if inst.id == node_id and check(inst):
                return inst
        return None

    got = await async_wait_until(find, timeout=10, interval=0.1, what=f"consul {node_id[:8]}")
    assert got is not None
    return got


async def test_consul_registration_follows_roles_and_clean_shutdown_deregisters(
    etcd: EtcdServer, consul: ConsulAgent, store: EtcdStore, catalog: ConsulCatalog,
    tmp_path: Path, cleanup: list[Any],
) -> None:
    coord = FakeCoordinator(store, Keys("consul"))
    a = start_member(tmp_path / "a" / "data", etcd, coord.keys.cluster, consul=consul, zone="z1")
    b = start_member(tmp_path / "b" / "data", etcd, coord.keys.cluster, consul=consul, zone="z2")
    cleanup += [a, b]
    sta, stb = await coord.wait_status(a.node_id), await coord.wait_status(b.node_id)
    topo = one_shard([(a.node_id, sta), (b.node_id, stb)], 1)
    shard = topo.shards[0].id
    await coord.write(topo)
    ia = await datanode_instance(catalog, a.node_id, lambda i: i.tag("role") == "primary"
                                 and i.status is CheckStatus.PASSING)
    assert set(ia.tags) >= {"role:primary", "primary", f"shard:{shard}", "state:ACTIVE", "zone:z1"}
    assert (ia.address, ia.port) == ("127.0.0.1", a.node.port)
    assert ia.meta["node_id"] == a.node_id and ia.meta["epoch"] == "1"
    assert ia.meta["replica_id"] == str(next(n.replica_id for n in topo.nodes if n.id == a.node_id))
    ib = await datanode_instance(catalog, b.node_id, lambda i: i.tag("role") == "replica")
    assert ib.tag("state") == "STANDBY" and ib.tag("zone") == "z2"
    await coord.wait_status(b.node_id, lambda s: s.health == "online")  # synced: promotable

    # A planned role swap: the old primary is fenced and lets go of the slot lease, the
    # new one takes it; Consul follows.
    nodes = {n.id: n for n in topo.nodes}
    swapped = Topology.build(2, [ShardRecord(shard, ((0, 16383),), b.node_id, (a.node_id,))], [
        replace(nodes[b.node_id], role=Role.PRIMARY, state=NodeState.ACTIVE),
        replace(nodes[a.node_id], role=Role.REPLICA, state=NodeState.STANDBY),
    ])
    await coord.write(swapped)
    wait_until(lambda: can_write(b.node), timeout=5, what="new primary writable")
    assert await coord.lease_holder(shard) == b.node_id
    await datanode_instance(catalog, b.node_id, lambda i: i.tag("role") == "primary"
                            and i.tag("state") == "ACTIVE" and i.meta["epoch"] == "2"
                            and i.status is CheckStatus.PASSING)
    await datanode_instance(catalog, a.node_id, lambda i: i.tag("role") == "replica")

    # Clean shutdown of the primary's sidecar: writes stop, the lease (status and
    # slot lease) goes at once, Consul forgets the node, exit code 0.
    b.sidecar.stop()
    assert b.sidecar.popen is not None and b.sidecar.popen.returncode == 0
    assert not can_write(b.node)
    assert await coord.lease_holder(shard) is None and await coord.status(b.node_id) is None
    ids = [i.id for i in await catalog.instances(DATANODE_SERVICE)]
    assert b.node_id not in ids and a.node_id in ids
    lines = b.sidecar.log_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "stop requested" in line)

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines[start:]) if re.search(pattern, line))

    assert first("write permit revoked") < first(r"lease [0-9a-f]+ revoked") < first("deregistered")


# --------------------------------------------------------------------------- migrations


async def test_target_primary_runs_a_migration_and_the_source_applies_the_commit_after_it(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("migrate"))
    a = start_member(tmp_path / "a" / "data", etcd, coord.keys.cluster)
    b = start_member(tmp_path / "b" / "data", etcd, coord.keys.cluster)
    cleanup += [a, b]
    sta, stb = await coord.wait_status(a.node_id), await coord.wait_status(b.node_id)
    sa, sb = new_id(), new_id()
    na = member_record(a.node_id, sta, role=Role.PRIMARY, shard=sa, state=NodeState.ACTIVE)
    nb = member_record(b.node_id, stb, role=Role.PRIMARY, shard=sb, state=NodeState.ACTIVE)
    topo = Topology.build(1, [ShardRecord(sa, ((0, 8191),), a.node_id),
                              ShardRecord(sb, ((8192, 16383),), b.node_id)], [na, nb])
    await coord.write(topo)
    slot = key_slot(b"{b}")
    assert slot <= 8191  # in shard A
    wait_until(lambda: can_write(a.node, "{b}probe", "x"), timeout=5)
    await coord.wait_status(b.node_id, lambda s: s.writable)
    a.node.client().mset({f"{{b}}:{i}": str(i) for i in range(300)})

    mig = MigrationRecord("mig-1", ((slot, slot),), sa, sb, MigrationState.RUNNING)
    await coord.write(Topology.build(2, topo.shards, topo.nodes, [mig]))

    async def copied() -> dict[str, Any] | None:
        doc = await coord.migration("mig-1")
        return doc if doc and doc.get("copy_state") == "done" else None

    doc = await async_wait_until(copied, timeout=10, what="migration copied")
    assert doc["keys_moved"] == 301 and doc["bytes_moved"] > 0 and doc["copied_by"] == b.node_id
    assert doc["state"] == "RUNNING" and doc["error"] == ""
    # Commit: the slot is the target's; both sides apply it, the target first.
    low = ((0, slot - 1),) if slot > 0 else ()
    committed = Topology.build(3, [
        ShardRecord(sa, (*low, (slot + 1, 8191)), a.node_id),
        ShardRecord(sb, ((slot, slot), (8192, 16383)), b.node_id),
    ], [na, nb], [replace(mig, state=MigrationState.DONE)])
    await coord.write(committed)
    sta3 = await coord.wait_status(a.node_id, lambda s: s.epoch_applied == 3)
    stb3 = await coord.wait_status(b.node_id, lambda s: s.epoch_applied == 3)
    assert sta3.writable and stb3.writable
    assert b.node.client().get("{b}:7") == b"7"
    with pytest.raises(redis.exceptions.MovedError):
        a.node.client().get("{b}:7")
    assert "did not apply epoch" not in a.sidecar.log_text()  # the target went first
    wait_until(lambda: a.node.client().execute_command("DBSIZE") <= 2, timeout=5,
               what="source dropped the moved keys")


# --------------------------------------------------------------------------- a stuck data node, supervision


async def test_a_datanode_that_stops_answering_loses_its_lease_then_comes_back(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("stuck"))
    m, topo = await primary_member(tmp_path, etcd, coord, cleanup)
    shard = topo.shards[0].id
    permit_end = time.monotonic() + m.node.admin().execute_command("SLOTKEEPER", "WRITE-PERMIT") / 1000
    m.node.pause()  # SIGSTOP: the socket stays open, nothing answers
    try:
        paused_at = time.monotonic()

        async def lease_gone() -> bool:
            return await coord.lease_holder(shard) is None

        await async_wait_until(lease_gone, timeout=5, interval=0.01, what="lease revoked")
        gone_at = time.monotonic()
        # No PONG for --datanode-timeout (1 s) counts as dead; the lease goes once no write
        # permit the hung primary may hold is left (it could wake up and write).
        assert gone_at >= permit_end - 0.02, (gone_at - paused_at, permit_end - paused_at)
        # It gets no new permit once it missed a few pings (0.3 s): the lease goes at most
        # TTL x 0.8 after that.
        assert gone_at - paused_at < 0.3 + TTL * 0.8 + 0.2, gone_at - paused_at
        assert m.sidecar.get("/health")[0] == 503
    finally:
        m.node.resume()
    wait_until(lambda: can_write(m.node), timeout=10, what="writable after resuming")
    st = await coord.wait_status(m.node_id, lambda s: s.writable)
    assert st.epoch_applied == 1


async def test_supervised_datanode_is_restarted_and_stopped_with_the_sidecar(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    coord = FakeCoordinator(store, Keys("supervise"))
    data = tmp_path / "n1" / "data"
    data.mkdir(parents=True)
    node = DataNodeProcess(argv=[], log_path=tmp_path / "unused.log", port=free_port(),
                           admin_port=free_port(), dir=data)
    command = shlex.join([sys.executable, "-m", "slotkeeper", "datanode", "--port", str(node.port),
                          "--admin-port", str(node.admin_port), "--dir", str(data),
                          "--cluster-enabled", "yes", "--snapshot-interval", "0"])
    sidecar = start_sidecar(node, etcd, coord.keys.cluster, "--supervise", command)
    cleanup.append(sidecar)
    wait_until(node.answers, timeout=15, what="supervised data node up")
    node_id = node.admin().execute_command("SLOTKEEPER", "NODEID").decode()
    st = await coord.wait_status(node_id)
    await coord.write(one_shard([(node_id, st)], 1))
    wait_until(lambda: can_write(node, "k", "v"), timeout=5)
    node.client().execute_command("SAVE")
    pid = int(node.client().info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: int(node.client().info("server")["process_id"]) != pid, timeout=15,
               what="data node restarted by the sidecar")
    wait_until(lambda: can_write(node, "k2", "v"), timeout=10, what="writable after the restart")
    assert node.client().get("k") == b"v"  # from its snapshot
    new_pid = int(node.client().info("server")["process_id"])
    sidecar.stop()
    wait_until(lambda: not node.answers(), timeout=10, what="data node stopped with the sidecar")
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)
