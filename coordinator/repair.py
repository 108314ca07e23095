"""Repair (pure): a shard with fewer replicas than ``settings.replicas`` gets a
spare as a new replica.

A spare qualifies when its sidecar is alive, its record is ONLINE ``online``
and it is not hidden (a removed node stays hidden until an operator unhides
it). The best spare is away from the shard's zones and hosts
(:func:`coordinator.placement.pick_replica`). It joins with a **new**
replica_id (never one used before: ``replica-ids/`` keeps them all), as a
RECOVERING ``loading`` replica that syncs in full, hidden while loading when
``hide_while_loading``. One spare per shard per cycle; shards whose primary is
down or that are handing over wait. Paused: no repair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from clusterstate.records import Settings
from clusterstate.topology import Health, NodeState, Role

from .actions import AddReplica, NodeWrite, Proposal, ShardWrite, Writes
from .bootstrap import ready_spares
from .intents import short
from .placement import pick_replica, replica_id_for
from .policy import Policy
from .view import HIDDEN_BY_POLICY, ClusterView


def plan_repair(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    if not view.shards:
        return out
    short_of = [
        e for e in view.shards.values() if len(e.record.replicas) < settings.replicas
    ]
    if not short_of:
        return out
    if settings.pause:
        out.notes.append(f"paused: {len(short_of)} shard(s) short of replicas")
        return out
    pool = ready_spares(view)
    host_load: Counter[str] = Counter(
        e.record.addr for e in view.nodes.values() if e.record.role is not Role.NONE
    )
    taken = set(view.replica_ids)
    for entry in short_of:
        shard = entry.record
        primary = view.node(shard.primary)
        have = f"{len(shard.replicas)} of {settings.replicas} replicas"
        if entry.handoff is not None or not view.alive(primary.id):
            out.notes.append(f"shard {short(shard.id)} has {have}; waiting for its primary")
            continue
        members = [primary, *(view.node(r) for r in shard.replicas)]
        best = pick_replica(pool, members, host_load)
        if best is None:
            out.notes.append(f"shard {short(shard.id)} has {have} and no spare is available")
            continue
        pool.remove(best)
        host_load[best.addr] += 1
        rid = replica_id_for(best.id, view.epoch, taken)
        taken.add(rid)
        hide = settings.hide_while_loading
        joined = replace(
            best,
            shard=shard.id,
            role=Role.REPLICA,
            state=NodeState.RECOVERING,
            health=Health.LOADING,
            hidden=hide,
            replica_id=rid,
        )
        out.actions.append(
            AddReplica(
                why=(
                    f"shard {short(shard.id)} has {have}: adding spare {short(best.id)}"
                    f"{' (zone ' + best.zone + ')' if best.zone else ''} with a new replica_id"
                ),
                writes=Writes(
                    nodes=(NodeWrite(joined, HIDDEN_BY_POLICY if hide else ""),),
                    shards=(
                        ShardWrite.kept(entry, replace(shard, replicas=(*shard.replicas, best.id))),
                    ),
                    replica_ids=(rid,),
                ),
                shard=shard.id,
                node=best.id,
                replica_id=rid,
            )
        )
    return out


__all__ = ["plan_repair"]
