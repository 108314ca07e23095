"""Sidecar decisions as pure functions, tested with tables (no servers): boot rules,
view plans, the write permit, observed health and status, probes, the slot lease
decision, migrations, the local snapshot, the records builder and the settings;
plus the lease keeper and the applier's command order on fakes with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from clusterstate.keys import KeyKind, Keys
from clusterstate.records import Settings, Status, node_to_json, shard_to_json
from clusterstate.topology import (
    Health,
    MigrationRecord,
    MigrationState,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    Topology,
)
from dcs.errors import LeaseLost, StoreUnavailable
from dcs.port import KeyValue, Lease, Snapshot, WatchBatch, WatchEvent
from sidecar import permit, probes, slotlease
from sidecar import snapshot as local_snapshot
from sidecar.boot import BootRule, Registry, decide_boot, registry_from_values
from sidecar.config import ConfigError, load_config, parse_args
from sidecar.facts import (
    Facts,
    Replication,
    consul_facts,
    observed_health,
    same_but_offset,
    status_record,
    still_loading,
    synced_replica_id,
)
from sidecar.lease import LeaseKeeper, LeaseTiming
from sidecar.plan import (
    Applied,
    Promote,
    ReleaseSlotLease,
    Replicate,
    WaitForTargets,
    plan_view,
    slot_lease_wanted,
    targets_first,
)
from sidecar.process import next_delay
from sidecar.snapshot import LocalSnapshot
from sidecar.state import State
from sidecar.transfer import migrations_to_run, progress_document
from sidecar.watcher import RecordsBuilder, SlotLease, lease_holder

ME, P, R2, SPARE = "a" * 40, "b" * 40, "c" * 40, "d" * 40
S1, S2 = "1" * 40, "2" * 40
KEYS = Keys("unit")


def node(nid: str, role: Role, shard: str = "", *, port: int = 7000, replica_id: int = 0,
         health: Health = Health.ONLINE, state: NodeState | None = None,
         hidden: bool = False) -> NodeRecord:
    st = state or {Role.PRIMARY: NodeState.ACTIVE, Role.REPLICA: NodeState.STANDBY,
                   Role.NONE: NodeState.ONLINE}[role]
    return NodeRecord(nid, "127.0.0.1", port, port + 10000, shard=shard, role=role, state=st,
                      health=health, replica_id=replica_id or (hash(nid) & 0xFFFF) + 1,
                      hidden=hidden)


def view(epoch: int, *, primary: str = ME, replicas: tuple[str, ...] = (P,),
         rid: int = 0, two_shards: bool = False, split: int = 8191,
         migrations: tuple[MigrationRecord, ...] = ()) -> Topology:
    """Shard S1 (primary, replicas) owning 0..split; with two_shards, S2 (primary R2)
    owning the rest."""
    nodes = [node(primary, Role.PRIMARY, S1, port=7000, replica_id=rid or 11)]
    nodes += [node(r, Role.REPLICA, S1, port=7001 + i, replica_id=rid + i + 20 if rid else 21 + i)
              for i, r in enumerate(replicas)]
    shards = [ShardRecord(S1, ((0, split),), primary, replicas)]
    if two_shards:
        nodes.append(node(R2, Role.PRIMARY, S2, port=7100))
        shards.append(ShardRecord(S2, ((split + 1, 16383),), R2))
    else:
        shards = [ShardRecord(S1, ((0, 16383),), primary, replicas)]
    return Topology.build(epoch, shards, nodes, migrations)


def values_of(topo: Topology) -> dict[str, bytes]:
    out = {KEYS.epoch: str(topo.epoch).encode()}
    for n in topo.nodes:
        out[KEYS.node(n.id)] = node_to_json(n, topo.epoch)
    for s in topo.shards:
        out[KEYS.shard(s.id)] = shard_to_json(s, topo.epoch)
    return out


# =========================================================================== boot


def local(epoch: int, topo: Topology | None = None, *, loading: bool = False) -> LocalSnapshot:
    return local_snapshot.from_applied(ME, topo, loading).with_(epoch=epoch) if topo else \
        LocalSnapshot(ME, epoch=epoch)


def registry(topo: Topology | None, *, empty: bool = False) -> Registry:
    if topo is None:
        return Registry(0, None, empty, None)
    me = next((n for n in topo.nodes if n.id == ME), None)
    return Registry(topo.epoch, me, False, topo)


AS_REPLICA = view(3, primary=P, replicas=(ME,))
BOOT_TABLE: list[tuple[str, Any, Any, BootRule, str, int, bool, bool, bool]] = [
    # name, local, registry, rule, view source, floor, lease allowed, loading, degraded
    ("registry ahead", local(3, view(3)), registry(view(5)), BootRule.ADOPT, "registry", 3,
     True, False, False),
    ("registry equal", local(5, view(5)), registry(view(5)), BootRule.ADOPT, "registry", 5,
     True, False, False),
    ("no local snapshot, recorded", None, registry(view(5)), BootRule.ADOPT, "registry", 0,
     True, False, False),
    ("local ahead", local(9, view(9)), registry(view(4)), BootRule.LOCAL_AHEAD, "local", 9,
     False, False, False),
    ("local ahead, no record", local(9, view(9)), registry(view(4, primary=P, replicas=())),
     BootRule.LOCAL_AHEAD, "local", 9, False, False, False),
    ("cold start", None, registry(None, empty=True), BootRule.COLD_START, "none", 0, True,
     False, False),
    ("cold start with an old local snapshot", local(0), registry(None, empty=True),
     BootRule.COLD_START, "none", 0, True, False, False),
    ("spare", None, registry(view(4, primary=P, replicas=())), BootRule.SPARE, "registry", 0,
     True, False, False),
    ("etcd unreachable, snapshot", local(7, view(7)), None, BootRule.ETCD_UNREACHABLE, "local",
     7, False, False, True),
    ("etcd unreachable, no snapshot", None, None, BootRule.ETCD_UNREACHABLE, "none", 0, False,
     False, True),
    ("etcd unreachable, loading replica", local(3, AS_REPLICA, loading=True), None,
     BootRule.ETCD_UNREACHABLE, "local", 3, False, True, True),
    ("restarted mid-join", local(3, AS_REPLICA, loading=True), registry(AS_REPLICA),
     BootRule.RESUME_LOADING, "registry", 3, True, True, False),
    ("restarted synced replica", local(3, AS_REPLICA), registry(AS_REPLICA), BootRule.ADOPT,
     "registry", 3, True, False, False),
    ("loading, but re-added with a new replica_id",
     local(3, AS_REPLICA, loading=True), registry(view(4, primary=P, replicas=(ME,), rid=900)),
     BootRule.ADOPT, "registry", 3, True, False, False),
]


@pytest.mark.parametrize(
    "name,loc,reg,rule,source,floor,lease_allowed,loading,degraded", BOOT_TABLE,
    ids=[row[0] for row in BOOT_TABLE],
)
def test_boot_rules(name: str, loc: Any, reg: Any, rule: BootRule, source: str, floor: int,
                    lease_allowed: bool, loading: bool, degraded: bool) -> None:
    d = decide_boot(loc, reg)
    assert (d.rule, d.source, d.floor_epoch, d.lease_allowed, d.loading, d.degraded) == (
        rule, source, floor, lease_allowed, loading, degraded)
    assert d.sentence.startswith(f"rule {rule.number}:")
    assert bool(d.conflict) == (rule is BootRule.LOCAL_AHEAD)
    if source == "local":
        assert d.view == loc.view
    elif source == "registry":
        assert d.view == reg.view


def test_registry_from_values() -> None:
    topo = view(4)
    reg = registry_from_values(KEYS, values_of(topo), ME)
    assert (reg.epoch, reg.empty, reg.view) == (4, False, topo)
    assert reg.record is not None and reg.record.role is Role.PRIMARY
    assert registry_from_values(KEYS, values_of(topo), SPARE).record is None
    empty = registry_from_values(KEYS, {KEYS.status(ME): Status().to_json()}, ME)
    assert (empty.empty, empty.view, empty.epoch) == (True, None, 0)
    broken = values_of(topo)
    broken[KEYS.node(ME)] = b"{not json"
    bad = registry_from_values(KEYS, broken, ME)
    assert bad.view is None and bad.error and not bad.empty


# =========================================================================== plans


def kinds(steps: tuple[Any, ...]) -> list[str]:
    return [type(s).__name__ for s in steps]


def test_plan_fresh_primary_is_fenced_before_the_view_and_promotion() -> None:
    plan = plan_view(Applied(), view(1), ME)
    assert kinds(plan.steps) == ["Fence", "PushView", "Promote"]
    assert plan.applied.role is Role.PRIMARY and plan.applied.shard == S1
    assert plan.steps[2] == Promote(1, 11)
    assert slot_lease_wanted(plan.applied, True) == S1
    assert slot_lease_wanted(plan.applied, False) == ""


def test_plan_primary_stays_primary_without_fencing() -> None:
    first = plan_view(Applied(), view(1), ME).applied
    plan = plan_view(first, view(2, replicas=(P, R2)), ME)
    assert kinds(plan.steps) == ["PushView", "Promote"]
    assert "stays primary" in plan.sentence


def test_plan_demotion_fences_and_releases_before_following_the_new_primary() -> None:
    first = plan_view(Applied(), view(1), ME).applied
    plan = plan_view(first, view(2, primary=P, replicas=(ME,)), ME)
    assert kinds(plan.steps) == ["Fence", "ReleaseSlotLease", "PushView", "Replicate"]
    assert plan.steps[1] == ReleaseSlotLease(S1)
    rep = plan.steps[3]
    assert isinstance(rep, Replicate) and (rep.host, rep.port, rep.epoch) == ("127.0.0.1", 17000, 2)
    assert rep.new_member  # it had the primary's replica_id, now its own
    assert plan.applied.role is Role.REPLICA and plan.applied.primary == ("127.0.0.1", 17000)


def test_plan_replica_follows_a_new_primary_with_its_replica_id() -> None:
    a = plan_view(Applied(replica_id=21), view(1, primary=P, replicas=(ME,)), ME)
    rep = a.steps[-1]
    assert isinstance(rep, Replicate) and rep.replica_id == 21 and not rep.new_member
    b = plan_view(a.applied, view(2, primary=R2, replicas=(ME,)), ME)
    rep = b.steps[-1]
    assert isinstance(rep, Replicate) and rep.port == 17000 and rep.epoch == 2
    c = plan_view(b.applied, view(3, primary=R2, replicas=(ME,), rid=500), ME)
    rep = c.steps[-1]
    assert isinstance(rep, Replicate) and rep.new_member and rep.replica_id == 520


@pytest.mark.parametrize("applied_epoch,floor,epoch,skip", [
    (5, 0, 3, True), (5, 0, 5, True), (5, 0, 6, False), (-1, 9, 4, True), (-1, 9, 9, False),
])
def test_plan_never_applies_a_stale_view(applied_epoch: int, floor: int, epoch: int,
                                         skip: bool) -> None:
    applied = Applied() if applied_epoch < 0 else plan_view(Applied(), view(applied_epoch), ME).applied
    plan = plan_view(applied, view(epoch), ME, floor_epoch=floor)
    assert plan.skip is skip
    if skip:
        assert plan.steps == ()


def test_plan_refuses_another_view_at_the_same_epoch() -> None:
    applied = plan_view(Applied(), view(5), ME).applied
    plan = plan_view(applied, view(5, replicas=(P, R2)), ME)
    assert plan.skip and "bump the epoch" in plan.error


def test_plan_never_promotes_a_loading_replica() -> None:
    applied = plan_view(Applied(replica_id=21), view(1, primary=P, replicas=(ME,)), ME).applied
    plan = plan_view(applied, view(2, primary=ME, replicas=(P,)), ME, loading=True)
    assert kinds(plan.steps) == ["Fence", "PushView"]
    assert "still loading" in plan.error and plan.applied.role is Role.REPLICA
    assert plan.applied.epoch == 2  # the view is applied, the promotion is not
    ok = plan_view(applied, view(2, primary=ME, replicas=(P,)), ME, loading=False)
    assert kinds(ok.steps) == ["Fence", "PushView", "Promote"]


def test_plan_spare_and_removed_member() -> None:
    spare = plan_view(Applied(), view(1, primary=P, replicas=()), ME)
    assert kinds(spare.steps) == ["PushView"] and "not a member" in spare.sentence
    applied = plan_view(Applied(), view(1), ME).applied
    gone = plan_view(applied, view(2, primary=P, replicas=()), ME)
    assert kinds(gone.steps) == ["Fence", "ReleaseSlotLease", "PushView"]
    assert gone.applied.role is Role.NONE


def test_targets_apply_a_view_that_takes_slots_first() -> None:
    before = view(1, replicas=(), two_shards=True, split=8191)
    after = view(2, replicas=(), two_shards=True, split=8000)  # 8001..8191 move to S2
    assert targets_first(before, after, ME) == (R2,)
    assert targets_first(before, after, R2) == ()  # the receiver waits for nobody
    assert targets_first(None, after, ME) == ()
    plan = plan_view(plan_view(Applied(), before, ME).applied, after, ME)
    assert kinds(plan.steps) == ["WaitForTargets", "PushView", "Promote"]
    target = next(n for n in after.nodes if n.id == R2)
    assert plan.steps[0] == WaitForTargets((R2,), 2, ((target.addr, target.admin_port),))


# =========================================================================== permit


def writer(**kw: bool) -> permit.WriterFacts:
    base = dict(primary=True, slot_lease=True, conflict=False, shutting_down=False,
                datanode_up=True)
    base.update(kw)
    return permit.WriterFacts(**base)


@pytest.mark.parametrize("facts,expected", [
    (writer(), permit.Grant(100.0 + 1.6)),
    (writer(primary=False), None),
    (writer(slot_lease=False), None),
    (writer(conflict=True), None),
    (writer(shutting_down=True), None),
    (writer(datanode_up=False), None),
    (writer(handoff=True), None),
])
def test_permit_after_keepalive(facts: permit.WriterFacts, expected: Any) -> None:
    assert permit.after_keepalive(facts, send_time=100.0, ttl=2, now=100.3) == expected


def test_permit_is_send_time_plus_ttl_times_0_8() -> None:
    assert permit.deadline(10.0, 2) == pytest.approx(11.6)
    assert permit.Grant(11.6).until_ms == 11600
    # An acknowledgement that arrives after its permit would end grants nothing.
    assert permit.after_keepalive(writer(), send_time=10.0, ttl=2, now=11.7) is None


@pytest.mark.parametrize("facts,last_send,now,kind", [
    (writer(), 10.0, 10.5, permit.Grant),
    (writer(), None, 10.5, permit.Revoke),
    (writer(), 10.0, 11.7, permit.Revoke),
    (writer(slot_lease=False), 10.0, 10.5, permit.Revoke),
])
def test_permit_on_change(facts: permit.WriterFacts, last_send: float | None, now: float,
                          kind: type) -> None:
    assert isinstance(permit.on_change(facts, last_send, 2, now), kind)


@pytest.mark.parametrize("fate,granted_until,delay", [
    ("gone", 11.6, 0.0),  # the process is dead: nothing can write
    ("fenced", 11.6, 0.0),  # it acknowledged REVOKE
    ("unknown", 11.6, 1.1),  # hung: wait until its last permit ran out
    ("unknown", 9.0, 0.0),  # its permit already ran out
])
def test_lease_release_waits_for_a_hung_primarys_permit(fate: str, granted_until: float,
                                                        delay: float) -> None:
    assert permit.release_delay(fate, granted_until, now=10.5) == pytest.approx(delay)


# =========================================================================== facts, status


def facts(**kw: Any) -> Facts:
    base: dict[str, Any] = dict(node_id=ME, addr="127.0.0.1", port=7000, admin_port=17000,
                                http_port=8008, datanode_up=True, etcd_up=True, lease_id=5,
                                epoch_applied=3, role_applied=Role.REPLICA, now=50.0)
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize("f,health,loading_after", [
    (facts(role_applied=Role.PRIMARY), Health.ONLINE, False),
    (facts(role_applied=Role.NONE), Health.ONLINE, False),
    (facts(datanode_up=False), Health.FAIL, False),
    (facts(repl=Replication(role="replica", syncing=True, load_progress=0.4)), Health.LOADING, True),
    (facts(repl=Replication(role="replica", link_up=True)), Health.ONLINE, False),
    (facts(repl=Replication(role="replica", link_up=True), loading=True), Health.ONLINE, False),
    (facts(repl=Replication(role="replica"), loading=True), Health.LOADING, True),
    (facts(repl=Replication(role="replica"), loading=False), Health.ONLINE, False),
])
def test_observed_health_and_loading(f: Facts, health: Health, loading_after: bool) -> None:
    assert observed_health(f) is health
    assert still_loading(f) is loading_after


RID, OLD = 4242, 17  # the replica_id of a new membership, and the one before it


def seen(replica_id: int = RID, *, role: str = "replica", link_up: bool = False,
         syncing: bool = False, loaded: int = 0) -> Replication:
    return Replication(role=role, replica_id=replica_id, link_up=link_up, syncing=syncing,
                       full_syncs_loaded=loaded)


@pytest.mark.parametrize("name,prev,repl,latched,expected", [
    ("streaming", seen(), seen(link_up=True), None, RID),
    ("still connecting", seen(), seen(), None, None),
    ("a full sync loading", seen(), seen(syncing=True), None, None),
    ("a resync clears it", seen(link_up=True), seen(syncing=True, loaded=1), RID, None),
    # the primary died right after the sync: no observation saw the link up
    ("a sync loaded between two observations, link down", seen(), seen(loaded=1), None, RID),
    ("a resync loaded, link down again", seen(syncing=True, loaded=1), seen(loaded=2), None,
     RID),
    ("link down after streaming: kept", seen(link_up=True, loaded=1), seen(loaded=1), RID, RID),
    # the previous observation predates REPLICATE: its count may be an old membership's sync
    ("count from before the instruction", seen(OLD), seen(loaded=1), None, None),
    ("count from before the instruction, latched old", seen(OLD, link_up=True),
     seen(loaded=1), OLD, OLD),
    ("a fresh data node process (count restarted)", seen(loaded=3), seen(loaded=0), None, None),
    ("a primary: unchanged", seen(), seen(role="primary", loaded=5), None, None),
    ("a primary: unchanged, latched", seen(), seen(role="primary"), RID, RID),
])
def test_synced_replica_id(name: str, prev: Replication, repl: Replication,
                           latched: int | None, expected: int | None) -> None:
    assert synced_replica_id(prev, repl, latched) == expected


@pytest.mark.parametrize("name,f,loading_after", [
    ("synced for this membership, link down (primary died)",
     facts(replica_id=RID, repl=seen(), synced_replica_id=RID, loading=True), False),
    ("synced under another replica_id only",
     facts(replica_id=RID, repl=seen(), synced_replica_id=OLD, loading=True), True),
    ("restarted mid-join (rule 6), nothing seen yet",
     facts(replica_id=RID, repl=seen(), loading=True), True),
    ("synced once, now resyncing",
     facts(replica_id=RID, repl=seen(syncing=True), synced_replica_id=None), True),
    ("a stale observation streaming under the previous replica_id",
     facts(replica_id=RID, repl=seen(OLD, link_up=True), loading=True), True),
    ("streaming under this replica_id",
     facts(replica_id=RID, repl=seen(link_up=True), loading=True), False),
])
def test_still_loading_follows_the_synced_membership(name: str, f: Facts,
                                                     loading_after: bool) -> None:
    assert still_loading(f) is loading_after


def test_status_record() -> None:
    st = status_record(facts(repl=Replication(role="replica", syncing=True, load_progress=0.25,
                                              offset=77, replid="r" * 40)))
    assert (st.health, st.role_applied, st.epoch_applied, st.repl_offset, st.load_progress) == (
        "loading", "replica", 3, 77, 0.25)
    assert not st.writable
    primary = facts(role_applied=Role.PRIMARY, slot_lease=True, permit_until=51.0)
    assert status_record(primary).writable
    assert not status_record(replace(primary, permit_until=49.0)).writable
    waiting = status_record(facts(loading=True))
    assert waiting.health == "loading" and waiting.load_progress == 0.0
    assert status_record(facts(conflict="x", last_error="boom")).last_error == "boom"
    a, b = status_record(facts()), status_record(facts(repl=Replication(offset=9)))
    assert a != b and same_but_offset(a, b)
    assert not same_but_offset(a, status_record(facts(epoch_applied=4)))


async def test_the_served_zone_reaches_the_consul_registration(tmp_path: Path) -> None:
    """``--zone`` until the node has a record; then the record's zone, live (a zone
    changed by the coordinator re-registers the service with the new tag and meta)."""
    from sidecar.registrar import registration

    applier = replica_applier(tmp_path)
    state = applier.state
    state.update(zone="flag-zone", node_id=ME, addr="127.0.0.1", port=7001)
    assert consul_facts(state.peek()).zone == "flag-zone"
    records = [replace(n, zone="zone-a") if n.id == ME else n for n in AS_NEW_REPLICA.nodes]
    await apply(applier, Topology.build(1, AS_NEW_REPLICA.shards, records))
    assert consul_facts(state.peek()).zone == "zone-a"
    records = [replace(n, zone="zone-y") if n.id == ME else n for n in records]
    await apply(applier, Topology.build(2, AS_NEW_REPLICA.shards, records))
    reg = registration(ME, "127.0.0.1", 7001, consul_facts(state.peek()), None)
    assert "zone:zone-y" in reg.tags and reg.meta["zone"] == "zone-y"
    assert status_record(state.peek()).zone == "flag-zone"  # status/ reports the flag
    records = [replace(n, zone="") if n.id == ME else n for n in records]
    await apply(applier, Topology.build(3, AS_NEW_REPLICA.shards, records))
    reg = registration(ME, "127.0.0.1", 7001, consul_facts(state.peek()), None)
    assert not any(t.startswith("zone:") for t in reg.tags) and reg.meta["zone"] == ""


# =========================================================================== probes


@pytest.mark.parametrize("f,code", [
    (facts(), 200),
    (facts(datanode_up=False), 503),
    (facts(etcd_up=False), 503),
    (facts(degraded=True, etcd_up=False), 503),
    (facts(conflict="local ahead"), 503),
    (facts(shutting_down=True), 503),
    (facts(loading=True), 200),  # a loading replica is healthy, just not readable
])
def test_health_probe(f: Facts, code: int) -> None:
    answer = probes.health(f)
    assert answer.code == code
    if code == 503:
        assert answer.body["reason"]
    if f.degraded:
        assert answer.body["reason"].startswith("degraded")


PRIMARY_OK = facts(role_applied=Role.PRIMARY, slot_lease=True, permit_until=51.0)


@pytest.mark.parametrize("f,code", [
    (PRIMARY_OK, 200),
    (replace(PRIMARY_OK, permit_until=49.0), 503),
    (replace(PRIMARY_OK, slot_lease=False), 503),
    (replace(PRIMARY_OK, conflict="c"), 503),
])
def test_primary_probe(f: Facts, code: int) -> None:
    assert probes.primary(f).code == code
    assert probes.readiness(f).code == code
    assert probes.primary(facts()).code == 503  # a replica


SYNCED = facts(repl=Replication(role="replica", link_up=True, offset=1000), primary_offset=1500)


@pytest.mark.parametrize("f,lag,code", [
    (SYNCED, None, 200),
    (SYNCED, 500, 200),
    (SYNCED, 499, 503),
    (replace(SYNCED, primary_offset=None), 100, 503),
    (replace(SYNCED, primary_offset=None), None, 200),
    (replace(SYNCED, hidden=True), None, 503),
    (replace(SYNCED, repl=Replication(role="replica", syncing=True)), None, 503),
    (PRIMARY_OK, None, 503),
    (replace(SYNCED, datanode_up=False), None, 503),
])
def test_replica_probe(f: Facts, lag: int | None, code: int) -> None:
    assert probes.replica(f, lag).code == code


def test_probe_odds_and_ends() -> None:
    assert probes.parse_lag("1k") == 1024 and probes.parse_lag("2mb") == 2 * 1024**2
    assert probes.parse_lag(None) is None and probes.parse_lag("") is None
    with pytest.raises(ValueError):
        probes.parse_lag("lots")
    assert probes.liveness(facts(), 0.1).code == 200
    assert probes.liveness(facts(), 9.0).code == 503
    assert probes.readiness(facts(role_applied=Role.NONE)).code == 503
    assert probes.readiness(SYNCED).code == 200


# =========================================================================== slot lease


@pytest.mark.parametrize("wanted,record,claim", [
    (True, None, slotlease.Claim.ACQUIRE),
    (False, None, slotlease.Claim.NONE),
    (True, SlotLease(ME, 5, 10), slotlease.Claim.HOLD),
    (True, SlotLease(ME, 4, 10), slotlease.Claim.REPLACE),
    (True, SlotLease(P, 9, 10), slotlease.Claim.WAIT),
    (False, SlotLease(ME, 5, 10), slotlease.Claim.RELEASE),
    (False, SlotLease(P, 9, 10), slotlease.Claim.NONE),
])
def test_slot_lease_decision(wanted: bool, record: SlotLease | None,
                             claim: slotlease.Claim) -> None:
    assert slotlease.decide(wanted, record, ME, 5) is claim


def test_lease_holder_value_forms() -> None:
    assert lease_holder(ME.encode()) == ME
    assert lease_holder(orjson.dumps(ME)) == ME


# =========================================================================== migrations


def test_migrations_to_run() -> None:
    m_in = MigrationRecord("m1", ((8000, 8191),), S2, S1, MigrationState.RUNNING)
    m_out = MigrationRecord("m2", ((9000, 9001),), S1, S2, MigrationState.RUNNING)
    m_pending = MigrationRecord("m3", ((9500, 9501),), S2, S1, MigrationState.PENDING)
    topo = view(4, replicas=(P,), two_shards=True, migrations=(m_in, m_out, m_pending))
    jobs = migrations_to_run(topo, ME, holds_slot_lease=True)
    assert [j.id for j in jobs] == ["m1"] and jobs[0].source.id == R2
    assert migrations_to_run(topo, ME, holds_slot_lease=False) == []
    assert migrations_to_run(topo, P, holds_slot_lease=True) == []  # a replica of the target
    assert migrations_to_run(topo, R2, holds_slot_lease=True)[0].id == "m2"


def test_progress_document_keeps_the_coordinators_fields() -> None:
    current = {"id": "m1", "slots": [[1, 2]], "state": "RUNNING", "planned_by": "x"}
    doc = progress_document(current, {"state": "running", "keys": 10, "bytes": 99}, ME, 123)
    assert doc["state"] == "RUNNING" and doc["planned_by"] == "x"
    assert (doc["keys_moved"], doc["bytes_moved"], doc["copy_state"], doc["copied_by"]) == (
        10, 99, "running", ME)
    assert progress_document(current, {"state": "done"}, ME, 1)["copy_state"] == "done"
    failed = progress_document(current, {"state": "failed", "error": "boom"}, ME, 1)
    assert (failed["copy_state"], failed["error"]) == ("failed", "boom")
    assert progress_document(current, {"state": "cancelled"}, ME, 1)["error"] == "cancelled"


# =========================================================================== local snapshot


def test_local_snapshot_round_trip_and_atomic_write(tmp_path: Path) -> None:
    topo = view(7, primary=P, replicas=(ME,))
    snap = local_snapshot.from_applied(ME, topo, loading=True)
    assert (snap.epoch, snap.role, snap.shard, snap.loading) == (7, Role.REPLICA, S1, True)
    path = local_snapshot.path_in(tmp_path)
    local_snapshot.write(path, snap)
    assert local_snapshot.read(path, ME) == snap
    assert not list(tmp_path.glob("*.tmp"))
    doc = orjson.loads(path.read_bytes())
    assert {"node_id", "epoch", "node", "replica_id", "shard", "loading", "view"} <= set(doc)
    assert local_snapshot.read(path, P) is None  # another node's data dir
    path.write_bytes(b"{garbage")
    assert local_snapshot.read(path, ME) is None
    assert local_snapshot.read(tmp_path / "missing.json", ME) is None
    spare = local_snapshot.from_applied(ME, view(2, primary=P, replicas=()), loading=True)
    assert spare.node is None and not spare.loading and spare.epoch == 2


# =========================================================================== records


def kv(key: str, value: bytes, rev: int, lease: int = 0) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1, lease)


def test_records_builder_builds_views_at_revision_boundaries() -> None:
    topo = view(3)
    b = RecordsBuilder(KEYS)
    snap = Snapshot.of(KEYS.root, 10, [kv(k, v, 10) for k, v in values_of(topo).items()] + [
        kv(KEYS.lease(S1), ME.encode(), 9, lease=77),
        kv(KEYS.status(P), Status(repl_offset=500, epoch_applied=3).to_json(), 8),
        kv(KEYS.settings, Settings(min_replicas_to_ack=1).to_json(), 5),
        kv(KEYS.history(3), b"{}", 4),
    ])
    rec, changed = b.load(snap)
    assert rec.view == topo and rec.revision == 10 and rec.epoch_revision == 10
    assert rec.leases[S1] == SlotLease(ME, 77, 9)
    assert rec.statuses[P].repl_offset == 500 and rec.settings.min_replicas_to_ack == 1
    assert KEYS.history(3) not in rec.values
    assert KeyKind.EPOCH in changed

    topo2 = view(4, replicas=(P, R2))
    events = tuple(WatchEvent(k, v, 11, 11) for k, v in values_of(topo2).items())
    rec2, changed2 = b.apply(WatchBatch(11, tuple(reversed(events))))
    assert rec2.view == topo2 and changed2 >= {KeyKind.EPOCH, KeyKind.NODE}
    # Whatever order the events came in, the view equals the one a fresh load builds.
    fresh, _ = RecordsBuilder(KEYS).load(Snapshot.of(KEYS.root, 11, [
        kv(k, v, 11) for k, v in values_of(topo2).items()]))
    assert fresh.view == rec2.view and fresh.view is not None
    assert fresh.view.to_json() == rec2.view.to_json()
    rec3, changed3 = b.apply(WatchBatch(12, (WatchEvent(KEYS.lease(S1), None, 12),)))
    assert changed3 == {KeyKind.LEASE} and S1 not in rec3.leases and rec3.view is rec2.view
    # records that change without an epoch bump (a migration's progress) cannot
    # change the served view: it is not rebuilt
    rec3b, _ = b.apply(WatchBatch(12, (WatchEvent(KEYS.node(ME), b"{bad", 12),)))
    assert rec3b.view is rec2.view and not rec3b.view_error
    rec4, _ = b.apply(WatchBatch(13, (WatchEvent(KEYS.node(ME), b"{bad", 13),
                                      WatchEvent(KEYS.epoch, b"5", 13))))
    assert rec4.view == topo2 and rec4.view_error  # the last good view stays
    rec5, changed5 = b.apply(WatchBatch(14, (WatchEvent(KEYS.history(5), b"{}", 14),)))
    assert not changed5 and rec5.revision == 14
    # The coordinator's leadership transfer rides on the shard record.
    shard_doc = orjson.loads(values_of(topo2)[KEYS.shard(S1)])
    shard_doc["handoff"] = {"target": P, "intent": "i1"}
    rec6, _ = b.apply(WatchBatch(15, (WatchEvent(KEYS.shard(S1), orjson.dumps(shard_doc), 15),)))
    assert rec6.handoffs == {S1: P} and rec6.view == topo2
    # a status write parses that status again and keeps the others; a delete drops it
    rec7, _ = b.apply(WatchBatch(16, (WatchEvent(KEYS.status(R2), Status(repl_offset=7).to_json(),
                                                 16),)))
    assert rec7.statuses[R2].repl_offset == 7 and rec7.statuses[P].repl_offset == 500
    rec8, _ = b.apply(WatchBatch(17, (WatchEvent(KEYS.status(P), None, 17),)))
    assert P not in rec8.statuses and rec8.statuses[R2].repl_offset == 7


# =========================================================================== config


def test_config_precedence_and_validation(tmp_path: Path) -> None:
    toml = tmp_path / "sidecar.toml"
    toml.write_text('[sidecar]\ncluster = "from-file"\netcd = ["h1:1", "h2:2"]\nzone = "z1"\n'
                    'http-port = 9001\n')
    env = {"SLOTKEEPER_SIDECAR_ZONE": "z2", "SLOTKEEPER_SIDECAR_CONSUL_TOKEN": "secret"}
    cfg = load_config(parse_args(["--config", str(toml), "--http-port", "9002",
                                  "--datanode", "10.0.0.5:17000"]), environ=env)
    assert (cfg.cluster, cfg.etcd, cfg.zone, cfg.http_port) == (
        "from-file", ("h1:1", "h2:2"), "z2", 9002)
    assert cfg.consul_token == "secret" and cfg.advertise_addr == "10.0.0.5"
    assert cfg.keys.root == "/slotkeeper/from-file/"
    flags = parse_args(["--cluster", "c", "--etcd", "a:1,b:2", "--etcd", "c:3",
                        "--supervise", "slotkeeper datanode --port 7000"])
    cfg = load_config(flags, environ={})
    assert cfg.etcd == ("a:1", "b:2", "c:3")
    assert cfg.supervise == ("slotkeeper", "datanode", "--port", "7000")
    for argv, match in [
        (["--etcd", "a:1"], "--cluster is required"),
        (["--cluster", "c"], "at least one endpoint"),
        (["--cluster", "c", "--etcd", "a:1", "--etcd-cacert", str(tmp_path / "no.pem")],
         "etcd-cacert"),
        (["--cluster", "c", "--etcd", "a:1", "--etcd-cert", "c.pem"], "both"),
        (["--cluster", "bad/name", "--etcd", "a:1"], "cluster name"),
        (["--cluster", "c", "--etcd", "a:1", "--datanode", "0.0.0.0:1"], "advertise"),
        (["--cluster", "c", "--etcd", "a:1", "--etcd-user", "u"], "both"),
        (["--cluster", "c", "--etcd", "a:1", "--consul-deregister-after", "5"], "60"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(parse_args(argv), environ={})


def test_supervision_backoff() -> None:
    assert next_delay(0.25, 1.0) == 0.5
    assert next_delay(4.0, 1.0) == 8.0 and next_delay(8.0, 1.0) == 10.0
    assert next_delay(10.0, 120.0) == 0.5


def test_lease_timing_rule_checked() -> None:
    LeaseTiming(2.0, 2 / 3, 0.5)
    with pytest.raises(ValueError, match="exceeds"):
        LeaseTiming(2.0, 1.0, 0.6)
    assert LeaseTiming.of(Settings()).grant_ttl == 2


# =========================================================================== fakes: state, lease keeper


async def test_state_wakes_waiters_only_on_change() -> None:
    state = State(lambda: 1.0)
    v = state.version
    assert not state.update(node_id="")
    assert not await state.changed(v, timeout=0.01)
    waiter = asyncio.create_task(state.changed(v, timeout=5))
    await asyncio.sleep(0)
    assert state.update(node_id=ME)
    assert await waiter and state.facts().node_id == ME and state.facts().now == 1.0


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)


class FakeLeaseStore:
    """grant / keepalive_once / revoke with scripted outcomes; each call costs 0.05 s."""

    def __init__(self, clock: FakeClock, script: list[str]) -> None:
        self.clock, self.script = clock, script
        self.next_id = 1
        self.calls: list[tuple[str, float]] = []

    async def grant(self, ttl: int) -> Lease:
        self.calls.append(("grant", self.clock.t))
        self.clock.t += 0.05
        lease = Lease(self.next_id, ttl)
        self.next_id += 1
        return lease

    async def keepalive_once(self, lease: Any) -> int:
        self.calls.append(("keepalive", self.clock.t))
        self.clock.t += 0.05
        what = self.script.pop(0) if self.script else "stop"
        if what == "ok":
            return 2
        if what == "down":
            raise StoreUnavailable("etcd paused")
        if what == "lost":
            raise LeaseLost(1)
        raise asyncio.CancelledError()

    async def revoke(self, lease: Any) -> bool:
        return True


async def test_lease_keeper_permits_from_send_times_and_regrants_a_lost_lease() -> None:
    clock = FakeClock()
    store = FakeLeaseStore(clock, ["ok", "down", "down", "ok", *["down"] * 5, "ok", "lost", "ok"])
    acks: list[tuple[float, int]] = []
    events: list[str] = []

    async def new_lease(lease: Lease) -> None:
        events.append(f"lease {lease.id}")

    keeper = LeaseKeeper(
        store, LeaseTiming(2.0, 2 / 3, 0.5),  # type: ignore[arg-type]
        on_ack=lambda sent, ttl: acks.append((sent, ttl)),
        on_lost=lambda: events.append("lost"), on_new_lease=new_lease,
        on_trouble=lambda why: events.append("trouble"), on_ok=lambda: None,
        clock=clock, sleep=clock.sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        await keeper.run()
    keepalives = [t for what, t in store.calls if what == "keepalive"]
    # Every acknowledgement carries the send time of the attempt that was acknowledged.
    # Two failures are retried within the retry timeout; five are reported as trouble.
    assert [s for s, _ in acks] == [keepalives[i] for i in (0, 3, 9, 11)]
    assert events == ["lease 1", "trouble", "lost", "lease 2"]
    # Keepalives are paced by the interval, not by how long they took.
    assert keepalives[1] - keepalives[0] == pytest.approx(2 / 3)


# =========================================================================== fakes: the applier


class FakeDatanode:
    """Records the admin commands the applier sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def _done(self) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result("OK")
        return fut

    def grant(self, until_ms: int) -> asyncio.Future[Any]:
        self.sent.append("grant")
        return self._done()

    def revoke(self) -> asyncio.Future[Any]:
        self.sent.append("revoke")
        return self._done()

    async def push_view(self, v: Topology) -> bool:
        self.sent.append(f"view {v.epoch}")
        return True

    async def promote(self, epoch: int, replica_id: int) -> bool:
        self.sent.append(f"promote {epoch}")
        return True

    async def replicate(self, host: str, port: int, epoch: int, replica_id: int) -> bool:
        self.sent.append(f"replicate {epoch}")
        return True

    async def replicate_and_observe(self, host: str, port: int, epoch: int,
                                    replica_id: int) -> tuple[bool, Replication | None]:
        self.sent.append(f"replicate {epoch}")
        self.sent.append("replication")
        return True, self.observed(replica_id)

    def observed(self, replica_id: int) -> Replication | None:
        """What ``SLOTKEEPER REPLICATION`` says right after a ``REPLICATE``."""
        return Replication(role="replica", replica_id=replica_id)

    async def min_replicas_to_ack(self, n: int, ms: int) -> None:
        self.sent.append(f"min-acks {n}")


