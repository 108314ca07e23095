"""The pure execution helpers and the planner part of coordinator/migrations.py."""

from __future__ import annotations

import pytest

from clusterstate.topology import MigrationRecord, MigrationState, ShardRecord
from coordinator.migrations import commit, copied, migration_records, progress, to_start
from coordinator.rebalance import NewShard, plan_scale_out
from tests.test_rebalance_planner import balanced

PENDING, RUNNING, DONE = MigrationState.PENDING, MigrationState.RUNNING, MigrationState.DONE


def test_records_batch_one_source_and_target_each_and_cover_the_plan():
    plan = plan_scale_out(balanced(3), [NewShard("n", "p")])
    recs = migration_records(plan.moves, epoch=7, batch=1000)
    assert all(r.state is PENDING and r.to_shard == "n" for r in recs)
    slots = [s for r in recs for lo, hi in r.slots for s in range(lo, hi + 1)]
    assert sorted(slots) == sorted(m.slot for m in plan.moves)
    assert all(sum(hi - lo + 1 for lo, hi in r.slots) <= 1000 for r in recs)
    assert len(recs) == 6  # 3 sources × ceil(1365.33 / 1000)
    assert len({r.id for r in recs}) == len(recs)
    assert migration_records(plan.moves, epoch=7, batch=1000) == recs  # deterministic
    with pytest.raises(ValueError):
        migration_records(plan.moves, epoch=7, batch=0)


def _m(mid, src, dst, state, slots=((0, 0),)):
    return MigrationRecord(mid, slots, src, dst, state)


def test_to_start_one_per_target_bounded_and_paused_on_failover():
    ms = [_m("1", "a", "x", PENDING), _m("2", "b", "x", PENDING), _m("3", "a", "y", PENDING),
          _m("4", "a", "z", PENDING)]
    assert [m.id for m in to_start(ms, 2)] == ["1", "3"]
    assert [m.id for m in to_start(ms, 5)] == ["1", "3", "4"]
    assert [m.id for m in to_start(ms, 5, paused_shards={"a"})] == ["2"]
    running = [_m("0", "a", "x", RUNNING), *ms]
    assert [m.id for m in to_start(running, 2)] == ["3"]


def test_commit_moves_the_slots_and_refuses_lost_ones():
    shards = {"a": ShardRecord("a", ((0, 99),), "pa"), "b": ShardRecord("b", ((100, 199),), "pb")}
    m = _m("1", "a", "b", RUNNING, ((50, 99),))
    src, dst = commit(shards, m)
    assert src.slots == ((0, 49),) and dst.slots == ((50, 199),)
    with pytest.raises(ValueError):
        commit({"a": src, "b": dst}, m)


def test_progress_and_copied():
    docs = [
        {"slots": [[0, 9]], "state": "DONE", "keys_moved": 5, "bytes_moved": 50,
         "copy_state": "done"},
        {"slots": [[10, 19]], "state": "RUNNING", "keys_moved": 2, "copy_state": "running"},
    ]
    p = progress(docs)
    assert (p["slots"], p["slots_done"], p["keys_moved"], p["bytes_moved"]) == (20, 10, 7, 50)
    assert p["by_state"] == {"DONE": 1, "RUNNING": 1}
    assert copied(docs[0]) and not copied(docs[1])
    assert not copied({"copy_state": "done", "error": "boom"})


# --------------------------------------------------------------------------- the planner part


def _cluster_with(*docs):
    import orjson

    from tests.test_planner import healthy

    c = healthy(shards=2, replicas=1)
    for d in docs:
        c.values[c.keys.migration(d["id"])] = orjson.dumps(d)
    return c


def _doc(mid, state, lo, hi, **extra):
    from tests.test_planner import S

    return {"id": mid, "slots": [[lo, hi]], "from_shard": S(2), "to_shard": S(1),
            "state": state, **extra}


