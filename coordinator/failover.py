"""Automatic failover (pure), DESIGN §3.

A shard has lost its primary when ``leases/<shard>`` is absent and the
primary's sidecar is gone or reports its data node failed
(:func:`coordinator.replication.primary_lost`). The coordinator then promotes
the best replica (:func:`coordinator.replication.failover_candidates`:
``online``, STANDBY, alive, not hidden, not ``nofailover``, a member of
``sync_replicas`` when writes wait for acknowledgements; highest offset, then
priority, then another zone than the lost primary's) in one transaction that
requires ``leases/<shard>`` to be absent still. The promoted node's sidecar
creates the lease before its data node takes writes.

The lost primary stays in the shard as a replica with a **new** replica_id
(it must resync in full: it may hold writes the new primary never saw):
OFFLINE while its sidecar is gone, RECOVERING when it is back, then STANDBY
once caught up. ``sync_replicas`` is emptied: replicas re-enter it once they
follow the new primary. Paused: nothing is promoted automatically.
"""

from __future__ import annotations

from dataclasses import replace

from clusterstate.records import Settings
from clusterstate.topology import Health, NodeState, Role

from .actions import Failover, ManualFailover, NodeWrite, Proposal, ShardWrite, Writes
from .intents import Intent, short
from .migrations import committing
from .placement import replica_id_for
from .policy import Policy
from .replication import failover_candidates, observed_health, primary_lost
from .view import HIDDEN_BY_POLICY, ClusterView


def promotion(
    view: ClusterView,
    settings: Settings,
    shard_id: str,
    promoted: str,
    *,
    intents: tuple[Intent, ...] = (),
) -> tuple[Writes, int]:
    """The records of a failover of ``shard_id`` to ``promoted`` (lease absent),
    and the demoted primary's new replica_id."""
    entry = view.shards[shard_id]
    shard = entry.record
    old = view.nodes[shard.primary]
    new = view.nodes[promoted]
    rid = replica_id_for(old.record.id, view.epoch, view.replica_ids)
    st = view.status(old.record.id)
    if st is None:
        state, health = NodeState.OFFLINE, Health.FAIL
    elif observed_health(st) is Health.FAIL:
        state, health = NodeState.RECOVERING, Health.FAIL
    else:
        state, health = NodeState.RECOVERING, Health.LOADING
    hide = settings.hide_while_loading
    demoted = replace(
        old.record,
        role=Role.REPLICA,
        state=state,
        health=health,
        hidden=hide,
        replica_id=rid,
    )
    promoted_record = replace(
        new.record, role=Role.PRIMARY, state=NodeState.ACTIVE, health=Health.ONLINE, hidden=False
    )
    replicas = tuple(r for r in shard.replicas if r != promoted) + (old.record.id,)
    writes = Writes(
        shards=(ShardWrite(replace(shard, primary=promoted, replicas=replicas, sync_replicas=())),),
        nodes=(
            NodeWrite(promoted_record, since=new.since),
            NodeWrite(demoted, HIDDEN_BY_POLICY if hide else ""),
        ),
        replica_ids=(rid,),
        lease_absent=(shard_id,),
        intents=intents,
    )
    return writes, rid


def plan_failover(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    moving = committing(view)
    for shard_id, entry in view.shards.items():
        reason = primary_lost(view, shard_id)
        if reason is None:
            continue
        lost = short(entry.record.primary)
        if shard_id in moving:
            out.notes.append(f"shard {short(shard_id)} lost its primary {lost} ({reason}): "
                             "failover waits for a copied migration's commit")
            continue
        if settings.pause:
            out.notes.append(f"paused: shard {short(shard_id)} lost its primary {lost} ({reason})")
            continue
        candidates = failover_candidates(view, shard_id, settings)
        if not candidates:
            out.notes.append(
                f"shard {short(shard_id)} lost its primary {lost} ({reason}) "
                "and no replica can be promoted"
            )
            continue
        best = candidates[0]
        writes, rid = promotion(view, settings, shard_id, best)
        offset = view.statuses[best].repl_offset
        out.actions.append(
            Failover(
                why=(
                    f"shard {short(shard_id)} lost its primary {lost} ({reason}): promoting "
                    f"{short(best)} at offset {offset} (best of {len(candidates)})"
                ),
                writes=writes,
                shard=shard_id,
                promoted=best,
                demoted=entry.record.primary,
                replica_id=rid,
            )
        )
    return out


def manual_failover(
    view: ClusterView, settings: Settings, intent: Intent, target: str, now: float
) -> ManualFailover:
    """An operator's failover of a shard whose primary is already lost: promote
    ``target`` now (no catch-up is possible) and finish the intent."""
    shard = view.shard(intent.shard)
    reason = primary_lost(view, intent.shard) or "its primary is lost"
    epoch_note = f"promoted {short(target)}: the primary {short(shard.primary)} was lost"
    writes, rid = promotion(
        view, settings, intent.shard, target, intents=(intent.done(now, epoch_note),)
    )
    return ManualFailover(
        why=(
            f"operator failover of shard {short(intent.shard)} ({reason}): "
            f"promoting {short(target)}"
        ),
        writes=writes,
        shard=intent.shard,
        promoted=target,
        demoted=shard.primary,
        replica_id=rid,
        intent=intent.id,
    )


__all__ = ["manual_failover", "plan_failover", "promotion"]