class FakeCasStore:
    def __init__(self, on_cas: Callable[[], None] = lambda: None) -> None:
        self.ops: list[str] = []
        self.on_cas = on_cas

    async def cas(self, compares: Any, ops: Any) -> bool:
        self.ops.append(type(ops[0]).__name__)
        self.on_cas()
        return True

    async def get(self, key: str) -> KeyValue:
        return kv(key, ME.encode(), 99, lease=5)


async def test_applier_fences_before_giving_up_the_slot_lease_and_never_regrants(
    tmp_path: Path,
) -> None:
    from sidecar.applier import Applier
    from sidecar.watcher import Records

    clock = FakeClock()
    dn = FakeDatanode()
    state = State(clock, Facts(node_id=ME, datanode_up=True))
    applier = Applier(node_id=ME, keys=KEYS, datanode=dn, state=state,  # type: ignore[arg-type]
                      snapshot_path=tmp_path / "node.json", target_first_timeout=0.1,
                      seed_replica_id=0, clock=clock)
    # A keepalive acknowledged in the middle of a transaction must not re-grant.
    store = FakeCasStore(on_cas=lambda: applier.on_keepalive(clock(), 2))
    applier.store = store  # type: ignore[assignment]
    applier.lease_allowed = True
    await applier.on_new_lease(Lease(5, 2))
    applier.last_send, applier.last_ttl = clock(), 2
    v1 = view(1)
    applier.records = Records(revision=5, view=v1, epoch_revision=5)
    applier.pending = v1
    await applier.reconcile()
    # The keepalive acknowledged during the create grants nothing (not holding it yet).
    # min_replicas_to_ack is set before the first permit (DESIGN §3: no unacknowledged write)
    assert dn.sent == ["revoke", "view 1", "promote 1", "min-acks 0", "grant"]
    assert store.ops == ["Put"] and state.peek().slot_lease
    await applier.flush_snapshot()
    assert (tmp_path / "node.json").exists()

    dn.sent.clear()
    v2 = view(2, primary=P, replicas=(ME,))
    applier.on_records(Records(revision=6, view=v2, epoch_revision=6), {KeyKind.EPOCH})
    assert dn.sent == ["revoke"]  # writes stop when the demoting view is seen
    applier.on_keepalive(clock(), 2)  # ... and no keepalive grants again meanwhile
    await applier.reconcile()
    assert dn.sent == ["revoke", "revoke", "view 2", "replicate 2", "replication"]
    assert store.ops == ["Put", "Delete"]
    assert not state.peek().slot_lease and state.peek().role_applied is Role.REPLICA
    assert state.peek().loading  # a new replica_id: full resync
    applier.on_keepalive(clock(), 2)
    assert dn.sent[-1] == "replication"