def test_planner_starts_commits_and_fails():
    from coordinator.migrations import CommitMigration, FailMigration, StartMigration
    from tests.test_planner import S

    c = _cluster_with(_doc("m1", "PENDING", 8192, 8199), _doc("m2", "PENDING", 8200, 8299))
    p = c.plan()
    starts = [a for a in p.actions if isinstance(a, StartMigration)]
    assert [a.migration for a in starts] == ["m1"]  # one per target shard

    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="done"))
    p = c.plan()
    (commit_,) = [a for a in p.actions if isinstance(a, CommitMigration)]
    assert commit_.writes.shard(S(1)).slots == ((0, 8199),)
    assert commit_.writes.shard(S(2)).slots == ((8200, 16383),)

    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="failed", error="boom"))
    (fail,) = [a for a in c.plan().actions if isinstance(a, FailMigration)]
    assert "boom" in fail.why and fail.state is MigrationState.FAILED


def test_a_failover_pauses_only_the_migrations_touching_the_shard():
    from coordinator.migrations import CommitMigration, FailMigration

    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="running"))
    c.drop_lease(2)
    p = c.plan()
    assert not [a for a in p.actions if isinstance(a, (CommitMigration, FailMigration))]
    assert any("m1 waits" in n for n in p.notes), p.notes


def test_a_copied_migration_rolls_forward_and_the_failover_waits_for_its_commit():
    """Once the copy is recorded done the source may have handed the slots off
    (the target took writes): the move is committed even though the source lost
    its primary, and the failover of the source (or of the target) waits for
    that commit so that a promoted primary never serves the slots."""
    from coordinator.actions import Failover
    from coordinator.migrations import CommitMigration, committing
    from tests.test_planner import S, lose_primary

    for lost in (1, 2):  # the target's shard, then the source's
        c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="done"))
        lose_primary(c, lost, 10 * lost)
        p = c.plan()
        (commit_,) = [a for a in p.actions if isinstance(a, CommitMigration)]
        assert commit_.writes.shard(S(1)).slots == ((0, 8199),)
        assert not [a for a in p.actions if isinstance(a, Failover)]
        assert any("waits for a copied migration's commit" in n for n in p.notes), p.notes
        assert committing(c.view()) == {S(1), S(2)}
    # without a migration in flight the same loss is failed over at once
    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="running"))
    assert committing(c.view()) == set()
    assert [a for a in lose_primary(c, 2, 20).plan().actions if isinstance(a, Failover)]


# --------------------------------------------------------------------------- retries, shard lifecycle, records


def test_a_failed_migration_is_retried_after_its_backoff_then_given_up():
    from coordinator.migrations import RetryMigration, StartMigration, retry_due
    from coordinator.policy import Policy
    from tests.test_planner import NOW

    policy = Policy(migration_attempts=3, migration_backoff=1.0)
    failed_ms = int(NOW * 1000)
    assert retry_due({"attempts": 1, "failed_ms": failed_ms}, NOW + 0.5, policy) is False
    assert retry_due({"attempts": 1, "failed_ms": failed_ms}, NOW + 1.0, policy) is True
    assert retry_due({"attempts": 2, "failed_ms": failed_ms}, NOW + 1.5, policy) is False
    assert retry_due({"attempts": 3, "failed_ms": failed_ms}, NOW + 99, policy) is None
    assert retry_due({"attempts": 1, "retry": False}, NOW + 99, policy) is None

    c = _cluster_with(_doc("m1", "FAILED", 8192, 8199, attempts=1, failed_ms=failed_ms,
                           error="source lost", copy_state="failed"))
    assert not [a for a in c.plan(NOW + 0.2, policy).actions if isinstance(a, RetryMigration)]
    (retry,) = [a for a in c.plan(NOW + 2, policy).actions if isinstance(a, RetryMigration)]
    assert retry.state is MigrationState.PENDING
    fields = dict(retry.fields)
    assert fields["copy_state"] is None and fields["last_error"] == "source lost"
    # a start resets the copy fields of the earlier attempt and counts the attempt
    c = _cluster_with(_doc("m1", "PENDING", 8192, 8199, attempts=1, copy_state="failed",
                           keys_moved=9))
    (start,) = [a for a in c.plan().actions if isinstance(a, StartMigration)]
    fields = dict(start.fields)
    assert fields["attempts"] == 2 and fields["copy_state"] is None and fields["keys_moved"] == 0


