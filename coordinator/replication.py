"""Replication as the coordinator sees it through sidecar statuses (pure).

A sidecar reports, in ``status/<node_id>``, the role its data node applied, the
epoch of the view it applied, its replication id and offset, and whether it is
writable. From those (never from the data port) the coordinator decides when a
replica has caught up, when a shard has lost its primary, and which replicas
may be promoted.
"""

from __future__ import annotations

from dataclasses import replace

from clusterstate.records import Settings, Status
from clusterstate.topology import Health, NodeRecord, NodeState, Role

from .view import ClusterView


def observed_health(status: Status) -> Health:
    """The health a status reports (an unknown word counts as ``fail``)."""
    try:
        return Health(status.health)
    except ValueError:
        return Health.FAIL


def applied_epoch(view: ClusterView, node_id: str) -> int:
    """The epoch a node must have applied for its status to describe its
    current assignment: the later of its own assignment and its shard's
    primary's (record rewrites for health or tags do not count)."""
    entry = view.nodes[node_id]
    shard = view.shards.get(entry.record.shard)
    return max(entry.since, shard.primary_since if shard is not None else 0)


def primary_status(view: ClusterView, shard_id: str) -> Status | None:
    """The status of the shard's primary, if it is alive and applied the shard's
    current record."""
    shard = view.shards[shard_id]
    st = view.status(shard.record.primary)
    if st is None or st.epoch_applied < shard.primary_since or st.role_applied != Role.PRIMARY:
        return None
    return st


def left_shard(view: ClusterView, node_id: str, *, hidden: bool) -> NodeRecord:
    """The record of a node that leaves its shard: role none, no shard, its
    replica_id retired (0); ONLINE with its observed health if its sidecar is
    alive, else OFFLINE ``fail``."""
    st = view.status(node_id)
    alive = view.alive(node_id) and st is not None
    return replace(
        view.node(node_id), shard="", role=Role.NONE,
        state=NodeState.ONLINE if alive else NodeState.OFFLINE,
        health=observed_health(st) if alive and st is not None else Health.FAIL,
        hidden=hidden, replica_id=0,
    )


def following(view: ClusterView, node_id: str) -> bool:
    """The replica replicates from its shard's current primary: both applied the
    current assignment, and they agree on the replication id when both tell."""
    record = view.node(node_id)
    if record.role is not Role.REPLICA:
        return False
    st = view.status(node_id)
    if st is None or st.role_applied != Role.REPLICA or observed_health(st) is not Health.ONLINE:
        return False
    if st.epoch_applied < applied_epoch(view, node_id):
        return False
    primary = primary_status(view, record.shard)
    if primary is None:
        return False
    return not (st.replid and primary.replid and st.replid != primary.replid)


def lag(view: ClusterView, node_id: str) -> int | None:
    """Bytes the replica is behind its primary; ``None`` when unknown."""
    record = view.node(node_id)
    st = view.status(node_id)
    primary = primary_status(view, record.shard) if record.shard else None
    if st is None or primary is None:
        return None
    return max(0, primary.repl_offset - st.repl_offset)


def caught_up(view: ClusterView, node_id: str, settings: Settings) -> bool:
    """Following, and within ``max_lag_bytes`` of the primary (loading → online)."""
    if not following(view, node_id):
        return False
    behind = lag(view, node_id)
    return behind is not None and behind <= settings.max_lag_bytes


def primary_lost(view: ClusterView, shard_id: str) -> str | None:
    """Why the shard's primary is lost, or ``None`` if it is not: its slot lease
    is gone *and* its sidecar is gone or reports its data node failed. A live
    primary without the lease (just assigned, or handing over) is not lost: its
    sidecar creates the lease, or the coordinator is waiting for it."""
    if shard_id in view.leases:
        return None
    shard = view.shard(shard_id)
    st = view.status(shard.primary)
    if st is None:
        return "its slot lease and its sidecar are gone"
    if observed_health(st) is Health.FAIL:
        return "its slot lease is gone and its data node failed"
    return None


def not_promotable(
    view: ClusterView, shard_id: str, node_id: str, settings: Settings, *, manual: bool = False
) -> str | None:
    """Why ``node_id`` may not become the shard's primary, or ``None`` if it may
    (DESIGN §3): a replica of the shard, in the served view ``online`` and
    STANDBY, alive, not hidden, not ``nofailover`` and, when writes wait for
    acknowledgements, a member of ``sync_replicas``."""
    shard = view.shard(shard_id)
    if node_id not in shard.replicas:
        return "it is not a replica of the shard"
    record = view.node(node_id)
    st = view.status(node_id)
    if st is None:
        return "its sidecar is gone"
    if record.nofailover:
        return "it is tagged nofailover"
    if record.hidden:
        return "it is hidden"
    if record.state is not NodeState.STANDBY or record.health is not Health.ONLINE:
        return f"it is {record.state.value}/{record.health.value}, not STANDBY/online"
    if observed_health(st) is not Health.ONLINE or st.role_applied != Role.REPLICA:
        return f"its sidecar reports {st.health} as {st.role_applied}"
    if settings.min_replicas_to_ack >= 1 and node_id not in shard.sync_replicas and not manual:
        return "it is not in sync_replicas"
    return None


def failover_candidates(
    view: ClusterView, shard_id: str, settings: Settings, *, manual: bool = False
) -> list[str]:
    """Promotable replicas, best first: highest replication offset, then
    priority, then a zone other than the lost primary's, then node id."""
    shard = view.shard(shard_id)
    lost_zone = view.node(shard.primary).zone

    def rank(node_id: str) -> tuple[int, int, int, str]:
        st = view.statuses[node_id]
        record = view.node(node_id)
        same_zone = int(bool(record.zone) and record.zone == lost_zone)
        return (-st.repl_offset, -record.priority, same_zone, node_id)

    eligible = [
        r
        for r in shard.replicas
        if not_promotable(view, shard_id, r, settings, manual=manual) is None
    ]
    return sorted(eligible, key=rank)


def transfer_candidates(view: ClusterView, shard_id: str, settings: Settings) -> list[str]:
    """Replicas for a leadership transfer without a named target, least loaded
    first: fewest primaries already on its host, then least behind, then
    priority, then node id."""
    shard = view.shard(shard_id)

    def rank(node_id: str) -> tuple[int, int, int, str]:
        record = view.node(node_id)
        behind = lag(view, node_id)
        return (
            view.primaries_on_host(record.addr),
            behind if behind is not None else 2**63,
            -record.priority,
            node_id,
        )

    eligible = [
        r
        for r in shard.replicas
        if not_promotable(view, shard_id, r, settings, manual=True) is None
    ]
    return sorted(eligible, key=rank)


__all__ = [
    "applied_epoch",
    "caught_up",
    "failover_candidates",
    "following",
    "lag",
    "left_shard",
    "not_promotable",
    "observed_health",
    "primary_lost",
    "primary_status",
    "transfer_candidates",
]