def replica_applier(tmp_path: Path, *, seed_replica_id: int = 0, loading: bool = False) -> Any:
    from sidecar.applier import Applier

    clock = FakeClock()
    state = State(clock, Facts(node_id=ME, datanode_up=True, loading=loading))
    return Applier(node_id=ME, keys=KEYS, datanode=FakeDatanode(), state=state,  # type: ignore[arg-type]
                   snapshot_path=tmp_path / "node.json", target_first_timeout=0.1,
                   seed_replica_id=seed_replica_id, clock=clock)


async def apply(applier: Any, topo: Topology) -> None:
    from sidecar.watcher import Records

    applier.on_records(Records(revision=topo.epoch, view=topo, epoch_revision=topo.epoch),
                       {KeyKind.EPOCH})
    await applier.reconcile()


AS_NEW_REPLICA = view(1, primary=P, replicas=(ME,))  # this node's replica_id: 21
PROMOTED = view(2, primary=ME, replicas=(P,))


async def test_a_replica_whose_primary_died_right_after_its_first_sync_is_promoted(
    tmp_path: Path,
) -> None:
    """The race of the promotion-after-kill cluster test: the full sync completes and the
    primary dies between two monitor polls, so the link is never seen up. The sync loaded
    meanwhile (counted against the observation read right behind REPLICATE) makes the
    replica promotable; the deferred promotion is carried out."""
    applier = replica_applier(tmp_path)
    dn, state = applier.datanode, applier.state
    await apply(applier, AS_NEW_REPLICA)
    assert dn.sent == ["view 1", "replicate 1", "replication"]
    assert state.peek().loading and state.peek().health is Health.LOADING
    applier.on_replication(seen(21, syncing=True))
    assert state.peek().loading
    await apply(applier, PROMOTED)  # the coordinator promotes it at once
    assert "promote 2" not in dn.sent and "still loading" in state.peek().last_error
    applier.on_replication(seen(21, loaded=1))  # loaded, then the link died
    f = state.peek()
    assert not f.loading and f.synced_replica_id == 21 and f.health is Health.ONLINE
    await applier.reconcile()
    assert "promote 2" in dn.sent and state.peek().role_applied is Role.PRIMARY


