"""Leadership transfer, the operator's failover (pure), DESIGN §3.

Best effort, in steps driven by the ``failover`` intent:

1. **Start** (:class:`StartHandoff`): the shard record gets
   ``handoff: {target, intent}``. The primary's sidecar stops writes on its
   data node (its write permit lapses) and reports ``writable: false``; it may
   also release ``leases/<shard>``.
2. **Complete** (:class:`CompleteHandoff`) once the primary has applied the
   handoff and is not writable, and the target's replication offset reached the
   primary's: the roles swap in one transaction (the slot lease must be as read:
   absent, or still held by the old primary, whose sidecar then releases it; the
   new primary's sidecar creates it before taking writes). The old primary
   stays in the shard as a replica (same replica_id: it holds exactly the new
   primary's data).
3. **Abort** (:class:`AbortHandoff`) when the target has not caught up by the
   deadline (``Policy.transfer_timeout``): the handoff is cleared and the old
   primary takes writes again. The intent is retried after a backoff
   (``transfer_backoff``, doubling) up to ``transfer_attempts`` times, each
   time choosing again (the least-loaded eligible replica) unless the operator
   named a target; then it fails.

Without a target, the least-loaded eligible replica is chosen
(:func:`coordinator.replication.transfer_candidates`). If the primary is lost
(before or during the transfer) no catch-up is possible: the target, or the
best failover candidate, is promoted at once (:class:`ManualFailover`). Manual
failovers work while the cluster is paused.
"""

from __future__ import annotations

from dataclasses import replace

from clusterstate.records import Settings
from clusterstate.topology import Health, NodeState, Role

from .actions import (
    AbortHandoff,
    CompleteHandoff,
    FinishIntent,
    NodeWrite,
    Proposal,
    ShardWrite,
    StartHandoff,
    Writes,
)
from .failover import manual_failover
from .intents import Intent, IntentKind, IntentState, Refusal, short
from .manual import refusal
from .migrations import committing
from .policy import Policy
from .replication import (
    failover_candidates,
    not_promotable,
    primary_lost,
    transfer_candidates,
)
from .view import ClusterView, Handoff


