"""Cold start (pure): when the cluster has no shards and the expected members
are ONLINE, create the shards in one transaction.

Expected members: ``settings.bootstrap_members`` (a static list of node ids:
all of them must be ONLINE; they make ``bootstrap_primaries`` shards and the
rest are spread as replicas), or else any ``bootstrap_primaries × (1 +
bootstrap_replicas)`` ONLINE spares (extra ones stay spares). A member is
ONLINE when its sidecar is alive, its record ONLINE and ``online``, and it is
not hidden.

Shards get balanced slot ranges; primaries are spread over zones then hosts;
each shard's replicas go to other zones and hosts than its primary where the
members allow (:mod:`coordinator.placement`). Every member gets a new
replica_id. Primaries start ACTIVE; replicas RECOVERING ``loading`` (hidden
while loading when ``hide_while_loading``), and the health rules take them to
STANDBY once they caught up.
"""

from __future__ import annotations

from dataclasses import replace

from clusterstate.layout import balanced_ranges
from clusterstate.records import Settings
from clusterstate.topology import Health, NodeRecord, NodeState, Role, ShardRecord

from .actions import Bootstrap, NodeWrite, Proposal, ShardWrite, Writes
from .placement import replica_id_for, shard_id_for, spread
from .policy import Policy
from .view import HIDDEN_BY_POLICY, ClusterView


def ready_spares(view: ClusterView) -> list[NodeRecord]:
    return [
        n
        for n in view.spares()
        if view.alive(n.id)
        and n.state is NodeState.ONLINE
        and n.health is Health.ONLINE
        and not n.hidden
    ]


def plan_bootstrap(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    if view.shards:
        return out
    ready = ready_spares(view)
    if settings.bootstrap_members:
        listed = set(settings.bootstrap_members)
        pool = [n for n in ready if n.id in listed]
        if len(pool) < len(listed):
            out.notes.append(
                f"waiting to bootstrap: {len(pool)} of the {len(listed)} listed members online"
            )
            return out
        primaries = min(settings.bootstrap_primaries, len(pool))
        replicas = -(-(len(pool) - primaries) // primaries)  # ceil: spread them all
    else:
        primaries, replicas = settings.bootstrap_primaries, settings.bootstrap_replicas
        need = primaries * (1 + replicas)
        if len(ready) < need:
            out.notes.append(
                f"waiting to bootstrap: {len(ready)} of {need} expected members online "
                f"({primaries} primaries x {1 + replicas})"
            )
            return out
        pool = ready
    if settings.pause:
        out.notes.append("paused: not bootstrapping")
        return out

    placed = spread(pool, primaries, replicas)
    taken = set(view.replica_ids)
    shards: list[ShardWrite] = []
    nodes: list[NodeWrite] = []
    ids: list[int] = []

    def new_replica_id(node_id: str) -> int:
        rid = replica_id_for(node_id, view.epoch, taken)
        taken.add(rid)
        ids.append(rid)
        return rid

    for (primary, reps), slots in zip(placed, balanced_ranges(len(placed)), strict=True):
        shard_id = shard_id_for(primary.id, view.epoch)
        shards.append(
            ShardWrite(ShardRecord(shard_id, (slots,), primary.id, tuple(r.id for r in reps)))
        )
        nodes.append(
            NodeWrite(
                replace(
                    primary,
                    shard=shard_id,
                    role=Role.PRIMARY,
                    state=NodeState.ACTIVE,
                    health=Health.ONLINE,
                    replica_id=new_replica_id(primary.id),
                )
            )
        )
        for r in reps:
            hide = settings.hide_while_loading
            nodes.append(
                NodeWrite(
                    replace(
                        r,
                        shard=shard_id,
                        role=Role.REPLICA,
                        state=NodeState.RECOVERING,
                        health=Health.LOADING,
                        hidden=hide,
                        replica_id=new_replica_id(r.id),
                    ),
                    HIDDEN_BY_POLICY if hide else "",
                )
            )
    shape = f"{len(placed)} shards x {1 + replicas}" if replicas else f"{len(placed)} shards"
    out.actions.append(
        Bootstrap(
            why=f"bootstrapping {shape} from {sum(1 + len(r) for _, r in placed)} online members",
            writes=Writes(nodes=tuple(nodes), shards=tuple(shards), replica_ids=tuple(ids)),
            shards=tuple(s.record.id for s in shards),
            primaries=tuple(p.id for p, _ in placed),
            replicas=tuple(tuple(r.id for r in reps) for _, reps in placed),
        )
    )
    return out


__all__ = ["plan_bootstrap", "ready_spares"]
