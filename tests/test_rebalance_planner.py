"""The rebalancing planner (coordinator/rebalance.py): tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterstate.layout import balanced_ranges
from clusterstate.slots import SLOT_COUNT
from clusterstate.topology import Health, NodeRecord, NodeState, Role
from coordinator.rebalance import (
    Move,
    NewShard,
    PlanError,
    eligible_spares,
    new_shards_from,
    plan_moves,
    plan_rebalance,
    plan_scale_in,
    plan_scale_out,
    plan_weighted,
    quotas,
)


def layout(*sizes: int) -> dict[str, list[int]]:
    """Shards s0, s1, … owning contiguous runs of the given sizes."""
    out: dict[str, list[int]] = {}
    start = 0
    for i, n in enumerate(sizes):
        out[f"s{i}"] = list(range(start, start + n))
        start += n
    return out


def balanced(n: int) -> dict[str, list[int]]:
    return {f"s{i}": list(range(lo, hi + 1)) for i, (lo, hi) in enumerate(balanced_ranges(n))}


def apply(owned: dict[str, list[int]], moves: list[Move] | tuple[Move, ...]) -> dict[str, set[int]]:
    out = {s: set(v) for s, v in owned.items()}
    for m in moves:
        assert m.slot in out[m.from_shard], m
        out[m.from_shard].remove(m.slot)
        out.setdefault(m.to_shard, set()).add(m.slot)
    return out


def min_moves(counts: list[int]) -> int:
    """Independent formula: each shard sheds its excess over q; N % k of those
    above q may keep one more."""
    total, k = sum(counts), len(counts)
    q, r = divmod(total, k)
    return sum(max(0, c - q) for c in counts) - min(r, sum(1 for c in counts if c > q))


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize(
    ("sizes", "targets", "expected_after", "moved"),
    [
        # scale out 3 -> 4 from a balanced layout
        ((5462, 5461, 5461), ["s0", "s1", "s2", "new"], {"s0": 4096, "s1": 4096, "s2": 4096, "new": 4096}, 4096),
        # scale out 1 -> 2
        ((16384,), ["s0", "new"], {"s0": 8192, "new": 8192}, 8192),
        # already balanced: nothing moves
        ((5462, 5461, 5461), ["s0", "s1", "s2"], {"s0": 5462, "s1": 5461, "s2": 5461}, 0),
        # scale in 3 -> 2: s2 spreads over s0 and s1
        ((5462, 5461, 5461), ["s0", "s1"], {"s0": 8192, "s1": 8192, "s2": 0}, 5461),
        # uneven: the biggest shard keeps the extra slot
        ((10, 3, 0), ["s0", "s1", "s2"], {"s0": 5, "s1": 4, "s2": 4}, 5),
        ((7, 7, 0), ["s0", "s1", "s2"], {"s0": 5, "s1": 5, "s2": 4}, 4),
    ],
)
def test_plan_moves_table(sizes, targets, expected_after, moved):
    owned = layout(*sizes)
    moves = plan_moves(owned, targets)
    assert len(moves) == moved
    after = apply(owned, moves)
    assert {s: len(v) for s, v in after.items()} == expected_after


def test_quotas_give_the_extra_slots_to_the_largest():
    assert quotas({"a": 1, "b": 9, "c": 0}, ["a", "b", "c"]) == {"a": 3, "b": 4, "c": 3}
    assert quotas({"a": 5, "b": 5}, ["a"]) == {"a": 10, "b": 0}
    with pytest.raises(PlanError):
        quotas({"a": 1}, [])


def test_moves_taken_from_the_end_form_few_ranges():
    plan = plan_scale_out(balanced(3), [NewShard("n", "p")])
    groups = plan.groups()
    assert {g["to_shard"] for g in groups} == {"n"}
    assert sum(g["count"] for g in groups) == 4096
    assert all(len(g["slots"]) == 1 for g in groups)  # one contiguous range per source
    assert plan.before["n"] == 0 and plan.after["n"] == 4096
    assert plan.keys is None and plan.bytes is None


def test_scale_out_counts_keys_and_bytes_when_measured():
    owned = layout(4, 0)
    plan = plan_scale_out({"s0": owned["s0"]}, [NewShard("n", "p")],
                          keys={2: 10, 3: 5, 0: 100}, bytes_={3: 7})
    assert [m.slot for m in plan.moves] == [2, 3]
    assert plan.keys == 15 and plan.bytes == 7


def test_scale_out_refuses_existing_shard():
    with pytest.raises(PlanError):
        plan_scale_out(layout(4), [NewShard("s0", "p")])


def test_scale_in_spreads_the_leaving_shard():
    plan = plan_scale_in(balanced(4), ["s3"])
    assert plan.after["s3"] == 0
    assert sorted(plan.after[s] for s in ("s0", "s1", "s2")) == [5461, 5461, 5462]
    assert all(m.from_shard == "s3" for m in plan.moves)
    assert plan.leaving == ("s3",)
    d = plan.to_dict()
    assert d["slots_to_move"] == 4096 and d["kind"] == "scale_in"
    assert {s["id"]: s["after"] for s in d["shards"]}["s3"] == 0


def test_scale_in_refuses_unknown_and_last_shard():
    with pytest.raises(PlanError) as exc:
        plan_scale_in(balanced(2), ["nope"])
    assert exc.value.code == "unknown_shard"
    with pytest.raises(PlanError) as exc:
        plan_scale_in(balanced(1), ["s0"])
    assert exc.value.code == "last_shard"


@pytest.mark.parametrize(
    ("sizes", "threshold", "moved"),
    [
        ((5462, 5461, 5461), 0.0, 0),  # within one slot
        ((6000, 5000, 5384), 0.0, 538),
        ((6000, 5000, 5384), 0.1, 0),  # every shard within 10% of the mean
        ((8000, 4000, 4384), 0.1, 2538),
    ],
)
def test_rebalance_by_count(sizes, threshold, moved):
    owned = layout(*sizes)
    plan = plan_rebalance(owned, threshold=threshold)
    assert len(plan.moves) == moved
    assert len(plan.moves) == (min_moves(list(sizes)) if moved else 0)
    if not moved:
        assert plan.notes


def test_rebalance_by_weight_moves_hot_slots():
    owned = {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    weights = {0: 100, 1: 100, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    plan = plan_rebalance(owned, weights=weights, threshold=0.1)
    assert len(plan.moves) == 1 and plan.moves[0].from_shard == "a"
    after = apply(owned, plan.moves)
    loads = {s: sum(weights[x] for x in v) for s, v in after.items()}
    assert abs(loads["a"] - loads["b"]) <= 100


def test_rebalance_by_weight_threshold_keeps_still():
    owned = {"a": [0, 1], "b": [2, 3]}
    weights = {0: 10, 1: 11, 2: 10, 3: 10}
    assert plan_weighted(owned, weights, threshold=0.1) == []
    assert plan_rebalance(owned, weights=weights, threshold=0.1).moves == ()


def node(nid: str, addr: str, zone: str = "", role: Role = Role.NONE,
         state: NodeState = NodeState.ONLINE, health: Health = Health.ONLINE) -> NodeRecord:
    return NodeRecord(nid, addr, 7000, 17000, zone=zone, role=role, state=state, health=health)


def test_new_shards_from_spares_spread_over_hosts():
    spares = [node("a", "h1", "z1"), node("b", "h1", "z1"), node("c", "h2", "z2"),
              node("d", "h2", "z2")]
    new = new_shards_from(spares, replicas=1, epoch=5)
    assert len(new) == 2
    by_id = {n.id: n for n in spares}
    for s in new:
        assert len(s.replicas) == 1
        assert by_id[s.primary].addr != by_id[s.replicas[0]].addr
    assert len({s.id for s in new}) == 2
    with pytest.raises(PlanError):
        new_shards_from([], replicas=1, epoch=5)


def test_eligible_spares_only_online_unassigned():
    nodes = [
        node("a", "h"),
        node("b", "h", role=Role.PRIMARY, state=NodeState.ACTIVE),
        node("c", "h", health=Health.FAIL),
        node("d", "h", state=NodeState.OFFLINE),
    ]
    assert [n.id for n in eligible_spares(nodes)] == ["a"]


# --------------------------------------------------------------------------- properties

sizes_st = st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st, added=st.integers(min_value=0, max_value=4),
       removed=st.integers(min_value=0, max_value=3))
def test_property_balanced_owned_once_minimal(sizes, added, removed):
    owned = layout(*sizes)
    removed = min(removed, len(sizes) - 1)
    kept = [s for s in owned][removed:]
    targets = kept + [f"new{i}" for i in range(added)]
    moves = plan_moves(owned, targets)
    after = apply(owned, moves)
    # every slot owned exactly once
    all_slots = [x for v in after.values() for x in v]
    assert sorted(all_slots) == list(range(sum(sizes)))
    # balanced within one slot, leaving shards empty
    counts = [len(after.get(t, ())) for t in targets]
    assert max(counts) - min(counts) <= 1
    assert all(not after[s] for s in owned if s not in targets)
    # minimal = sum of positive excess over the quotas = the closed formula
    before = [len(owned.get(t, ())) for t in targets]
    leaving = sum(len(owned[s]) for s in owned if s not in targets)
    q = quotas({**{t: 0 for t in targets}, **{s: len(v) for s, v in owned.items()}}, targets)
    assert len(moves) == sum(max(0, len(owned.get(s, ())) - q.get(s, 0))
                             for s in set(owned) | set(targets))
    assert len(moves) == leaving + min_moves_with_total(before, sum(sizes))
    # a slot moves at most once and never to its own shard
    assert len({m.slot for m in moves}) == len(moves)
    assert all(m.from_shard != m.to_shard for m in moves)


def min_moves_with_total(before: list[int], total: int) -> int:
    """Minimal moves out of the kept shards when ``total`` slots end over them."""
    k = len(before)
    q, r = divmod(total, k)
    return sum(max(0, c - q) for c in before) - min(r, sum(1 for c in before if c > q))


@settings(max_examples=50, deadline=None)
@given(shards=st.integers(min_value=1, max_value=12), added=st.integers(min_value=1, max_value=4))
def test_property_scale_out_full_slot_space(shards, added):
    owned = balanced(shards)
    plan = plan_scale_out(owned, [NewShard(f"n{i}", f"p{i}") for i in range(added)])
    after = apply(owned, plan.moves)
    assert sum(len(v) for v in after.values()) == SLOT_COUNT
    counts = [len(v) for v in after.values()]
    assert max(counts) - min(counts) <= 1
    assert len(plan.moves) == min_moves([len(owned[s]) for s in owned] + [0] * added)
    assert dict(plan.after) == {s: len(v) for s, v in after.items()}


@settings(max_examples=100, deadline=None)
@given(weights=st.lists(st.integers(min_value=0, max_value=1000), min_size=4, max_size=40),
       shards=st.integers(min_value=2, max_value=4))
def test_property_weighted_never_worsens(weights, shards):
    owned: dict[str, list[int]] = {f"s{i}": [] for i in range(shards)}
    for slot in range(len(weights)):
        owned[f"s{slot * shards // len(weights)}"].append(slot)
    w = dict(enumerate(weights))
    moves = plan_weighted(owned, w, threshold=0.0)
    after = apply(owned, moves)
    assert sorted(x for v in after.values() for x in v) == list(range(len(weights)))

    def spread(o):
        loads = [sum(w[x] for x in v) for v in o.values()]
        return max(loads) - min(loads)

    assert spread(after) <= spread(owned)
