"""Slot layouts: balanced ranges and static topologies (pure).

Used by ``slotkeeper cluster-config`` to write a static cluster's topology, by
tests, and by the coordinator's bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence

from .slots import SLOT_COUNT
from .topology import Health, NodeRecord, NodeState, Role, ShardRecord, Topology, new_id


def balanced_ranges(shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous slot ranges whose sizes differ by at most one slot."""
    if not 1 <= shards <= SLOT_COUNT:
        raise ValueError(f"shards must be 1..{SLOT_COUNT}, got {shards}")
    per, extra = divmod(SLOT_COUNT, shards)
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(shards):
        end = start + per + (1 if i < extra else 0) - 1
        out.append((start, end))
        start = end + 1
    return out


def random_replica_id() -> int:
    return int(new_id()[:16], 16) or 1


def static_topology(
    endpoints: Sequence[tuple[str, int, int]], shards: int, replicas: int, epoch: int = 1
) -> Topology:
    """A topology over ``endpoints`` (addr, port, admin_port): ``shards`` primaries, each
    followed by its ``replicas``, in the order given; balanced slot ranges."""
    if shards < 1 or replicas < 0:
        raise ValueError("need at least one shard and zero or more replicas")
    need = shards * (1 + replicas)
    if len(endpoints) != need:
        raise ValueError(f"{shards} shards x (1 + {replicas}) replicas need {need} endpoints")
    nodes: list[NodeRecord] = []
    shard_records: list[ShardRecord] = []
    it = iter(endpoints)
    for rng in balanced_ranges(shards):
        shard_id = new_id()
        members: list[str] = []
        for i in range(1 + replicas):
            addr, port, admin = next(it)
            node_id = new_id()
            members.append(node_id)
            nodes.append(
                NodeRecord(
                    node_id, addr, port, admin,
                    shard=shard_id,
                    role=Role.PRIMARY if i == 0 else Role.REPLICA,
                    state=NodeState.ACTIVE if i == 0 else NodeState.STANDBY,
                    health=Health.ONLINE,
                    replica_id=random_replica_id(),
                )
            )
        shard_records.append(ShardRecord(shard_id, (rng,), members[0], tuple(members[1:])))
    return Topology.build(epoch, shard_records, nodes)
