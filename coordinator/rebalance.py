"""Rebalancing plans: which slots move where (pure, deterministic).

Scale out, scale in and rebalance all reduce to one question: given who owns
each slot now and which shards should own slots afterwards, which slots move?
:func:`plan_moves` answers it with the fewest moves that leave the target
shards balanced within one slot:

* ``N`` slots over ``k`` target shards give quotas of ``q = N // k`` or
  ``q + 1``; the ``N % k`` larger quotas go to the shards that own the most
  slots already (ties by shard id), every leaving shard's quota is 0;
* a shard above its quota gives away its highest slots, a shard below receives
  them in order (so moved slots form few ranges).

Moving ``sum(max(0, owned - quota))`` slots is then the minimum: each shard
must shed at least its excess over ``q``, and only ``N % k`` of them may keep
one more (DESIGN §5, docs/rebalancing.md).

:func:`plan_weighted` balances a measured weight per slot (keys or bytes)
instead of slot counts, greedily, and moves nothing while every shard is within
``threshold`` (a fraction of the mean) of the mean.

The view-facing helpers (:func:`plan_scale_out`, :func:`plan_scale_in`,
:func:`plan_rebalance`) take plain mappings so the tables in the tests need no
cluster; :func:`plan_from_view` builds them from a :class:`ClusterView`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterstate.slots import SLOT_COUNT
from clusterstate.topology import Health, NodeRecord, NodeState, Role, slot_ranges

from .placement import shard_id_for, spread


class PlanError(ValueError):
    """The request cannot be planned (unknown shard, not enough spare nodes…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, order=True)
class Move:
    slot: int
    from_shard: str
    to_shard: str