async def test_a_sync_seen_while_replicate_was_awaited_is_not_forgotten(tmp_path: Path) -> None:
    """The monitor saw the link up (and the status said online) before the applier had
    carried out REPLICATE; the link died right after: not loading."""
    applier = replica_applier(tmp_path)
    dn, state = applier.datanode, applier.state

    def observed(replica_id: int) -> Replication:
        applier.on_replication(seen(replica_id, link_up=True, loaded=1))  # the monitor
        return seen(replica_id, loaded=1)  # read right behind REPLICATE: link down

    dn.observed = observed
    await apply(applier, AS_NEW_REPLICA)
    assert not state.peek().loading and state.peek().synced_replica_id == 21
    await apply(applier, PROMOTED)
    assert "promote 2" in dn.sent and state.peek().role_applied is Role.PRIMARY


async def test_a_replica_restarted_mid_join_is_promotable_only_after_a_sync(
    tmp_path: Path,
) -> None:
    """Boot rule 6: loading from the local snapshot, same replica_id (no REPLICATE new
    member); a dead link and no sync loaded keep it loading, whatever it held before."""
    applier = replica_applier(tmp_path, seed_replica_id=21, loading=True)
    dn, state = applier.datanode, applier.state
    state.update(repl=seen(21))  # the session's first observation
    await apply(applier, AS_NEW_REPLICA)
    assert dn.sent == ["view 1", "replicate 1"] and state.peek().loading
    for _ in range(3):
        applier.on_replication(seen(21))
    await apply(applier, PROMOTED)
    assert "promote 2" not in dn.sent and state.peek().loading
    applier.on_replication(seen(21, syncing=True))
    applier.on_replication(seen(21, loaded=1))
    assert not state.peek().loading
    await applier.reconcile()
    assert "promote 2" in dn.sent and state.peek().role_applied is Role.PRIMARY