def test_the_migration_txn_applies_the_fields():
    import orjson

    from coordinator.migrations import StartMigration, migration_txn
    from coordinator.reconciler import Chain, Reconciler
    from dcs.port import Put

    c = _cluster_with(_doc("m1", "PENDING", 8192, 8199, copy_state="failed", error="x"))
    v = c.view()
    (start,) = [a for a in c.plan().actions if isinstance(a, StartMigration)]
    rec = Reconciler(None, c.keys)  # type: ignore[arg-type]
    txn = migration_txn(rec, v, Chain(v.epoch, str(v.epoch).encode(), []), start)
    (put,) = [op for op in txn.ops if isinstance(op, Put) and op.key == c.keys.migration("m1")]
    doc = orjson.loads(put.value)
    assert doc["state"] == "RUNNING" and "copy_state" not in doc and doc["error"] == ""
    assert doc["attempts"] == 1 and doc["from_shard"]  # the rest is kept


def _scaled_out(migration_state: str, new_slots=()):
    """Shards 1 and 2 plus shard 3 made by a scale out: primary 30 MIGRATING,
    replica 31 STANDBY; one migration from shard 2 to shard 3."""
    from clusterstate.topology import NodeState, Role
    from tests.test_planner import S

    c = _cluster_with()
    c.node(30, shard=3, role=Role.PRIMARY, state=NodeState.MIGRATING).status(30)
    c.node(31, shard=3, role=Role.REPLICA, state=NodeState.STANDBY).status(31)
    c.shard(3, 30, (31,), slots=tuple(new_slots)).lease(3, 30)
    if new_slots:
        c.shard(2, 20, (21,), slots=((8192, 16383 - 8),))
    c.values[c.keys.migration("m1")] = __import__("orjson").dumps(
        {"id": "m1", "slots": [[16376, 16383]], "from_shard": S(2), "to_shard": S(3),
         "state": migration_state})
    return c


def test_a_new_shard_primary_becomes_active_once_its_migrations_are_over():
    from clusterstate.topology import NodeState
    from coordinator.migrations import DissolveShard, ShardReady
    from tests.test_planner import N

    p = _scaled_out("RUNNING", ((16376, 16383),)).plan()
    assert not [a for a in p.actions if isinstance(a, (ShardReady, DissolveShard))]
    p = _scaled_out("DONE", ((16376, 16383),)).plan()
    (ready,) = [a for a in p.actions if isinstance(a, ShardReady)]
    assert ready.writes.node(N(30)).state is NodeState.ACTIVE


def test_an_empty_shard_dissolves_once_no_migration_touches_it():
    from clusterstate.topology import NodeState, Role
    from coordinator.migrations import DissolveShard
    from tests.test_planner import N, S

    # pending work keeps it
    assert not [a for a in _scaled_out("PENDING").plan().actions
                if isinstance(a, DissolveShard)]
    # a scale out whose every migration was cancelled: the new shard dissolves
    c = _scaled_out("CANCELLED")
    c.drop_status(31)  # a dead member goes back OFFLINE
    (d,) = [a for a in c.plan().actions if isinstance(a, DissolveShard)]
    assert d.writes.forget_shards == (S(3),)
    p, r = d.writes.node(N(30)), d.writes.node(N(31))
    assert (p.role, p.shard, p.state, p.replica_id, p.hidden) == (
        Role.NONE, "", NodeState.ONLINE, 0, False)
    assert (r.role, r.state) == (Role.NONE, NodeState.OFFLINE)