@dataclass(frozen=True, slots=True)
class NewShard:
    """A shard a scale out creates: its id, primary and replicas (node ids)."""

    id: str
    primary: str
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    kind: str
    moves: tuple[Move, ...]
    before: Mapping[str, int]  # shard -> slots owned now
    after: Mapping[str, int]  # shard -> slots owned once every move is done
    keys: int | None = None  # keys to move, None when not measured
    bytes: int | None = None
    new_shards: tuple[NewShard, ...] = ()
    leaving: tuple[str, ...] = ()  # shards emptied (scale in)
    notes: tuple[str, ...] = field(default=())

    def groups(self) -> list[dict[str, Any]]:
        """The moves as ``{from_shard, to_shard, slots: [[lo, hi], …], count}``."""
        by_pair: dict[tuple[str, str], list[int]] = {}
        for m in self.moves:
            by_pair.setdefault((m.from_shard, m.to_shard), []).append(m.slot)
        return [
            {
                "from_shard": src,
                "to_shard": dst,
                "slots": [list(r) for r in slot_ranges(slots)],
                "count": len(slots),
            }
            for (src, dst), slots in sorted(by_pair.items(), key=lambda kv: min(kv[1]))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "moves": self.groups(),
            "slots_to_move": len(self.moves),
            "keys_to_move": self.keys,
            "bytes_to_move": self.bytes,
            "shards": [
                {"id": s, "before": self.before.get(s, 0), "after": self.after.get(s, 0)}
                for s in sorted(set(self.before) | set(self.after))
            ],
            "new_shards": [
                {"id": n.id, "primary": n.primary, "replicas": list(n.replicas)}
                for n in self.new_shards
            ],
            "leaving": list(self.leaving),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- core


def quotas(owned: Mapping[str, int], targets: Sequence[str]) -> dict[str, int]:
    """Slots each target shard should own: balanced within one slot, the larger
    quotas to the shards owning the most already. Leaving shards get 0."""
    if not targets:
        raise PlanError("no_target", "no shard would own the slots")
    if len(set(targets)) != len(targets):
        raise PlanError("bad_request", "a target shard is listed twice")
    total = sum(owned.values())
    q, extra = divmod(total, len(targets))
    ranked = sorted(targets, key=lambda s: (-owned.get(s, 0), s))
    out = {s: 0 for s in owned}
    for i, s in enumerate(ranked):
        out[s] = q + (1 if i < extra else 0)
    return out


def plan_moves(
    slots_by_shard: Mapping[str, Sequence[int]], targets: Sequence[str]
) -> list[Move]:
    """The fewest moves leaving ``targets`` balanced within one slot and every
    other shard empty. ``slots_by_shard`` may omit shards that own nothing."""
    owned = {s: len(v) for s, v in slots_by_shard.items()}
    for t in targets:
        owned.setdefault(t, 0)
    quota = quotas(owned, targets)
    given: list[tuple[int, str]] = []  # (slot, from) in slot order
    for shard in sorted(owned):
        excess = owned[shard] - quota[shard]
        if excess > 0:
            mine = sorted(slots_by_shard[shard])
            given.extend((slot, shard) for slot in mine[len(mine) - excess :])
    given.sort()
    moves: list[Move] = []
    it = iter(given)
    for shard in sorted(owned, key=lambda s: s):
        need = quota[shard] - owned[shard]
        for _ in range(max(0, need)):
            slot, src = next(it)
            moves.append(Move(slot, src, shard))
    return sorted(moves)


def plan_weighted(
    slots_by_shard: Mapping[str, Sequence[int]],
    weights: Mapping[int, float],
    threshold: float = 0.1,
    max_moves: int = SLOT_COUNT,
) -> list[Move]:
    """Greedy weight balance: move the slot that best halves the gap between the
    heaviest and the lightest shard until every shard is within ``threshold``
    × mean of the mean, or no move narrows the gap. Slots without a weight
    weigh 0."""
    shards = sorted(slots_by_shard)
    if len(shards) < 2:
        return []
    owner = {slot: s for s in shards for slot in slots_by_shard[s]}
    held: dict[str, set[int]] = {s: set(slots_by_shard[s]) for s in shards}
    load = {s: sum(weights.get(slot, 0) for slot in held[s]) for s in shards}
    mean = sum(load.values()) / len(shards)
    if mean <= 0:
        return []
    origin = dict(owner)
    for _ in range(max_moves):
        heavy = max(shards, key=lambda s: (load[s], s))
        light = min(shards, key=lambda s: (load[s], s))
        if max(load[heavy] - mean, mean - load[light]) <= threshold * mean:
            break
        gap = load[heavy] - load[light]
        best: int | None = None
        best_score = 0.0
        for slot in held[heavy]:
            w = weights.get(slot, 0)
            if 0 < w < gap:
                score = min(w, gap - w)  # the new gap is |gap - 2w|: best near gap / 2
                if score > best_score or (score == best_score and best is not None and slot < best):
                    best, best_score = slot, score
        if best is None:
            break
        w = weights.get(best, 0)
        held[heavy].discard(best)
        held[light].add(best)
        load[heavy] -= w
        load[light] += w
        owner[best] = light
    return sorted(
        Move(slot, origin[slot], owner[slot]) for slot in owner if owner[slot] != origin[slot]
    )


def _counts(slots_by_shard: Mapping[str, Sequence[int]], moves: Sequence[Move],
            extra: Sequence[str] = ()) -> tuple[dict[str, int], dict[str, int]]:
    before = {s: len(v) for s, v in slots_by_shard.items()}
    for s in extra:
        before.setdefault(s, 0)
    after = dict(before)
    for m in moves:
        after[m.from_shard] -= 1
        after[m.to_shard] = after.get(m.to_shard, 0) + 1
    return before, after


def _measured(moves: Sequence[Move], per_slot: Mapping[int, int] | None) -> int | None:
    if per_slot is None:
        return None
    return sum(per_slot.get(m.slot, 0) for m in moves)


# --------------------------------------------------------------------------- operations


def plan_scale_out(
    slots_by_shard: Mapping[str, Sequence[int]],
    new_shards: Sequence[NewShard],
    *,
    keys: Mapping[int, int] | None = None,
    bytes_: Mapping[int, int] | None = None,
) -> RebalancePlan:
    """Add ``new_shards`` (owning nothing) and take slots from the most loaded
    shards so all end balanced within one slot."""
    if not new_shards:
        raise PlanError("no_spare", "no new shard to add")
    for n in new_shards:
        if n.id in slots_by_shard:
            raise PlanError("bad_request", f"shard {n.id} already exists")
    targets = [*slots_by_shard, *(n.id for n in new_shards)]
    moves = plan_moves(slots_by_shard, targets)
    before, after = _counts(slots_by_shard, moves, [n.id for n in new_shards])
    return RebalancePlan("scale_out", tuple(moves), before, after,
                         _measured(moves, keys), _measured(moves, bytes_),
                         new_shards=tuple(new_shards))


def plan_scale_in(
    slots_by_shard: Mapping[str, Sequence[int]],
    leaving: Sequence[str],
    *,
    keys: Mapping[int, int] | None = None,
    bytes_: Mapping[int, int] | None = None,
) -> RebalancePlan:
    """Spread the slots of the ``leaving`` shards over the others, balanced."""
    unknown = [s for s in leaving if s not in slots_by_shard]
    if unknown:
        raise PlanError("unknown_shard", f"no shard {unknown[0]!r} in the cluster")
    targets = [s for s in slots_by_shard if s not in set(leaving)]
    if not targets:
        raise PlanError("last_shard", "cannot remove every shard: nothing would own the slots")
    moves = plan_moves(slots_by_shard, targets)
    before, after = _counts(slots_by_shard, moves)
    return RebalancePlan("scale_in", tuple(moves), before, after,
                         _measured(moves, keys), _measured(moves, bytes_),
                         leaving=tuple(leaving))


def plan_rebalance(
    slots_by_shard: Mapping[str, Sequence[int]],
    *,
    weights: Mapping[int, float] | None = None,
    threshold: float = 0.0,
    keys: Mapping[int, int] | None = None,
    bytes_: Mapping[int, int] | None = None,
) -> RebalancePlan:
    """Rebalance the existing shards: by slot count (balanced within one slot)
    unless ``weights`` are given. Nothing moves while every shard is within
    ``threshold`` (a fraction of the mean) of the mean; with counts, a cluster
    already balanced within one slot never moves."""
    notes: list[str] = []
    if weights is None:
        owned = {s: len(v) for s, v in slots_by_shard.items()}
        mean = sum(owned.values()) / max(1, len(owned))
        spread_ = max(owned.values(), default=0) - min(owned.values(), default=0)
        if spread_ <= 1 or max(abs(c - mean) for c in owned.values()) <= threshold * mean:
            moves: list[Move] = []
            notes.append("already balanced within the threshold: nothing moves")
        else:
            moves = plan_moves(slots_by_shard, list(slots_by_shard))
    else:
        moves = plan_weighted(slots_by_shard, weights, threshold)
        if not moves:
            notes.append("already balanced within the threshold: nothing moves")
    before, after = _counts(slots_by_shard, moves)
    return RebalancePlan("rebalance", tuple(moves), before, after,
                         _measured(moves, keys), _measured(moves, bytes_),
                         notes=tuple(notes))


# --------------------------------------------------------------------------- from a view


def eligible_spares(nodes: Sequence[NodeRecord]) -> list[NodeRecord]:
    """Nodes that may form a new shard: in no shard, ONLINE, healthy, visible."""
    return [
        n for n in nodes
        if n.role is Role.NONE and n.state is NodeState.ONLINE
        and n.health is Health.ONLINE and not n.hidden and not n.shard
    ]


def new_shards_from(
    spares: Sequence[NodeRecord], replicas: int, epoch: int, count: int | None = None
) -> list[NewShard]:
    """New shards (primary + up to ``replicas`` replicas on other hosts/zones)
    from ``spares``: ``count`` of them, or as many full shards as the spares allow."""
    if count is None:
        count = len(spares) // (1 + replicas)
    if count < 1 or len(spares) < count:
        raise PlanError(
            "no_spare",
            f"{len(spares)} spare ONLINE node(s): not enough for a shard of 1 + {replicas}",
        )
    return [
        NewShard(shard_id_for(p.id, epoch), p.id, tuple(r.id for r in reps))
        for p, reps in spread(spares, count, replicas)
    ]


def slots_by_shard_of(view: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for entry in view.shards.values():
        s = entry.record
        out[s.id] = [slot for lo, hi in s.slots for slot in range(lo, hi + 1)]
    return out


def plan_from_view(
    view: Any,
    kind: str,
    *,
    nodes: Sequence[str] = (),
    shard: str = "",
    threshold: float = 0.0,
    keys: Mapping[int, int] | None = None,
    bytes_: Mapping[int, int] | None = None,
    by: str = "slots",
) -> RebalancePlan:
    """The plan of one operator request against ``view`` (a ClusterView).
    ``keys`` / ``bytes_``: measured per slot (None: unknown); ``by``: what a
    rebalance balances (slots, keys or bytes; the last two need the measure)."""
    owned = slots_by_shard_of(view)
    measured = {"keys": keys, "bytes": bytes_}
    if kind == "scale_out":
        records = [e.record for e in view.nodes.values()]
        if nodes:
            if len(set(nodes)) != len(nodes):
                raise PlanError("bad_request", "a node is listed twice")
            by_id = {n.id: n for n in records}
            missing = [n for n in nodes if n not in by_id]
            if missing:
                raise PlanError("unknown_node", f"no node {missing[0]!r} in the cluster")
            chosen = [by_id[n] for n in nodes]
            bad = [n.id for n in chosen if n not in eligible_spares([n])]
            if bad:
                raise PlanError("not_eligible",
                                f"node {bad[0]} is not a spare ONLINE node")
            # the nodes given form one shard: first primary spread, the rest replicas
            new = new_shards_from(chosen, len(chosen) - 1, view.epoch + 1, count=1)
        else:
            spares = eligible_spares(records)
            replicas = view.settings.replicas
            count = max(1, len(spares) // (1 + replicas)) if spares else 0
            new = new_shards_from(spares, replicas, view.epoch + 1, count=count)
        return plan_scale_out(owned, new, keys=keys, bytes_=bytes_)
    if kind == "scale_in":
        if not shard:
            raise PlanError("bad_request", "scale_in needs the shard to remove")
        return plan_scale_in(owned, [shard], keys=keys, bytes_=bytes_)
    if kind == "rebalance":
        if by not in ("slots", "keys", "bytes"):
            raise PlanError("bad_request", "by must be slots, keys or bytes")
        weights = measured.get(by)
        if by != "slots" and weights is None:
            raise PlanError("not_measured", f"the {by} per slot could not be measured "
                            "(a primary did not answer): retry, or rebalance by slots")
        return plan_rebalance(owned, weights=weights, threshold=threshold, keys=keys,
                              bytes_=bytes_)
    raise PlanError("bad_request", f"unknown kind {kind!r}: scale_out, scale_in or rebalance")


__all__ = [
    "Move",
    "NewShard",
    "PlanError",
    "RebalancePlan",
    "eligible_spares",
    "new_shards_from",
    "plan_from_view",
    "plan_moves",
    "plan_rebalance",
    "plan_scale_in",
    "plan_scale_out",
    "plan_weighted",
    "quotas",
    "slots_by_shard_of",
]