# =========================================================================== import direction


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_imports_flow_one_way() -> None:
    """STYLE §1: sidecar → dcs → clusterstate; nothing imports the sidecar."""
    root = Path(__file__).resolve().parent.parent
    for path in (root / "sidecar").glob("*.py"):
        assert not _imports(path) & {"datanode", "coordinator"}, path.name
    for package in ("datanode", "dcs", "clusterstate", "coordinator"):
        for path in (root / package).rglob("*.py"):
            assert "sidecar" not in _imports(path), path


async def test_applier_stops_writes_for_a_leadership_transfer_and_resumes_on_abort(
    tmp_path: Path,
) -> None:
    from types import MappingProxyType

    from sidecar.applier import Applier
    from sidecar.watcher import Records

    clock = FakeClock()
    dn = FakeDatanode()
    state = State(clock, Facts(node_id=ME, datanode_up=True))
    applier = Applier(node_id=ME, keys=KEYS, datanode=dn, state=state,  # type: ignore[arg-type]
                      snapshot_path=tmp_path / "node.json", target_first_timeout=0.1,
                      seed_replica_id=0, clock=clock)
    applier.store = FakeCasStore()  # type: ignore[assignment]
    applier.lease_allowed = True
    await applier.on_new_lease(Lease(5, 2))
    applier.last_send, applier.last_ttl = clock(), 2
    v1 = view(1)
    applier.on_records(Records(revision=5, view=v1, epoch_revision=5), {KeyKind.EPOCH})
    await applier.reconcile()
    assert state.facts().writable
    dn.sent.clear()
    v2 = view(2)  # the handoff write bumps the epoch
    handing = Records(revision=6, view=v2, epoch_revision=6,
                      handoffs=MappingProxyType({S1: P}))
    applier.on_records(handing, {KeyKind.EPOCH, KeyKind.SHARD})
    assert dn.sent == ["revoke"]  # at once, before the view of that epoch is applied
    await applier.reconcile()
    applier.on_keepalive(clock(), 2)
    f = state.facts()
    assert not f.writable and f.slot_lease and f.epoch_applied == 2 and f.handoff == P
    assert "grant" not in dn.sent and not status_record(f).writable
    # Aborted: the shard record loses its handoff at the next epoch; writes resume.
    applier.on_records(Records(revision=7, view=view(3), epoch_revision=7),
                       {KeyKind.EPOCH, KeyKind.SHARD})
    await applier.reconcile()
    assert dn.sent == ["revoke", "view 2", "promote 2", "view 3", "promote 3", "grant"]
    assert state.facts().writable and not state.facts().handoff


