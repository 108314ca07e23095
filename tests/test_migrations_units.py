"""The pure execution helpers (coordinator/migrations.py; not wired yet)."""

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
    from coordinator.migrations import CommitMigration

    c = _cluster_with(_doc("m1", "RUNNING", 8192, 8199, copy_state="done"))
    c.drop_lease(2)
    p = c.plan()
    assert not [a for a in p.actions if isinstance(a, CommitMigration)]
    assert any("m1 waits" in n for n in p.notes), p.notes
