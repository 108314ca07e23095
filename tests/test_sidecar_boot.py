"""Role at boot (DESIGN §4): the six rules, each with a real etcd, real data nodes and
real sidecar processes. The test plays the coordinator by writing records into etcd
(epoch + nodes/ + shards/ in one transaction); each test has its own cluster name.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from clusterstate.keys import Keys
from clusterstate.records import Status
from clusterstate.topology import Health, NodeState, Role, ShardRecord, Topology, new_id
from dcs.etcd import EtcdStore
from sidecar import snapshot as local_snapshot
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.sidecar_fixtures import (
    FakeCoordinator,
    Member,
    fake_node,
    member_record,
    one_shard,
    start_member,
    start_sidecar,
)
from tests.support import LOOPBACK, EtcdServer, free_port, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def store(etcd: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(etcd.endpoint, timeout=2.0) as s:
        yield s


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Processes to stop at the end of the test, whatever happens."""
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        with contextlib.suppress(Exception):
            proc.stop()


def endpoint(node: DataNodeProcess, zone: str = "") -> Status:
    return Status(addr=LOOPBACK, port=node.port, admin_port=node.admin_port, zone=zone)


def node_id(node: DataNodeProcess) -> str:
    return node.admin().execute_command("SLOTKEEPER", "NODEID").decode()  # type: ignore[no-any-return]


def view_epoch(node: DataNodeProcess) -> int | None:
    raw = node.admin().execute_command("SLOTKEEPER", "TOPOLOGY", "GET")
    return None if raw is None else Topology.from_json(raw).epoch


def can_write(node: DataNodeProcess, key: str = "probe", value: str = "v") -> bool:
    try:
        return bool(node.client(socket_timeout=2).set(key, value))
    except redis.exceptions.ClusterDownError:
        return False


def assert_fenced(node: DataNodeProcess) -> None:
    with pytest.raises(redis.exceptions.ClusterDownError, match="fenced"):
        node.client().set("fenced-probe", "x")


def readonly_get(node: DataNodeProcess, key: str) -> Any:
    c = node.client(single_connection_client=True)
    c.execute_command("READONLY")
    return c.get(key)


# --------------------------------------------------------------------------- rule 1


