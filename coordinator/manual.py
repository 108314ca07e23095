"""Operator intents on nodes (pure): hide, unhide, tag, remove; and the checks
every intent must pass, shared by the API (which answers at once) and the
planner (which records a refusal in the intent when things changed since).

- ``hide``: a replica or a spare only; hiding a slot-owning primary is refused
  (409): clients must reach it (DESIGN §2).
- ``unhide``: clears the flag whoever set it (operator, loading policy, removal).
- ``tag``: zone, nofailover, priority, live.
- ``remove``: a primary is refused (409: fail over first). A replica leaves its
  shard (its replica_id is retired for good: ``replica-ids/`` keeps it) and
  becomes a spare, hidden so that repair does not pick it again at once
  (``unhide`` makes it available); a node whose sidecar is gone is forgotten
  (``nodes/<id>`` deleted; it registers again as a new spare if it comes back).
"""

from __future__ import annotations

from dataclasses import replace

from clusterstate.records import Settings
from clusterstate.topology import NodeState, Role

from .actions import FinishIntent, NodeWrite, Proposal, RemoveNode, SetNodeFlags, ShardWrite, Writes
from .intents import Intent, IntentKind, IntentState, Refusal, short
from .policy import Policy
from .replication import not_promotable, observed_health, transfer_candidates
from .view import HIDDEN_BY_OPERATOR, HIDDEN_BY_REMOVAL, ClusterView


def refusal(view: ClusterView, intent: Intent) -> Refusal | None:
    """Why ``intent`` cannot be carried out on ``view``, or ``None``."""
    if intent.kind is IntentKind.FAILOVER:
        return _failover_refusal(view, intent)
    if intent.kind is IntentKind.MOVE:
        from .drain import move_refusal

        return move_refusal(view, intent)
    if intent.node not in view.nodes:
        return Refusal(404, "unknown_node", f"no node {intent.node!r} in the cluster")
    record = view.node(intent.node)
    if intent.kind is IntentKind.HIDE and record.role is Role.PRIMARY:
        if view.shard(record.shard).slots:
            return Refusal(
                409,
                "primary_owns_slots",
                f"node {short(record.id)} is the primary of shard {short(record.shard)}, which "
                "owns slots: clients must reach it (fail over first)",
            )
    if intent.kind is IntentKind.TAG and intent.tags.empty:
        return Refusal(400, "bad_request", "no tag to change (zone, nofailover, priority)")
    if intent.kind is IntentKind.REMOVE and record.role is Role.PRIMARY:
        return Refusal(
            409,
            "is_primary",
            f"node {short(record.id)} is the primary of shard {short(record.shard)}: "
            "fail over first",
        )
    return None


def _failover_refusal(view: ClusterView, intent: Intent) -> Refusal | None:
    if intent.shard not in view.shards:
        return Refusal(404, "unknown_shard", f"no shard {intent.shard!r} in the cluster")
    entry = view.shards[intent.shard]
    if entry.handoff is not None and entry.handoff.intent != intent.id:
        return Refusal(
            409,
            "transfer_in_progress",
            f"shard {short(intent.shard)} is already handing over to {short(entry.handoff.target)}",
        )
    for other in view.intents.values():
        if (
            other.id < intent.id
            and other.kind is IntentKind.FAILOVER
            and other.shard == intent.shard
            and not other.state.finished
        ):
            return Refusal(
                409,
                "transfer_in_progress",
                f"a failover of shard {short(intent.shard)} is already under way ({other.id})",
            )
    settings = view.settings
    if intent.target:
        if intent.target not in view.nodes:
            return Refusal(404, "unknown_node", f"no node {intent.target!r} in the cluster")
        why = not_promotable(view, intent.shard, intent.target, settings, manual=True)
        if why is not None:
            return Refusal(
                409, "not_eligible", f"node {short(intent.target)} cannot take over: {why}"
            )
    elif not transfer_candidates(view, intent.shard, settings):
        return Refusal(
            409, "no_candidate", f"shard {short(intent.shard)} has no replica that can take over"
        )
    return None


