"""Where members go, and the ids they get (pure, deterministic).

Placement spreads what fails together: primaries over zones and hosts, and a
shard's replicas on other zones and hosts than its primary and each other,
where the spare nodes allow it. A host is a node's ``addr``; ties go to the
node id, so the same view always gives the same answer.

Ids are derived from the view instead of drawn at random, so ``plan`` stays a
pure function: a shard id is a hash of its first primary and the epoch it is
created at (40 hex, like a node id), a replica_id a 64-bit hash of the node, the
epoch and a counter, skipping every id ever allocated (``replica-ids/`` keeps
them forever; the transaction also requires the new key to be absent). Epochs
only grow, so an id is never derived twice for a committed change.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

from clusterstate.topology import NodeRecord

_UINT64_MAX = 2**64 - 1


def shard_id_for(primary: str, epoch: int) -> str:
    return hashlib.sha1(f"shard|{primary}|{epoch}".encode()).hexdigest()


def replica_id_for(node_id: str, epoch: int, taken: Collection[int]) -> int:
    """A uint64 > 0 not in ``taken``."""
    n = 0
    while True:
        digest = hashlib.sha256(f"replica|{node_id}|{epoch}|{n}".encode()).digest()
        value = int.from_bytes(digest[:8], "big") & _UINT64_MAX
        if value and value not in taken:
            return value
        n += 1


def pick_primaries(candidates: Sequence[NodeRecord], count: int) -> list[NodeRecord]:
    """``count`` primaries spread over zones first, then hosts."""
    chosen: list[NodeRecord] = []
    left = sorted(candidates, key=lambda n: n.id)
    zones: Counter[str] = Counter()
    hosts: Counter[str] = Counter()
    for _ in range(min(count, len(left))):
        best = min(left, key=lambda n: (zones[n.zone], hosts[n.addr], n.id))
        chosen.append(best)
        left.remove(best)
        zones[best.zone] += 1
        hosts[best.addr] += 1
    return chosen


def replica_score(
    candidate: NodeRecord, members: Sequence[NodeRecord], host_load: Counter[str]
) -> tuple[int, ...]:
    """Lower is better: away from the primary's zone and host (``members[0]``),
    then from the other members', then on a less used host."""
    primary = members[0]
    return (
        int(candidate.zone == primary.zone),
        int(candidate.addr == primary.addr),
        sum(1 for m in members if m.zone == candidate.zone),
        sum(1 for m in members if m.addr == candidate.addr),
        host_load[candidate.addr],
    )


def pick_replica(
    candidates: Iterable[NodeRecord],
    members: Sequence[NodeRecord],
    host_load: Counter[str] | None = None,
) -> NodeRecord | None:
    """The best candidate to join a shard whose members (primary first) are given."""
    load = host_load if host_load is not None else Counter()
    pool = list(candidates)
    if not pool:
        return None
    return min(pool, key=lambda n: (*replica_score(n, members, load), n.id))


def spread(
    candidates: Sequence[NodeRecord], primaries: int, replicas: int
) -> list[tuple[NodeRecord, list[NodeRecord]]]:
    """Bootstrap placement: ``primaries`` shards, each with up to ``replicas``
    replicas, drawn from ``candidates``; replicas are handed out one round per
    shard at a time so a good spot is shared fairly."""
    heads = pick_primaries(candidates, primaries)
    left = [n for n in sorted(candidates, key=lambda n: n.id) if n not in heads]
    host_load: Counter[str] = Counter(n.addr for n in heads)
    shards: list[tuple[NodeRecord, list[NodeRecord]]] = [(p, []) for p in heads]
    for _ in range(replicas):
        for primary, reps in shards:
            best = pick_replica(left, [primary, *reps], host_load)
            if best is None:
                return shards
            reps.append(best)
            left.remove(best)
            host_load[best.addr] += 1
    return shards


__all__ = [
    "pick_primaries",
    "pick_replica",
    "replica_id_for",
    "replica_score",
    "shard_id_for",
    "spread",
]