def test_consul_updates_that_change_only_the_epoch_are_throttled() -> None:
    from dcs.consul import datanode_registration
    from sidecar.registrar import _epoch_only

    def reg(epoch: int, state: str = "ACTIVE") -> Any:
        return datanode_registration("a" * 40, "127.0.0.1", 7000, role="primary", shard="s",
                                     state=state, epoch=epoch, replica_id=1, check=None)

    assert _epoch_only(reg(1), reg(2))
    assert not _epoch_only(reg(1), reg(2, state="MIGRATING"))  # a tag changed: at once
    assert not _epoch_only(None, reg(2))


async def test_local_snapshot_writes_epoch_only_changes_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new role is written at once; a view that only moves the epoch on waits for
    SNAPSHOT_COALESCE after the previous write (then the newest one is written)."""
    import asyncio

    import sidecar.applier as applier_mod
    from sidecar import snapshot as local_snapshot

    monkeypatch.setattr(applier_mod, "SNAPSHOT_COALESCE", 0.4)
    applier = replica_applier(tmp_path)
    path = tmp_path / "node.json"
    applier.snapshot_path = path
    writer = asyncio.create_task(applier._snapshot_writer())

    def save(snap: local_snapshot.LocalSnapshot) -> None:
        applier._to_save = snap
        applier._save_wanted.set()

    def epoch_on_disk() -> int:
        snap = local_snapshot.read(path, ME)
        return snap.epoch if snap is not None else -1

    async def until(epoch: int, within: float) -> float:
        t0 = asyncio.get_running_loop().time()
        while epoch_on_disk() != epoch:
            assert asyncio.get_running_loop().time() - t0 < within, epoch_on_disk()
            await asyncio.sleep(0.01)
        return asyncio.get_running_loop().time() - t0

    try:
        save(local_snapshot.from_applied(ME, view(1), False))
        await until(1, 0.3)
        t0 = asyncio.get_running_loop().time()
        save(local_snapshot.from_applied(ME, view(2), False))
        save(local_snapshot.from_applied(ME, view(3), False))
        await asyncio.sleep(0.1)
        assert epoch_on_disk() == 1  # epoch only: not yet
        await until(3, 1.0)  # the newest, once the interval passed
        assert asyncio.get_running_loop().time() - t0 >= 0.25
        demoted = view(4, primary=P, replicas=(ME,))
        assert not applier_mod._same_record(local_snapshot.from_applied(ME, demoted, False),
                                            local_snapshot.from_applied(ME, view(3), False))
        save(local_snapshot.from_applied(ME, demoted, False))
        assert await until(4, 0.3) < 0.3  # a new role: at once
    finally:
        writer.cancel()