def plan_node_intents(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    out = Proposal()
    for intent in view.intents.values():
        if intent.state is not IntentState.PENDING or intent.kind in (
                IntentKind.FAILOVER, IntentKind.MOVE):
            continue
        refused = refusal(view, intent)
        if refused is not None:
            out.actions.append(
                FinishIntent(
                    why=f"refused {intent.subject}: {refused.message}",
                    writes=Writes(intents=(intent.failed(now, refused),)),
                    intent=intent.id,
                )
            )
            continue
        out.actions.append(_carry_out(view, intent, now))
    return out


def _carry_out(view: ClusterView, intent: Intent, now: float) -> SetNodeFlags | RemoveNode | FinishIntent:
    entry = view.nodes[intent.node]
    r = entry.record
    if intent.kind is IntentKind.REMOVE:
        return _remove(view, intent, now)
    hidden_by = entry.hidden_by
    if intent.kind is IntentKind.HIDE:
        new, hidden_by = replace(r, hidden=True), HIDDEN_BY_OPERATOR
    elif intent.kind is IntentKind.UNHIDE:
        new, hidden_by = replace(r, hidden=False), ""
    else:
        t = intent.tags
        new = replace(
            r,
            zone=r.zone if t.zone is None else t.zone,
            nofailover=r.nofailover if t.nofailover is None else t.nofailover,
            priority=r.priority if t.priority is None else t.priority,
        )
    if new == r and hidden_by == entry.hidden_by:
        return FinishIntent(
            why=f"{intent.subject}: nothing to change",
            writes=Writes(intents=(intent.done(now, "nothing to change"),)),
            intent=intent.id,
        )
    what = intent.subject if intent.kind is not IntentKind.TAG else (
        f"tag node {short(r.id)} {_tags_phrase(intent)}"
    )
    return SetNodeFlags(
        why=f"operator: {what}",
        writes=Writes(
            nodes=(NodeWrite.kept(entry, new, hidden_by),),
            intents=(intent.done(now, what),),
        ),
        node=r.id,
        intent=intent.id,
    )


def _tags_phrase(intent: Intent) -> str:
    return " ".join(f"{k}={v}" for k, v in intent.tags.to_dict().items())


def _remove(view: ClusterView, intent: Intent, now: float) -> RemoveNode:
    entry = view.nodes[intent.node]
    r = entry.record
    shards: tuple[ShardWrite, ...] = ()
    was = f"replica of shard {short(r.shard)}" if r.role is Role.REPLICA else "spare"
    if r.role is Role.REPLICA:
        s = view.shards[r.shard]
        shards = (
            ShardWrite.kept(
                s,
                replace(
                    s.record,
                    replicas=tuple(n for n in s.record.replicas if n != r.id),
                    sync_replicas=tuple(n for n in s.record.sync_replicas if n != r.id),
                ),
            ),
        )
    if not view.alive(r.id):
        message = f"removed node {short(r.id)} ({was}); its sidecar is gone, so it is forgotten"
        return RemoveNode(
            why=f"operator: {message}",
            writes=Writes(
                shards=shards, forget_nodes=(r.id,), intents=(intent.done(now, message),)
            ),
            node=r.id,
            intent=intent.id,
            forgotten=True,
        )
    spare = replace(
        r,
        shard="",
        role=Role.NONE,
        state=NodeState.ONLINE,
        health=observed_health(view.statuses[r.id]),
        hidden=True,
        replica_id=0,
    )
    message = f"removed node {short(r.id)} ({was}); it stays as a hidden spare (unhide to reuse it)"
    return RemoveNode(
        why=f"operator: {message}",
        writes=Writes(
            shards=shards,
            nodes=(NodeWrite(spare, HIDDEN_BY_REMOVAL),),
            intents=(intent.done(now, message),),
        ),
        node=r.id,
        intent=intent.id,
        forgotten=False,
    )


__all__ = ["plan_node_intents", "refusal"]
