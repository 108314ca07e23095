"""Planner tables: views in, actions out. No servers.

Each table row is a small cluster built with :class:`Cluster` (records,
statuses, leases, intents as etcd would hold them), turned into a
:class:`ClusterView` exactly as the coordinator builds one from a snapshot,
and planned with a fixed ``now``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from clusterstate.keys import Keys
from clusterstate.layout import balanced_ranges
from clusterstate.records import Settings, Status
from clusterstate.topology import Health, NodeRecord, NodeState, Role, ShardRecord
from coordinator.actions import (
    AbortHandoff,
    Action,
    AddReplica,
    Bootstrap,
    CompleteHandoff,
    Failover,
    FinishIntent,
    ForgetIntents,
    InitSettings,
    ManualFailover,
    RegisterNodes,
    RemoveNode,
    ResolveEpochConflict,
    SetNodeFlags,
    StartHandoff,
    UpdateHealth,
)
from coordinator.intents import Intent, IntentKind, IntentState, Tags, intent_key
from coordinator.planner import Plan, plan
from coordinator.policy import Policy
from coordinator.view import ClusterView, Handoff, build_view, node_value, shard_value
from dcs.port import KeyValue, Snapshot

NOW = 1_700_000_000.0


def N(i: int) -> str:
    """Node id number ``i``: 40 hex characters, readable in failures (``0101…``)."""
    return f"{i:02x}" * 20


def S(i: int) -> str:
    return f"{0xe0 + i:02x}" * 20


class Cluster:
    """The keys of one cluster, as a test table row writes them."""

    def __init__(self, name: str = "t") -> None:
        self.keys = Keys(name)
        self.values: dict[str, bytes] = {}
        self.epoch_value = 0

    # ----------------------------------------------------------------- writers

    def settings(self, **fields: Any) -> Cluster:
        self.values[self.keys.settings] = Settings(**fields).to_json()
        return self

    def epoch(self, n: int) -> Cluster:
        self.epoch_value = n
        self.values[self.keys.epoch] = str(n).encode()
        return self

    def node(
        self,
        i: int,
        *,
        shard: int | None = None,
        role: Role = Role.NONE,
        state: NodeState = NodeState.ONLINE,
        health: Health = Health.ONLINE,
        zone: str = "",
        addr: str | None = None,
        hidden: bool = False,
        hidden_by: str = "",
        nofailover: bool = False,
        priority: int = 0,
        replica_id: int = 0,
        epoch: int | None = None,
    ) -> Cluster:
        record = NodeRecord(
            N(i),
            addr or f"10.0.0.{i}",
            7000,
            17000,
            zone=zone,
            shard=S(shard) if shard is not None else "",
            role=role,
            state=state,
            health=health,
            hidden=hidden,
            nofailover=nofailover,
            priority=priority,
            replica_id=replica_id or (1000 + i if role is not Role.NONE else 0),
        )
        e = self.epoch_value if epoch is None else epoch
        self.values[self.keys.node(N(i))] = node_value(record, e, hidden_by, e)
        return self

    def shard(
        self,
        i: int,
        primary: int,
        replicas: tuple[int, ...] = (),
        *,
        sync: tuple[int, ...] = (),
        slots: tuple[tuple[int, int], ...] | None = None,
        handoff: tuple[int, str] | None = None,
        epoch: int | None = None,
    ) -> Cluster:
        record = ShardRecord(
            S(i),
            slots if slots is not None else ((0, 16383),),
            N(primary),
            tuple(N(r) for r in replicas),
            tuple(N(r) for r in sync),
        )
        e = self.epoch_value if epoch is None else epoch
        h = Handoff(N(handoff[0]), handoff[1]) if handoff else None
        self.values[self.keys.shard(S(i))] = shard_value(record, e, h, e)
        return self

    def status(self, i: int, **fields: Any) -> Cluster:
        base = {"addr": f"10.0.0.{i}", "port": 7000, "admin_port": 17000,
                "epoch_applied": self.epoch_value}
        self.values[self.keys.status(N(i))] = Status(**{**base, **fields}).to_json()
        return self

    def drop_status(self, i: int) -> Cluster:
        self.values.pop(self.keys.status(N(i)), None)
        return self

    def lease(self, shard: int, node: int) -> Cluster:
        self.values[self.keys.lease(S(shard))] = N(node).encode()
        return self

    def drop_lease(self, shard: int) -> Cluster:
        self.values.pop(self.keys.lease(S(shard)), None)
        return self

    def replica_id(self, rid: int) -> Cluster:
        self.values[self.keys.replica_id(rid)] = b"{}"
        return self

    def intent(self, intent: Intent) -> Cluster:
        self.values[intent_key(self.keys, intent.id)] = intent.to_json()
        return self

    # ----------------------------------------------------------------- readers

    def view(self) -> ClusterView:
        kvs = [
            KeyValue(key, value, mod_revision=i + 1, create_revision=i + 1)
            for i, (key, value) in enumerate(sorted(self.values.items()))
        ]
        return build_view(self.keys, Snapshot.of(self.keys.root, len(kvs) + 1, kvs))

    def plan(self, now: float = NOW, policy: Policy | None = None) -> Plan:
        v = self.view()
        return plan(v, v.settings, now, policy)


def healthy(
    shards: int = 1,
    replicas: int = 2,
    *,
    zones: tuple[str, ...] = (),
    offset: int = 5000,
    epoch: int = 10,
    min_ack: int = 0,
    **settings: Any,
) -> Cluster:
    """A bootstrapped cluster, everything alive and caught up. Shard ``s``
    (1-based) has primary ``10*s`` and replicas ``10*s + 1 …``."""
    c = Cluster().epoch(epoch).settings(replicas=replicas, min_replicas_to_ack=min_ack, **settings)
    ranges = balanced_ranges(shards)
    for s in range(1, shards + 1):
        p = 10 * s
        reps = tuple(p + r for r in range(1, replicas + 1))
        for k, n in enumerate((p, *reps)):
            zone = zones[k % len(zones)] if zones else ""
            primary = n == p
            c.node(
                n,
                shard=s,
                role=Role.PRIMARY if primary else Role.REPLICA,
                state=NodeState.ACTIVE if primary else NodeState.STANDBY,
                zone=zone,
            )
            c.status(
                n,
                role_applied="primary" if primary else "replica",
                repl_offset=offset,
                writable=primary,
                zone=zone,
            )
        c.shard(s, p, reps, sync=reps if min_ack else (), slots=(ranges[s - 1],))
        c.lease(s, p)
    return c


def only(p: Plan, kind: type[Action]) -> Any:
    found = [a for a in p.actions if isinstance(a, kind)]
    assert len(found) == 1, f"expected one {kind.__name__} in {p.actions!r} (notes {p.notes})"
    return found[0]


def none_of(p: Plan, kind: type[Action]) -> None:
    assert not [a for a in p.actions if isinstance(a, kind)], p.actions


# =========================================================================== idle


def test_a_healthy_cluster_plans_nothing() -> None:
    p = healthy(shards=3, replicas=2).plan()
    assert p.actions == ()
    assert p.sentence() == "nothing to do at epoch 10: 3 shards, 9 nodes (9 alive)"


def test_initial_settings_written_only_when_missing() -> None:
    initial = Settings(replicas=2)
    c = Cluster()
    action = only(c.plan(policy=Policy(initial_settings=initial)), InitSettings)
    assert action.writes.settings == initial
    none_of(c.settings().plan(policy=Policy(initial_settings=initial)), InitSettings)


# =========================================================================== registration


def test_a_new_status_registers_an_online_spare() -> None:
    c = Cluster().epoch(3).status(1, zone="a", health="online").status(2, health="loading")
    c.status(3, addr="")  # no address yet: not registered
    action = only(c.plan(), RegisterNodes)
    assert action.nodes == (N(1), N(2))
    n1 = action.writes.node(N(1))
    assert (n1.role, n1.state, n1.health, n1.zone, n1.addr) == (
        Role.NONE, NodeState.ONLINE, Health.ONLINE, "a", "10.0.0.1")
    assert action.writes.node(N(2)).health is Health.LOADING
    assert "3 report no usable" not in c.plan().sentence()


# =========================================================================== bootstrap


def spares(c: Cluster, ids: range, zones: tuple[str, ...] = (), hosts: int = 0) -> Cluster:
    for k, i in enumerate(ids):
        zone = zones[k % len(zones)] if zones else ""
        addr = f"10.0.1.{k % hosts}" if hosts else None
        c.node(i, zone=zone, addr=addr).status(i, zone=zone)
    return c


@pytest.mark.parametrize(
    ("primaries", "replicas", "online", "expect_shards"),
    [
        (3, 1, 5, None),  # 5 of 6: waits
        (3, 1, 6, 3),
        (3, 1, 8, 3),  # extra nodes stay spares
        (1, 0, 1, 1),
        (2, 2, 6, 2),
    ],
)
def test_bootstrap_waits_for_the_expected_members(
    primaries: int, replicas: int, online: int, expect_shards: int | None
) -> None:
    c = Cluster().settings(bootstrap_primaries=primaries, bootstrap_replicas=replicas)
    spares(c, range(1, online + 1))
    p = c.plan()
    if expect_shards is None:
        none_of(p, Bootstrap)
        assert p.sentence() == (
            f"waiting to bootstrap: {online} of {primaries * (1 + replicas)} expected members "
            f"online ({primaries} primaries x {1 + replicas})"
        )
        return
    b = only(p, Bootstrap)
    assert len(b.shards) == expect_shards
    assert all(len(r) == replicas for r in b.replicas)
    slots = sorted(w.record.slots[0] for w in b.writes.shards)
    assert slots == balanced_ranges(expect_shards)
    members = [*b.primaries, *(n for r in b.replicas for n in r)]
    assert len(set(members)) == primaries * (1 + replicas)
    # every member got a fresh, distinct replica id, allocated in the same transaction
    rids = [b.writes.node(n).replica_id for n in members]
    assert len(set(rids)) == len(rids) and set(rids) == set(b.writes.replica_ids)
    for n in b.primaries:
        rec = b.writes.node(n)
        assert (rec.role, rec.state, rec.health, rec.hidden) == (
            Role.PRIMARY, NodeState.ACTIVE, Health.ONLINE, False)
    for reps in b.replicas:
        for n in reps:
            rec = b.writes.node(n)
            assert (rec.role, rec.state, rec.health, rec.hidden) == (
                Role.REPLICA, NodeState.RECOVERING, Health.LOADING, True)


def test_bootstrap_places_replicas_in_other_zones_and_hosts() -> None:
    c = Cluster().settings(bootstrap_primaries=3, bootstrap_replicas=1)
    # two nodes in each zone; the first three ids all in zone a would make naive primaries
    spares(c, range(1, 7), zones=("a", "a", "a", "b", "b", "c"))
    b = only(c.plan(), Bootstrap)
    zones = {n: c.view().node(n).zone for n in (N(i) for i in range(1, 7))}
    assert sorted(zones[p] for p in b.primaries) == ["a", "b", "c"]
    for primary, reps in zip(b.primaries, b.replicas, strict=True):
        assert all(zones[r] != zones[primary] for r in reps)


def test_bootstrap_spreads_replicas_over_hosts_when_zones_are_equal() -> None:
    c = Cluster().settings(bootstrap_primaries=2, bootstrap_replicas=1)
    spares(c, range(1, 5), hosts=2)  # 10.0.1.0 and 10.0.1.1, two nodes each
    b = only(c.plan(), Bootstrap)
    v = c.view()
    for primary, reps in zip(b.primaries, b.replicas, strict=True):
        assert v.node(reps[0]).addr != v.node(primary).addr
    assert v.node(b.primaries[0]).addr != v.node(b.primaries[1]).addr


def test_bootstrap_from_a_static_member_list() -> None:
    listed = (N(2), N(3), N(4), N(5))
    c = Cluster().settings(bootstrap_primaries=2, bootstrap_members=listed)
    spares(c, range(1, 5))  # node 5 missing
    p = c.plan()
    none_of(p, Bootstrap)
    assert "3 of the 4 listed members online" in p.sentence()
    spares(c, range(5, 6))
    b = only(c.plan(), Bootstrap)
    assert set(b.primaries) | {n for r in b.replicas for n in r} == set(listed)
    assert N(1) not in b.primaries


def test_bootstrap_ignores_hidden_dead_and_loading_spares_and_waits_when_paused() -> None:
    c = Cluster().settings(bootstrap_primaries=1, bootstrap_replicas=1)
    c.node(1).status(1)
    c.node(2, hidden=True, hidden_by="operator").status(2)
    c.node(3)  # no status: sidecar gone
    c.node(4, health=Health.LOADING).status(4, health="loading")
    none_of(c.plan(), Bootstrap)
    c.node(5).status(5)
    assert only(c.plan(), Bootstrap).primaries in ((N(1),), (N(5),))
    c.settings(bootstrap_primaries=1, bootstrap_replicas=1, pause=True)
    p = c.plan()
    none_of(p, Bootstrap)
    assert "paused: not bootstrapping" in p.notes  # the sentence tells what is done first


def test_bootstrap_without_hiding_loading_replicas() -> None:
    c = Cluster().settings(bootstrap_primaries=1, bootstrap_replicas=1, hide_while_loading=False)
    spares(c, range(1, 3))
    b = only(c.plan(), Bootstrap)
    assert not any(w.record.hidden for w in b.writes.nodes)


# =========================================================================== health


def test_status_vanished_marks_the_node_offline_and_failed() -> None:
    c = healthy(shards=1, replicas=2).drop_status(11)
    h = only(c.plan(), UpdateHealth)
    rec = h.writes.node(N(11))
    assert (rec.state, rec.health) == (NodeState.OFFLINE, Health.FAIL)
    assert (rec.role, rec.shard, rec.replica_id) == (Role.REPLICA, S(1), 1011)  # kept
    assert h.why == f"node {N(11)[:8]} STANDBY→OFFLINE online→fail"


def test_a_dead_spare_goes_offline_and_comes_back_online() -> None:
    c = healthy(shards=1, replicas=1).node(5)
    rec = only(c.plan(), UpdateHealth).writes.node(N(5))
    assert (rec.state, rec.health) == (NodeState.OFFLINE, Health.FAIL)
    c.node(5, state=NodeState.OFFLINE, health=Health.FAIL).status(5)
    rec = only(c.plan(), UpdateHealth).writes.node(N(5))
    assert (rec.state, rec.health) == (NodeState.ONLINE, Health.ONLINE)


@pytest.mark.parametrize(
    ("replica_offset", "role_applied", "applied", "health", "expect"),
    [
        (5000, "replica", 10, "online", (NodeState.STANDBY, Health.ONLINE)),
        (5000 - 1024, "replica", 10, "online", (NodeState.STANDBY, Health.ONLINE)),  # = max lag
        (5000 - 1025, "replica", 10, "online", None),  # 1 byte too far behind: stays loading
        (5000, "none", 10, "online", None),  # has not applied its role yet
        (5000, "replica", 9, "online", None),  # has not applied its assignment yet
        (5000, "replica", 10, "loading", None),  # still syncing
        (0, "replica", 10, "fail", (NodeState.RECOVERING, Health.FAIL)),
    ],
)
def test_a_recovering_replica_is_online_once_within_max_lag(
    replica_offset: int,
    role_applied: str,
    applied: int,
    health: str,
    expect: tuple[NodeState, Health] | None,
) -> None:
    c = healthy(shards=1, replicas=1, max_lag_bytes=1024)
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.RECOVERING, health=Health.LOADING,
           hidden=True, hidden_by="policy")
    c.status(11, role_applied=role_applied, repl_offset=replica_offset, epoch_applied=applied,
             health=health)
    p = c.plan()
    if expect is None:
        none_of(p, UpdateHealth)
        return
    rec = only(p, UpdateHealth).writes.node(N(11))
    assert (rec.state, rec.health) == expect
    # hidden while loading by policy: unhidden exactly when online
    assert rec.hidden is (expect[1] is not Health.ONLINE)


def test_an_operator_hidden_replica_stays_hidden_when_it_catches_up() -> None:
    c = healthy(shards=1, replicas=1)
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.RECOVERING, health=Health.LOADING,
           hidden=True, hidden_by="operator")
    rec = only(c.plan(), UpdateHealth).writes.node(N(11))
    assert (rec.state, rec.health, rec.hidden) == (NodeState.STANDBY, Health.ONLINE, True)


def test_policy_hidden_replicas_are_unhidden_when_the_policy_is_turned_off() -> None:
    c = healthy(shards=1, replicas=1, hide_while_loading=False)
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.RECOVERING, health=Health.LOADING,
           hidden=True, hidden_by="policy")
    c.status(11, role_applied="replica", health="loading")
    rec = only(c.plan(), UpdateHealth).writes.node(N(11))
    assert (rec.health, rec.hidden) == (Health.LOADING, False)


def test_a_standby_that_resyncs_is_recovering_but_lag_alone_changes_nothing() -> None:
    c = healthy(shards=1, replicas=1)
    c.status(11, role_applied="replica", repl_offset=1)  # far behind but online: no change
    none_of(c.plan(), UpdateHealth)
    c.status(11, role_applied="replica", health="loading")
    rec = only(c.plan(), UpdateHealth).writes.node(N(11))
    assert (rec.state, rec.health) == (NodeState.RECOVERING, Health.LOADING)


def test_returning_nodes_enter_by_role() -> None:
    c = healthy(shards=1, replicas=1).lease(1, 10)
    c.node(10, shard=1, role=Role.PRIMARY, state=NodeState.OFFLINE, health=Health.FAIL)
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.OFFLINE, health=Health.FAIL)
    c.status(11, role_applied="replica", health="loading")
    h = only(c.plan(), UpdateHealth)
    assert (h.writes.node(N(10)).state, h.writes.node(N(10)).health) == (
        NodeState.ACTIVE, Health.ONLINE)
    assert (h.writes.node(N(11)).state, h.writes.node(N(11)).health) == (
        NodeState.RECOVERING, Health.LOADING)
    assert not h.writes.node(N(11)).hidden  # not a new replica: not hidden


def test_sync_replicas_follow_health_when_writes_wait_for_acks() -> None:
    c = healthy(shards=1, replicas=2, min_ack=1)
    c.shard(1, 10, (11, 12), sync=(11,))
    h = only(c.plan(), UpdateHealth)  # 12 is caught up: it enters
    assert h.writes.shard(S(1)).sync_replicas == (N(11), N(12))
    c.drop_status(11)  # 11 gone: it leaves first
    h = only(c.plan(), UpdateHealth)
    assert h.writes.shard(S(1)).sync_replicas == (N(12),)
    c2 = healthy(shards=1, replicas=2, min_ack=0).shard(1, 10, (11, 12), sync=(11, 12))
    assert only(c2.plan(), UpdateHealth).writes.shard(S(1)).sync_replicas == ()


def test_health_keeps_flowing_while_paused() -> None:
    c = healthy(shards=1, replicas=1, pause=True).drop_status(11)
    only(c.plan(), UpdateHealth)


# =========================================================================== failover


def lose_primary(c: Cluster, shard: int = 1, primary: int = 10) -> Cluster:
    return c.drop_lease(shard).drop_status(primary)


def test_no_failover_while_the_lease_is_held_or_the_primary_lives() -> None:
    none_of(healthy().drop_status(10).plan(), Failover)  # lease still held
    none_of(healthy().drop_lease(1).plan(), Failover)  # primary alive: recreates it


def test_failover_promotes_the_highest_offset() -> None:
    c = lose_primary(healthy(shards=1, replicas=3))
    c.status(11, role_applied="replica", repl_offset=4000)
    c.status(12, role_applied="replica", repl_offset=4500)
    c.status(13, role_applied="replica", repl_offset=4200)
    f = only(c.plan(), Failover)
    assert (f.shard, f.promoted, f.demoted) == (S(1), N(12), N(10))
    assert f.writes.lease_absent == (S(1),)
    shard = f.writes.shard(S(1))
    assert shard.primary == N(12) and shard.replicas == (N(11), N(13), N(10))
    new = f.writes.node(N(12))
    assert (new.role, new.state, new.health, new.hidden) == (
        Role.PRIMARY, NodeState.ACTIVE, Health.ONLINE, False)
    assert f"promoting {N(12)[:8]} at offset 4500 (best of 3)" in f.why


def test_the_lost_primary_returns_as_a_recovering_replica_with_a_new_replica_id() -> None:
    c = lose_primary(healthy(shards=1, replicas=1)).replica_id(7)
    f = only(c.plan(), Failover)
    old = f.writes.node(N(10))
    assert (old.role, old.state, old.health, old.shard) == (
        Role.REPLICA, NodeState.OFFLINE, Health.FAIL, S(1))
    assert old.replica_id == f.replica_id and f.writes.replica_ids == (f.replica_id,)
    assert f.replica_id not in c.view().replica_ids and f.replica_id != 1010
    # its sidecar comes back before the failover: RECOVERING, loading, hidden by policy
    c.status(10, role_applied="primary", health="online")
    c.drop_lease(1)
    c.status(10, health="fail")
    old = only(c.plan(), Failover).writes.node(N(10))
    assert (old.state, old.health) == (NodeState.RECOVERING, Health.FAIL)


@pytest.mark.parametrize(
    ("tweak", "expect"),
    [
        # equal offsets: priority decides
        ({11: {"priority": 1}, 12: {"priority": 5}}, 12),
        # equal offsets and priority: another zone than the lost primary's
        ({11: {"zone": "a"}, 12: {"zone": "b"}}, 12),
        ({11: {"zone": "b"}, 12: {"zone": "a"}}, 11),
        # nofailover never; hidden never
        ({11: {"nofailover": True}}, 12),
        ({12: {"hidden": True, "hidden_by": "operator"}}, 11),
        # not online / not STANDBY: never
        ({11: {"state": NodeState.RECOVERING, "health": Health.LOADING}}, 12),
        ({11: {"nofailover": True}, 12: {"nofailover": True}}, None),
    ],
)
def test_failover_candidate_rules(tweak: dict[int, dict[str, Any]], expect: int | None) -> None:
    c = healthy(shards=1, replicas=2)
    c.node(10, shard=1, role=Role.PRIMARY, state=NodeState.ACTIVE, zone="a")
    for n in (11, 12):
        fields: dict[str, Any] = {
            "shard": 1, "role": Role.REPLICA, "state": NodeState.STANDBY, **tweak.get(n, {})}
        c.node(n, **fields)
    lose_primary(c)
    p = c.plan()
    if expect is None:
        none_of(p, Failover)
        assert "no replica can be promoted" in p.sentence()
        return
    assert only(p, Failover).promoted == N(expect)


def test_failover_prefers_offset_over_priority_and_zone() -> None:
    c = healthy(shards=1, replicas=2)
    c.node(10, shard=1, role=Role.PRIMARY, state=NodeState.ACTIVE, zone="a")
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.STANDBY, zone="a", priority=0)
    c.node(12, shard=1, role=Role.REPLICA, state=NodeState.STANDBY, zone="b", priority=9)
    c.status(11, role_applied="replica", repl_offset=6000)
    assert only(lose_primary(c).plan(), Failover).promoted == N(11)


def test_failover_in_min_replicas_to_ack_mode_only_promotes_sync_replicas() -> None:
    c = healthy(shards=1, replicas=2, min_ack=1).shard(1, 10, (11, 12), sync=(11,))
    c.status(12, role_applied="replica", repl_offset=9999)  # ahead, but not a sync replica
    f = only(lose_primary(c).plan(), Failover)
    assert f.promoted == N(11)
    assert f.writes.shard(S(1)).sync_replicas == ()  # re-entered once they follow the new primary
    c.shard(1, 10, (11, 12), sync=())
    p = c.plan()
    none_of(p, Failover)
    assert "no replica can be promoted" in p.sentence()


def test_failover_when_the_primary_datanode_failed_but_its_sidecar_lives() -> None:
    c = healthy().drop_lease(1).status(10, health="fail", role_applied="primary")
    f = only(c.plan(), Failover)
    assert "its data node failed" in f.why


def test_no_failover_while_paused() -> None:
    c = lose_primary(healthy(shards=2, replicas=1, pause=True))
    p = c.plan()
    none_of(p, Failover)
    assert f"paused: shard {S(1)[:8]} lost its primary" in p.sentence()
    assert all(not a.automatic for a in p.actions)


def test_failover_and_health_of_the_same_node_never_share_a_cycle() -> None:
    c = lose_primary(healthy(shards=1, replicas=1))
    p = c.plan()
    assert [type(a) for a in p.actions] == [Failover]
    assert [type(a) for a in p.deferred] == [UpdateHealth]
    assert p.sentence().endswith("1 more next cycle")


# =========================================================================== repair


def test_repair_adds_a_spare_with_a_new_replica_id_never_reused() -> None:
    c = healthy(shards=1, replicas=2)
    c.settings(replicas=3)
    # spare 5 was once a replica with id 4242 (removed): the id stays allocated
    c.node(5).status(5).replica_id(4242)
    a = only(c.plan(), AddReplica)
    assert (a.shard, a.node) == (S(1), N(5))
    rec = a.writes.node(N(5))
    assert (rec.role, rec.state, rec.health, rec.hidden, rec.shard) == (
        Role.REPLICA, NodeState.RECOVERING, Health.LOADING, True, S(1))
    assert a.replica_id == rec.replica_id and a.writes.replica_ids == (a.replica_id,)
    assert a.replica_id not in c.view().replica_ids
    assert a.writes.shard(S(1)).replicas == (N(11), N(12), N(5))


def test_repair_prefers_another_zone_and_host() -> None:
    c = healthy(shards=1, replicas=1, zones=("a", "b"))
    c.settings(replicas=2)
    c.node(5, zone="a", addr="10.0.0.10").status(5, zone="a")  # primary's zone and host
    c.node(6, zone="a").status(6, zone="a")
    c.node(7, zone="c").status(7, zone="c")
    assert only(c.plan(), AddReplica).node == N(7)


def test_repair_skips_hidden_dead_spares_and_waits_while_paused() -> None:
    c = healthy(shards=1, replicas=1)
    c.settings(replicas=2)
    c.node(5, hidden=True, hidden_by="removed").status(5)
    c.node(6, state=NodeState.OFFLINE, health=Health.FAIL)
    p = c.plan()
    none_of(p, AddReplica)
    assert "no spare is available" in p.sentence()
    c.node(7).status(7)
    c.settings(replicas=2, pause=True)
    p = c.plan()
    none_of(p, AddReplica)
    assert "paused: 1 shard(s) short of replicas" in p.sentence()


def test_two_shards_short_of_replicas_get_different_spares() -> None:
    c = healthy(shards=2, replicas=1)
    c.settings(replicas=2)
    c.node(5).status(5).node(6).status(6)
    adds = [a for a in c.plan().actions if isinstance(a, AddReplica)]
    assert {a.node for a in adds} == {N(5), N(6)} and {a.shard for a in adds} == {S(1), S(2)}
    assert adds[0].replica_id != adds[1].replica_id


# =========================================================================== operator intents


def intent(kind: IntentKind, n: int = 1, **fields: Any) -> Intent:
    return Intent(id=f"{int(NOW * 1000) - 10_000 + n:013d}-{n:08x}", kind=kind,
                  created=NOW - 10, **fields)


def test_hide_and_unhide() -> None:
    c = healthy().intent(intent(IntentKind.HIDE, node=N(11)))
    a = only(c.plan(), SetNodeFlags)
    rec = a.writes.node(N(11))
    assert rec.hidden and a.writes.intent(a.intent).state is IntentState.DONE
    c = healthy().node(11, shard=1, role=Role.REPLICA, state=NodeState.STANDBY, hidden=True,
                       hidden_by="operator").intent(intent(IntentKind.UNHIDE, node=N(11)))
    assert not only(c.plan(), SetNodeFlags).writes.node(N(11)).hidden


def test_hiding_a_slot_owning_primary_is_refused() -> None:
    c = healthy().intent(intent(IntentKind.HIDE, node=N(10)))
    f = only(c.plan(), FinishIntent)
    done = f.writes.intents[0]
    assert (done.state, done.status, done.error) == (IntentState.FAILED, 409, "primary_owns_slots")
    assert not f.writes.topology


def test_unknown_node_and_noop_intents() -> None:
    c = healthy().intent(intent(IntentKind.HIDE, node=N(99)))
    done = only(c.plan(), FinishIntent).writes.intents[0]
    assert (done.status, done.error) == (404, "unknown_node")
    c = healthy().intent(intent(IntentKind.UNHIDE, node=N(11)))
    done = only(c.plan(), FinishIntent).writes.intents[0]
    assert (done.state, done.message) == (IntentState.DONE, "nothing to change")


def test_tags_change_at_run_time() -> None:
    c = healthy().intent(intent(IntentKind.TAG, node=N(11),
                                tags=Tags(zone="z9", nofailover=True, priority=7)))
    rec = only(c.plan(), SetNodeFlags).writes.node(N(11))
    assert (rec.zone, rec.nofailover, rec.priority) == ("z9", True, 7)


def test_operator_intents_work_while_paused() -> None:
    c = healthy(pause=True).intent(intent(IntentKind.HIDE, node=N(11)))
    only(c.plan(), SetNodeFlags)


def test_remove_a_replica_keeps_its_id_retired_and_leaves_a_hidden_spare() -> None:
    c = healthy(shards=1, replicas=2, min_ack=1).intent(intent(IntentKind.REMOVE, node=N(11)))
    r = only(c.plan(), RemoveNode)
    rec = r.writes.node(N(11))
    assert (rec.role, rec.shard, rec.replica_id, rec.hidden, rec.state) == (
        Role.NONE, "", 0, True, NodeState.ONLINE)
    shard = r.writes.shard(S(1))
    assert shard.replicas == (N(12),) and shard.sync_replicas == (N(12),)
    assert not r.forgotten
    # a dead replica is forgotten
    c = healthy().drop_status(11).intent(intent(IntentKind.REMOVE, node=N(11)))
    r = only(c.plan(), RemoveNode)
    assert r.forgotten and r.writes.forget_nodes == (N(11),)
    # a primary: refused
    c = healthy().intent(intent(IntentKind.REMOVE, node=N(10)))
    assert only(c.plan(), FinishIntent).writes.intents[0].error == "is_primary"


def test_finished_intents_are_forgotten_after_the_retention() -> None:
    old = intent(IntentKind.HIDE, 1, node=N(11)).done(NOW - 700, "ok")
    fresh = intent(IntentKind.HIDE, 2, node=N(11)).done(NOW - 10, "ok")
    c = healthy().intent(old).intent(fresh)
    f = only(c.plan(policy=Policy(intent_retention=600)), ForgetIntents)
    assert f.intents == (old.id,)


# =========================================================================== leadership transfer


def test_transfer_without_target_picks_the_least_loaded_replica() -> None:
    c = healthy(shards=2, replicas=2)
    # node 21's host already runs a primary: 22 is less loaded
    c.node(21, shard=2, role=Role.REPLICA, state=NodeState.STANDBY, addr="10.0.0.10")
    c.intent(intent(IntentKind.FAILOVER, shard=S(2)))
    s = only(c.plan(), StartHandoff)
    assert (s.shard, s.target, s.attempt) == (S(2), N(22), 1)
    shard = s.writes.shards[0]
    assert shard.handoff == Handoff(N(22), s.intent) and shard.record.primary == N(20)
    running = s.writes.intents[0]
    assert (running.state, running.chosen, running.deadline) == (
        IntentState.RUNNING, N(22), NOW + Policy().transfer_timeout)


def handing_over(c: Cluster, it: Intent, target: int, deadline: float) -> Cluster:
    running = it.with_(state=IntentState.RUNNING, attempts=1, chosen=N(target), deadline=deadline)
    return c.intent(running).shard(1, 10, (11, 12), handoff=(target, it.id))


def test_transfer_completes_once_fenced_and_caught_up() -> None:
    it = intent(IntentKind.FAILOVER, shard=S(1), target=N(12))
    c = handing_over(healthy(shards=1, replicas=2), it, 12, NOW + 5)
    c.status(10, role_applied="primary", writable=False, repl_offset=6000)
    c.status(12, role_applied="replica", repl_offset=5999)
    p = c.plan()
    none_of(p, CompleteHandoff)
    assert "caught" in p.sentence() or "catching up" in p.sentence()
    c.status(12, role_applied="replica", repl_offset=6000)
    done = only(c.plan(), CompleteHandoff)
    shard = done.writes.shard(S(1))
    assert (shard.primary, shard.replicas) == (N(12), (N(11), N(10)))
    old = done.writes.node(N(10))
    assert (old.role, old.state, old.replica_id) == (Role.REPLICA, NodeState.RECOVERING, 1010)
    assert done.writes.lease_as_read == (S(1),)
    assert done.writes.intents[0].state is IntentState.DONE
    assert done.writes.shards[0].handoff is None


def test_transfer_waits_for_the_primary_to_stop_writes() -> None:
    it = intent(IntentKind.FAILOVER, shard=S(1), target=N(12))
    c = handing_over(healthy(shards=1, replicas=2), it, 12, NOW + 5)
    c.status(10, role_applied="primary", writable=True)  # still writable
    p = c.plan()
    none_of(p, CompleteHandoff)
    assert "waiting for the primary to stop writes" in p.sentence()


def test_transfer_times_out_restores_and_retries_with_backoff_then_fails() -> None:
    it = intent(IntentKind.FAILOVER, shard=S(1), target=N(12))
    c = handing_over(healthy(shards=1, replicas=2), it, 12, NOW - 0.1)
    c.status(10, role_applied="primary", writable=False, repl_offset=9000)
    policy = Policy(transfer_attempts=2, transfer_backoff=1.0)
    a = only(c.plan(policy=policy), AbortHandoff)
    assert a.retry and a.writes.shards[0].handoff is None
    again = a.writes.intents[0]
    assert (again.state, again.not_before) == (IntentState.PENDING, NOW + 1.0)
    assert "did not catch up in time (4000 bytes behind)" in again.message
    # before the backoff: nothing; after: attempt 2
    c.intent(again).shard(1, 10, (11, 12))
    none_of(c.plan(now=NOW + 0.5, policy=policy), StartHandoff)
    s = only(c.plan(now=NOW + 1.5, policy=policy), StartHandoff)
    assert s.attempt == 2
    # attempt 2 times out too: the intent fails
    handing_over(c, s.writes.intents[0].with_(attempts=1), 12, NOW).intent(
        s.writes.intents[0].with_(deadline=NOW))
    a = only(c.plan(now=NOW + 2, policy=policy), AbortHandoff)
    assert not a.retry
    failed = a.writes.intents[0]
    assert (failed.state, failed.error) == (IntentState.FAILED, "transfer_failed")


def test_manual_failover_of_a_lost_primary_promotes_at_once_even_paused() -> None:
    c = lose_primary(healthy(shards=1, replicas=2, pause=True))
    c.intent(intent(IntentKind.FAILOVER, shard=S(1), target=N(11)))
    m = only(c.plan(), ManualFailover)
    assert (m.promoted, m.demoted) == (N(11), N(10))
    assert m.writes.lease_absent == (S(1),)
    assert m.writes.intents[0].state is IntentState.DONE


@pytest.mark.parametrize(
    ("fields", "code", "status"),
    [
        ({"shard": S(9)}, "unknown_shard", 404),
        ({"shard": S(1), "target": N(99)}, "unknown_node", 404),
        ({"shard": S(1), "target": N(10)}, "not_eligible", 409),  # the primary itself
        ({"shard": S(1), "target": N(12)}, "not_eligible", 409),  # nofailover
    ],
)
def test_transfer_refusals(fields: dict[str, Any], code: str, status: int) -> None:
    c = healthy(shards=1, replicas=2)
    c.node(12, shard=1, role=Role.REPLICA, state=NodeState.STANDBY, nofailover=True)
    c.intent(intent(IntentKind.FAILOVER, **fields))
    failed = only(c.plan(), FinishIntent).writes.intents[0]
    assert (failed.error, failed.status) == (code, status)


# =========================================================================== epoch conflicts


def test_a_node_ahead_of_the_registry_moves_the_epoch_past_it() -> None:
    c = healthy().status(11, role_applied="replica", conflict="local epoch 42 > registry 10",
                         epoch_applied=42)
    r = only(c.plan(), ResolveEpochConflict)
    assert r.epoch == 43 and r.writes.epoch == 43
    none_of(healthy(pause=True).status(11, conflict="x", epoch_applied=42).plan(),
            ResolveEpochConflict)
    # the sidecar words it; epoch_applied may still be 0 right after boot
    c = healthy().status(12, conflict="local snapshot epoch 57 is ahead of the registry epoch 10: "
                         "registry restored from an older backup? not acting on it",
                         epoch_applied=0)
    assert only(c.plan(), ResolveEpochConflict).epoch == 58


# =========================================================================== invariants


def test_every_planned_topology_is_valid_and_actions_never_overlap() -> None:
    c = lose_primary(healthy(shards=3, replicas=2, min_ack=1))
    c.settings(replicas=3, min_replicas_to_ack=1)
    c.node(5).status(5).node(6).status(6).status(7)
    c.intent(intent(IntentKind.HIDE, node=N(21)))
    p = c.plan()
    touched: set[str] = set()
    for a in p.actions:
        assert not (a.touches & touched)
        touched |= a.touches
    kinds = [a.kind for a in p.actions]
    assert kinds[0] == "failover" and "register" in kinds and "flags" in kinds


def test_view_reads_coordinator_fields_back() -> None:
    c = healthy().shard(1, 10, (11, 12), handoff=(12, "x"))
    c.node(11, shard=1, role=Role.REPLICA, state=NodeState.STANDBY, hidden=True,
           hidden_by="policy", epoch=7)
    v = c.view()
    assert v.shards[S(1)].handoff == Handoff(N(12), "x")
    assert (v.nodes[N(11)].hidden_by, v.nodes[N(11)].epoch, v.nodes[N(11)].since) == (
        "policy", 7, 7)
    assert v.leases == {S(1): N(10)}
    assert replace(v.node(N(11)), hidden=False).hidden is False