def test_finished_plans_are_forgotten_after_the_retention():
    from coordinator.migrations import ForgetMigrations
    from coordinator.policy import Policy
    from tests.test_planner import NOW

    done_ms = int(NOW * 1000)
    policy = Policy(migration_retention=60)
    c = _cluster_with(_doc("m1", "DONE", 8192, 8199, plan_epoch=5, done_ms=done_ms),
                      _doc("m2", "DONE", 8200, 8207, plan_epoch=5, done_ms=done_ms - 5000))
    assert not [a for a in c.plan(NOW + 30, policy).actions if isinstance(a, ForgetMigrations)]
    (f,) = [a for a in c.plan(NOW + 61, policy).actions if isinstance(a, ForgetMigrations)]
    assert f.writes.forget_migrations == ("m1", "m2")
    # a plan with a migration still open is kept whole
    c = _cluster_with(_doc("m1", "DONE", 8192, 8199, plan_epoch=5, done_ms=done_ms),
                      _doc("m2", "PENDING", 8200, 8207, plan_epoch=5))
    assert not [a for a in c.plan(NOW + 999, policy).actions if isinstance(a, ForgetMigrations)]


def test_a_finished_migration_may_name_a_dissolved_shard_an_open_one_may_not():
    from clusterstate.topology import Topology, TopologyError
    from tests.test_planner import S

    v = _cluster_with().view()
    gone = "f" * 40
    done = MigrationRecord("m1", ((0, 9),), gone, S(1), DONE)
    Topology.build(v.epoch, v.topology.shards, v.topology.nodes, [done])
    with pytest.raises(TopologyError, match="not a known shard"):
        Topology.build(v.epoch, v.topology.shards, v.topology.nodes,
                       [MigrationRecord("m1", ((0, 9),), gone, S(1), RUNNING)])


def test_plan_writes_for_a_scale_out_and_a_scale_in():
    from clusterstate.topology import Health, NodeState, Role
    from coordinator.migrations import plan_writes
    from coordinator.rebalance import plan_from_view
    from tests.test_planner import N, S

    c = _cluster_with()
    c.node(40).status(40).node(41).status(41)
    v = c.view()
    planned = plan_from_view(v, "scale_out")
    w = plan_writes(v, v.settings, planned)
    (new,) = planned.new_shards
    assert w.shard(new.id).slots == () and w.epoch == v.epoch + 1
    p = w.node(new.primary)
    assert (p.role, p.state, p.shard) == (Role.PRIMARY, NodeState.MIGRATING, new.id)
    (rid,) = new.replicas
    r = w.node(rid)
    assert (r.role, r.state, r.health) == (Role.REPLICA, NodeState.RECOVERING, Health.LOADING)
    assert len(set(w.replica_ids)) == 2 and not set(w.replica_ids) & set(v.replica_ids)
    assert {new.primary, rid} == {N(40), N(41)}

    planned = plan_from_view(v, "scale_in", shard=S(2))
    w = plan_writes(v, v.settings, planned)
    assert [n.record.id for n in w.nodes] == [N(20)]
    assert w.node(N(20)).state is NodeState.MIGRATING and not w.shards


def test_a_migration_restarts_when_a_shard_failed_over_since_it_began():
    import orjson

    from coordinator.migrations import CommitMigration, FailMigration, StartMigration
    from tests.test_planner import S

    c = _cluster_with(_doc("m1", "PENDING", 8192, 8199))
    (start,) = [a for a in c.plan().actions if isinstance(a, StartMigration)]
    leases = dict(start.fields)["leases"]
    assert set(leases) == {S(1), S(2)} and all(leases.values())
    # copied with both leases as they were: committed
    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="done", leases=leases))
    assert [a for a in c.plan().actions if isinstance(a, CommitMigration)]
    # the source's lease was re-created meanwhile (failover) before the copy was
    # recorded done: copy again
    moved = {**leases, S(2): leases[S(2)] + 1000}
    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="running", leases=moved))
    (fail,) = [a for a in c.plan().actions if isinstance(a, FailMigration)]
    assert "source shard" in fail.why and dict(fail.fields).get("retry", True) is not False
    assert orjson.dumps(dict(fail.fields))  # the fields are JSON