async def test_rule1_registry_ahead_is_adopted_and_writable_only_with_the_slot_lease(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule1")
    coord = FakeCoordinator(store, keys)
    node = start_datanode(tmp_path / "n1" / "data", "--cluster-enabled", "yes")
    cleanup.append(node)
    nid = node_id(node)
    # The local snapshot is older (epoch 2, a spare); the registry says primary at epoch 5.
    old = Topology.build(2, [], [member_record(nid, endpoint(node))])
    local_snapshot.write(node.dir / "node.json", local_snapshot.from_applied(nid, old, False))
    topo = one_shard([(nid, endpoint(node))], 5)
    shard = topo.shards[0].id
    await coord.write(topo)
    # The previous primary still holds the slot lease.
    previous = await store.grant(10)
    await store.put(keys.lease(shard), b"f" * 40, previous)

    sidecar = start_sidecar(node, etcd, keys.cluster)
    cleanup.append(sidecar)
    st = await coord.wait_status(nid, lambda s: s.epoch_applied == 5 and s.role_applied == "primary")
    assert not st.writable
    doc = sidecar.status()
    assert doc["boot_rule"] == "adopt-registry" and not doc["slot_lease"]
    assert view_epoch(node) == 5
    assert_fenced(node)
    assert sidecar.get("/primary")[0] == 503
    assert "held by ffffffff" in sidecar.log_text()

    await store.revoke(previous)  # the previous primary lets go: ours now
    wait_until(lambda: can_write(node), timeout=5, what="writable after taking the slot lease")
    assert await coord.lease_holder(shard) == nid
    await coord.wait_status(nid, lambda s: s.writable)
    assert sidecar.get("/primary")[0] == 200
    snap = local_snapshot.read(node.dir / "node.json", nid)
    assert snap is not None and snap.epoch == 5 and snap.role is Role.PRIMARY


# --------------------------------------------------------------------------- rule 2


async def test_rule2_local_snapshot_ahead_reports_a_conflict_and_stays_read_only(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule2")
    coord = FakeCoordinator(store, keys)
    node = start_datanode(tmp_path / "n1" / "data", "--cluster-enabled", "yes")
    cleanup.append(node)
    nid = node_id(node)
    shard = new_id()
    ahead = one_shard([(nid, endpoint(node))], 9, shard_id=shard)
    local_snapshot.write(node.dir / "node.json", local_snapshot.from_applied(nid, ahead, False))
    await coord.write(one_shard([(nid, endpoint(node))], 4, shard_id=shard))  # an old backup

    sidecar = start_sidecar(node, etcd, keys.cluster)
    cleanup.append(sidecar)
    st = await coord.wait_status(nid, lambda s: bool(s.conflict))
    assert "ahead of the registry epoch 4" in st.conflict
    assert sidecar.status()["boot_rule"] == "local-ahead"
    code, body = sidecar.get("/health")
    assert code == 503 and "conflict" in body["reason"]
    wait_until(lambda: view_epoch(node) == 9, timeout=5, what="the local view served")
    assert_fenced(node)
    assert await coord.lease_holder(shard) is None
    assert not (await coord.wait_status(nid)).writable

    # The coordinator resolves it by writing past the local epoch: adopted, writable.
    await coord.write(one_shard([(nid, endpoint(node))], 10, shard_id=shard))
    await coord.wait_status(nid, lambda s: not s.conflict and s.writable and s.epoch_applied == 10)
    assert can_write(node)
    assert sidecar.get("/health")[0] == 200


# --------------------------------------------------------------------------- rules 3 and 4


async def test_rule3_cold_start_registers_online_and_waits_for_the_bootstrap(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule3")
    coord = FakeCoordinator(store, keys)
    m = start_member(tmp_path / "n1" / "data", etcd, keys.cluster, zone="z1")
    cleanup.append(m)
    st = await coord.wait_status(m.node_id)
    assert (st.addr, st.port, st.admin_port, st.zone) == (LOOPBACK, m.node.port, m.node.admin_port, "z1")
    assert (st.health, st.role_applied, st.epoch_applied, st.writable) == ("online", "none", 0, False)
    assert st.http_port == m.sidecar.http_port
    assert m.sidecar.status()["boot_rule"] == "cold-start"
    assert m.sidecar.get("/health")[0] == 200
    assert m.sidecar.get("/readiness")[0] == 503  # not a member yet
    assert view_epoch(m.node) is None  # nothing to serve before the bootstrap
    with pytest.raises(redis.exceptions.ClusterDownError):
        m.node.client().set("k", "v")
    # The coordinator bootstraps the cluster with this node as the only primary.
    await coord.write(one_shard([(m.node_id, st)], 1))
    wait_until(lambda: can_write(m.node), timeout=5, what="bootstrapped primary writable")
    assert m.sidecar.get("/readiness")[0] == 200


async def test_rule4_new_spare_in_an_existing_cluster(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule4")
    coord = FakeCoordinator(store, keys)
    shard = new_id()
    primary = fake_node(Role.PRIMARY, shard)
    existing = Topology.build(3, [ShardRecord(shard, ((0, 16383),), primary.id)], [primary])
    await coord.write(existing)
    m = start_member(tmp_path / "n1" / "data", etcd, keys.cluster)
    cleanup.append(m)
    st = await coord.wait_status(m.node_id, lambda s: s.epoch_applied == 3)
    assert (st.role_applied, st.health) == ("none", "online")
    assert m.sidecar.status()["boot_rule"] == "spare"
    with pytest.raises(redis.exceptions.MovedError):
        m.node.client().get("k")  # the cluster's view is served: it redirects
    # The coordinator records the spare (ONLINE, role none) at the next epoch.
    spare = member_record(m.node_id, st)
    await coord.write(Topology.build(4, existing.shards, [primary, spare]))
    st = await coord.wait_status(m.node_id, lambda s: s.epoch_applied == 4)
    assert m.sidecar.status()["state"] == "ONLINE" and st.role_applied == "none"


# --------------------------------------------------------------------------- rule 5


def boot_rule_is(m: Member, rule: str) -> bool:
    return m.sidecar.status()["boot_rule"] == rule


def serves_epoch(m: Member, epoch: int) -> bool:
    return view_epoch(m.node) == epoch


def healthy(m: Member) -> bool:
    return m.sidecar.get("/health")[0] == 200



async def test_rule5_etcd_unreachable_starts_from_the_local_snapshot_fenced(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule5")
    coord = FakeCoordinator(store, keys)
    p = start_member(tmp_path / "p" / "data", etcd, keys.cluster)
    r = start_member(tmp_path / "r" / "data", etcd, keys.cluster)
    cleanup += [p, r]
    stp, str_ = await coord.wait_status(p.node_id), await coord.wait_status(r.node_id)
    topo = one_shard([(p.node_id, stp), (r.node_id, str_)], 1)
    await coord.write(topo)
    wait_until(lambda: can_write(p.node, "before", "1"), timeout=5, what="primary writable")
    await coord.wait_status(r.node_id, lambda s: s.health == "online" and s.role_applied == "replica")
    wait_until(lambda: readonly_get(r.node, "before") == b"1", timeout=5)
    p.node.client().set("late", "2")
    wait_until(lambda: readonly_get(r.node, "late") == b"2", timeout=5)
    for m in (p, r):  # a clean stop of both hosts, then etcd goes away
        m.sidecar.stop()
        m.node.stop()
    try:
        etcd.stop()
        for m in (p, r):
            m.node = start_datanode(m.node.dir, "--cluster-enabled", "yes", port=m.node.port,
                                    admin_port=m.node.admin_port)
            m.sidecar = start_sidecar(m.node, etcd, keys.cluster)
        for m in (p, r):
            wait_until(partial(boot_rule_is, m, "etcd-unreachable"), timeout=10, what="rule 5")
            code, body = m.sidecar.get("/health")
            assert code == 503 and body["reason"].startswith("degraded") and body["degraded"]
            wait_until(partial(serves_epoch, m, 1), timeout=5, what="last view served")
        # The primary serves reads, fenced; the replica resyncs from its last known primary.
        assert p.sidecar.status()["role"] == "primary"
        assert p.node.client().get("late") == b"2"
        assert_fenced(p.node)
        wait_until(lambda: r.sidecar.status()["replication"]["link_up"], timeout=10,
                   what="replica linked to its last known primary")
        assert readonly_get(r.node, "late") == b"2"
    finally:
        if not etcd.running:
            etcd.start()
    # The registry is back: adopted (rule 1), the primary writable again.
    wait_until(lambda: p.sidecar.status()["boot_rule"] == "adopt-registry", timeout=15)
    wait_until(lambda: can_write(p.node, "after", "3"), timeout=10, what="writable again")
    for m in (p, r):
        wait_until(partial(healthy, m), timeout=10)
    wait_until(lambda: readonly_get(r.node, "after") == b"3", timeout=5)


# --------------------------------------------------------------------------- rule 6


async def test_rule6_restart_mid_join_resumes_as_a_loading_non_promotable_replica(
    etcd: EtcdServer, store: EtcdStore, tmp_path: Path, cleanup: list[Any]
) -> None:
    keys = Keys("boot-rule6")
    coord = FakeCoordinator(store, keys)
    shard = new_id()
    # The shard's primary is not running yet: the joining replica cannot sync.
    fport, fadmin = free_port(), free_port()
    primary = fake_node(Role.PRIMARY, shard)
    primary = type(primary)(primary.id, LOOPBACK, fport, fadmin, shard=shard, role=Role.PRIMARY,
                            state=NodeState.ACTIVE, health=Health.ONLINE,
                            replica_id=primary.replica_id)
    r = start_member(tmp_path / "r" / "data", etcd, keys.cluster)
    cleanup.append(r)
    st = await coord.wait_status(r.node_id)
    me = member_record(r.node_id, st, role=Role.REPLICA, shard=shard, state=NodeState.RECOVERING,
                       health=Health.LOADING)

    def joined(epoch: int, primary_id: str) -> Topology:
        nodes = [
            type(primary)(primary.id, LOOPBACK, fport, fadmin, shard=shard,
                          role=Role.PRIMARY if primary_id == primary.id else Role.REPLICA,
                          state=NodeState.ACTIVE, health=Health.ONLINE,
                          replica_id=primary.replica_id),
            type(me)(me.id, me.addr, me.port, me.admin_port, shard=shard,
                     role=Role.PRIMARY if primary_id == me.id else Role.REPLICA,
                     state=NodeState.RECOVERING, health=Health.LOADING,
                     replica_id=me.replica_id),
        ]
        others = tuple(n.id for n in nodes if n.id != primary_id)
        return Topology.build(epoch, [ShardRecord(shard, ((0, 16383),), primary_id, others)],
                              nodes)

    await coord.write(joined(3, primary.id))
    await coord.wait_status(r.node_id, lambda s: s.epoch_applied == 3 and s.health == "loading")

    def saved() -> local_snapshot.LocalSnapshot | None:
        snap = local_snapshot.read(r.node.dir / "node.json", r.node_id)
        return snap if snap is not None and snap.epoch == 3 else None

    snap = wait_until(saved, timeout=5, what="node.json at epoch 3")
    assert snap is not None and snap.loading and snap.replica_id == me.replica_id
    # Crash mid-join, restart.
    r.sidecar.kill()
    r.node.kill()
    r.node = start_datanode(r.node.dir, "--cluster-enabled", "yes", port=r.node.port,
                            admin_port=r.node.admin_port)
    r.sidecar = start_sidecar(r.node, etcd, keys.cluster, name="r2")
    wait_until(lambda: r.sidecar.status()["boot_rule"] == "resume-loading", timeout=10)
    st = await coord.wait_status(r.node_id, lambda s: s.epoch_applied == 3)
    assert (st.health, st.role_applied, st.load_progress) == ("loading", "replica", 0.0)
    assert r.sidecar.get("/replica")[0] == 503

    # Even when told to, a loading replica is not promoted (its data is not a copy).
    await coord.write(joined(4, r.node_id))
    st = await coord.wait_status(r.node_id, lambda s: "still loading" in s.last_error)
    assert st.role_applied == "replica" and not st.writable
    assert await coord.lease_holder(shard) is None
    assert_fenced_or_readonly(r.node)

    # The primary comes up; the replica syncs and becomes an online, promotable replica.
    await coord.write(joined(5, primary.id))
    p = start_datanode(tmp_path / "p" / "data", "--cluster-enabled", "yes", "--node-id",
                       primary.id, port=fport, admin_port=fadmin)
    cleanup.append(p)
    admin = p.admin()
    admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", joined(5, primary.id).to_json())
    admin.execute_command("SLOTKEEPER", "PROMOTE", 5, primary.replica_id)
    p.client().set("k", "from-primary")
    st = await coord.wait_status(r.node_id, lambda s: s.health == "online", timeout=15)
    assert st.load_progress == 1.0 and st.role_applied == "replica"
    assert readonly_get(r.node, "k") == b"from-primary"
    wait_until(lambda: not local_snapshot.read(r.node.dir / "node.json", r.node_id).loading,  # type: ignore[union-attr]
               timeout=5, what="node.json: synced")
    assert r.sidecar.get("/replica")[0] == 200


def assert_fenced_or_readonly(node: DataNodeProcess) -> None:
    with pytest.raises(redis.exceptions.RedisError):
        node.client().set("k", "v")