def plan_transfers(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    for intent in view.intents.values():
        if intent.kind is not IntentKind.FAILOVER:
            continue
        if intent.state is IntentState.PENDING:
            _pending(view, settings, now, policy, intent, out)
        elif intent.state is IntentState.RUNNING:
            _running(view, settings, now, policy, intent, out)
    return out


def _fail(intent: Intent, now: float, refused: Refusal) -> FinishIntent:
    return FinishIntent(
        why=f"{intent.subject} failed: {refused.message}",
        writes=Writes(intents=(intent.failed(now, refused),)),
        intent=intent.id,
    )


def _pending(
    view: ClusterView,
    settings: Settings,
    now: float,
    policy: Policy,
    intent: Intent,
    out: Proposal,
) -> None:
    if now < intent.not_before:
        out.notes.append(f"{intent.subject}: next attempt in {intent.not_before - now:.1f}s")
        return
    refused = refusal(view, intent)
    if refused is not None:
        out.actions.append(_fail(intent, now, refused))
        return
    if intent.shard in committing(view):
        out.notes.append(f"{intent.subject}: waits for a copied migration's commit")
        return
    if primary_lost(view, intent.shard) is not None:
        target = intent.target or next(iter(failover_candidates(view, intent.shard, settings)), "")
        if not target:
            out.actions.append(
                _fail(
                    intent,
                    now,
                    Refusal(409, "no_candidate", "the primary is lost and no replica can be promoted"),
                )
            )
            return
        out.actions.append(manual_failover(view, settings, intent, target, now))
        return
    target = intent.target or transfer_candidates(view, intent.shard, settings)[0]
    entry = view.shards[intent.shard]
    attempt = intent.attempts + 1
    running = intent.with_(
        state=IntentState.RUNNING,
        updated=now,
        attempts=attempt,
        chosen=target,
        deadline=now + policy.transfer_timeout,
        not_before=0.0,
        message=f"attempt {attempt}: primary stops writes; waiting for {short(target)} to catch up",
    )
    out.actions.append(
        StartHandoff(
            why=(
                f"operator failover of shard {short(intent.shard)}: attempt {attempt}, "
                f"{short(entry.record.primary)} stops writes until {short(target)} catches up"
            ),
            writes=Writes(
                shards=(
                    ShardWrite(entry.record, Handoff(target, intent.id), entry.primary_since),
                ),
                intents=(running,),
            ),
            shard=intent.shard,
            target=target,
            intent=intent.id,
            attempt=attempt,
        )
    )


def _running(
    view: ClusterView,
    settings: Settings,
    now: float,
    policy: Policy,
    intent: Intent,
    out: Proposal,
) -> None:
    entry = view.shards.get(intent.shard)
    target = intent.chosen
    if entry is None:
        out.actions.append(
            _fail(intent, now, Refusal(404, "unknown_shard", "the shard no longer exists"))
        )
        return
    shard = entry.record
    if entry.handoff is None or entry.handoff.intent != intent.id:
        if shard.primary == target:
            out.actions.append(
                FinishIntent(
                    why=f"{intent.subject}: {short(target)} is the primary",
                    writes=Writes(intents=(intent.done(now, f"{short(target)} is the primary"),)),
                    intent=intent.id,
                )
            )
        else:
            out.actions.append(
                _fail(
                    intent,
                    now,
                    Refusal(
                        409,
                        "interrupted",
                        f"the transfer was interrupted; {short(shard.primary)} is the primary",
                    ),
                )
            )
        return
    if primary_lost(view, intent.shard) is not None:
        if not_promotable(view, intent.shard, target, settings, manual=True) is None:
            out.actions.append(manual_failover(view, settings, intent, target, now))
        else:
            out.actions.append(_abort(view, policy, intent, now, "the primary was lost"))
        return
    pst, tst = view.status(shard.primary), view.status(target)
    fenced = pst is not None and not pst.writable and pst.epoch_applied >= entry.epoch
    caught = (
        pst is not None
        and tst is not None
        and tst.role_applied == Role.REPLICA
        and tst.repl_offset >= pst.repl_offset
        and not (tst.replid and pst.replid and tst.replid != pst.replid)
    )
    eligible = not_promotable(view, intent.shard, target, settings, manual=True)
    if fenced and caught and eligible is None:
        out.actions.append(_complete(view, intent, now))
        return
    if now >= intent.deadline:
        if eligible is not None:
            why = f"{short(target)} can no longer take over: {eligible}"
        elif not fenced:
            why = "the primary did not stop writes in time"
        else:
            behind = (pst.repl_offset - tst.repl_offset) if pst and tst else "?"
            why = f"{short(target)} did not catch up in time ({behind} bytes behind)"
        out.actions.append(_abort(view, policy, intent, now, why))
        return
    state = "primary fenced" if fenced else "waiting for the primary to stop writes"
    out.notes.append(
        f"{intent.subject}: {state}, {short(target)} "
        f"{'caught up' if caught else 'catching up'}, {intent.deadline - now:.1f}s left"
    )


def _complete(view: ClusterView, intent: Intent, now: float) -> CompleteHandoff:
    entry = view.shards[intent.shard]
    shard = entry.record
    target = intent.chosen
    old = view.nodes[shard.primary]
    new = view.nodes[target]
    replicas = tuple(r for r in shard.replicas if r != target) + (old.record.id,)
    promoted = replace(
        new.record, role=Role.PRIMARY, state=NodeState.ACTIVE, health=Health.ONLINE, hidden=False
    )
    demoted = replace(
        old.record, role=Role.REPLICA, state=NodeState.RECOVERING, health=Health.LOADING
    )
    message = f"{short(target)} took over from {short(old.record.id)}"
    return CompleteHandoff(
        why=f"operator failover of shard {short(intent.shard)}: {message} (caught up, no loss)",
        writes=Writes(
            shards=(ShardWrite(replace(shard, primary=target, replicas=replicas, sync_replicas=())),),
            nodes=(NodeWrite(promoted, since=new.since), NodeWrite(demoted)),
            lease_as_read=(intent.shard,),
            intents=(intent.done(now, message),),
        ),
        shard=intent.shard,
        promoted=target,
        demoted=old.record.id,
        intent=intent.id,
    )


def _abort(
    view: ClusterView, policy: Policy, intent: Intent, now: float, why: str
) -> AbortHandoff:
    entry = view.shards[intent.shard]
    retry = intent.attempts < policy.transfer_attempts
    if retry:
        wait = policy.backoff(intent.attempts)
        updated = intent.with_(
            state=IntentState.PENDING,
            updated=now,
            not_before=now + wait,
            deadline=0.0,
            chosen="",
            message=f"attempt {intent.attempts} failed: {why}; retrying in {wait:g}s",
        )
        tail = f"retrying in {wait:g}s"
    else:
        updated = intent.failed(
            now,
            Refusal(
                409,
                "transfer_failed",
                f"gave up after {intent.attempts} attempt(s); last: {why}",
            ),
        )
        tail = "giving up"
    return AbortHandoff(
        why=(
            f"operator failover of shard {short(intent.shard)}: attempt {intent.attempts} "
            f"abandoned ({why}); {short(entry.record.primary)} takes writes again, {tail}"
        ),
        writes=Writes(
            shards=(ShardWrite(entry.record, None, entry.primary_since),),
            intents=(updated,),
        ),
        shard=intent.shard,
        target=intent.chosen,
        intent=intent.id,
        retry=retry,
    )


__all__ = ["plan_transfers"]
