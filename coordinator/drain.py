"""Drain a node and move a shard (pure), driven by ``move`` intents.

``slotkeeper drain NODE_ID`` and ``slotkeeper move-shard SHARD_ID --to ID,…``
replace members of a shard in the order that never weakens it (issue: scale
out, scale in, rebalancing and node draining):

1. **Join** (:class:`JoinMembers`): the new nodes (given, or for a drain the
   best spare away from the shard's zones and hosts) join as replicas with new
   replica_ids, RECOVERING ``loading``: not promotable until they caught up.
2. **Wait** until every new node is STANDBY ``online`` (the health rules move
   it there once it caught up), at most ``Policy.move_timeout``.
3. **Transfer** leadership if the primary is leaving: a ``failover`` intent
   (its own retries and backoff, :mod:`coordinator.transfer`) to the first new
   node; the move waits for its outcome.
4. **Leave** (:class:`LeaveMembers`): the leaving nodes leave the shard as
   hidden spares with their replica_id retired (a node that comes back joins
   with a new replica_id and a full sync), and the intent is done.

A drain of a spare hides it (it is not used by repair or scale out until an
operator unhides it). Manual: these steps run while the cluster is paused.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from typing import ClassVar

from clusterstate.records import Settings
from clusterstate.topology import Health, NodeState, Role

from .actions import Action, FinishIntent, NodeWrite, Proposal, ShardWrite, Writes
from .bootstrap import ready_spares
from .intents import Intent, IntentKind, IntentState, Refusal, short
from .placement import pick_replica, replica_id_for
from .policy import Policy
from .replication import left_shard
from .view import HIDDEN_BY_POLICY, HIDDEN_BY_REMOVAL, ClusterView


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinMembers(Action):
    kind: ClassVar[str] = "move-join"
    automatic: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveMembers(Action):
    kind: ClassVar[str] = "move-leave"
    automatic: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTransfer(Action):
    kind: ClassVar[str] = "move-transfer"
    automatic: ClassVar[bool] = False


def move_refusal(view: ClusterView, intent: Intent) -> Refusal | None:
    """Why a ``move`` intent cannot be carried out on ``view`` (checked by the
    API at once and by the planner when it starts)."""
    if intent.node:
        if intent.node not in view.nodes:
            return Refusal(404, "unknown_node", f"no node {intent.node!r} in the cluster")
        if view.node(intent.node).role is Role.NONE:
            return None  # a spare: drained by hiding it
    if intent.shard not in view.shards:
        return Refusal(404, "unknown_shard", f"no shard {intent.shard!r} in the cluster")
    shard = view.shards[intent.shard].record
    members = {shard.primary, *shard.replicas}
    if intent.node and intent.node not in members:
        return Refusal(409, "moved", f"node {short(intent.node)} is no longer in shard "
                       f"{short(intent.shard)}")
    if len(set(intent.nodes)) != len(intent.nodes):
        return Refusal(400, "bad_request", "a node is listed twice")
    spares = {n.id for n in ready_spares(view)}
    for n in intent.nodes:
        if n not in view.nodes:
            return Refusal(404, "unknown_node", f"no node {n!r} in the cluster")
        if n not in spares and intent.state is IntentState.PENDING:
            return Refusal(409, "not_eligible",
                           f"node {short(n)} is not a spare ONLINE node (alive, online, visible)")
    if not intent.node and not intent.nodes:
        return Refusal(400, "bad_request", "move-shard needs the nodes to move the shard to")
    for other in view.intents.values():
        if other.id < intent.id and other.kind is IntentKind.MOVE and not other.state.finished \
                and other.shard == intent.shard:
            return Refusal(409, "move_in_progress",
                           f"a move of shard {short(intent.shard)} is already under way "
                           f"({other.id})")
    return None


def plan_moves(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    for intent in sorted(view.intents.values(), key=lambda i: i.id):
        if intent.kind is not IntentKind.MOVE or intent.state.finished:
            continue
        if intent.state is IntentState.PENDING:
            out.actions.append(_start(view, settings, now, intent))
        else:
            step = _step(view, now, policy, intent)
            if isinstance(step, str):
                out.notes.append(step)
            else:
                out.actions.append(step)
    return out


def _fail(intent: Intent, now: float, refused: Refusal) -> FinishIntent:
    return FinishIntent(why=f"{intent.subject} failed: {refused.message}",
                        writes=Writes(intents=(intent.failed(now, refused),)), intent=intent.id)


def _start(view: ClusterView, settings: Settings, now: float, intent: Intent) -> Action:
    refused = move_refusal(view, intent)
    if refused is not None:
        return _fail(intent, now, refused)
    if intent.node and view.node(intent.node).role is Role.NONE:
        spare = view.nodes[intent.node]
        hidden = replace(spare.record, hidden=True)
        return LeaveMembers(
            why=f"operator: {intent.subject}: a spare, now hidden (unhide to use it again)",
            writes=Writes(nodes=(NodeWrite.kept(spare, hidden, HIDDEN_BY_REMOVAL),),
                          intents=(intent.done(now, f"spare {short(intent.node)} hidden"),)))
    entry = view.shards[intent.shard]
    shard = entry.record
    members = [view.node(shard.primary), *(view.node(r) for r in shard.replicas)]
    leaving = (intent.node,) if intent.node else (shard.primary, *shard.replicas)
    joining = list(intent.nodes)
    if not joining:
        stay = [m for m in members if m.id not in leaving]
        host_load: Counter[str] = Counter(
            e.record.addr for e in view.nodes.values() if e.record.role is not Role.NONE)
        best = pick_replica(ready_spares(view), stay or members, host_load)
        if best is None:
            return _fail(intent, now, Refusal(409, "no_spare",
                                              "no spare ONLINE node to take the node's place"))
        joining = [best.id]
    taken = set(view.replica_ids)
    nodes: list[NodeWrite] = []
    ids: list[int] = []
    hide = settings.hide_while_loading
    for node_id in joining:
        rid = replica_id_for(node_id, view.epoch, taken)
        taken.add(rid)
        ids.append(rid)
        nodes.append(NodeWrite(replace(
            view.node(node_id), shard=shard.id, role=Role.REPLICA, state=NodeState.RECOVERING,
            health=Health.LOADING, hidden=hide, replica_id=rid), HIDDEN_BY_POLICY if hide else ""))
    running = intent.with_(state=IntentState.RUNNING, updated=now, nodes=tuple(joining),
                           leaving=tuple(leaving), deadline=now + _timeout(intent),
                           message=f"{', '.join(map(short, joining))} joining as replica(s)")
    return JoinMembers(
        why=f"operator: {intent.subject}: {', '.join(map(short, joining))} join shard "
        f"{short(shard.id)} as replica(s) with new replica_ids",
        writes=Writes(
            nodes=tuple(nodes),
            shards=(ShardWrite.kept(entry, replace(shard, replicas=(*shard.replicas, *joining))),),
            replica_ids=tuple(ids), intents=(running,)))


def _timeout(intent: Intent) -> float:
    return 1800.0  # a full sync of a big shard can take minutes: generous, but bounded


def _caught_up(view: ClusterView, node_id: str) -> bool:
    entry = view.nodes.get(node_id)
    if entry is None:
        return False
    r = entry.record
    ready = r.state is NodeState.STANDBY or (r.role is Role.PRIMARY and r.state is NodeState.ACTIVE)
    return view.alive(node_id) and ready and r.health is Health.ONLINE


def _step(view: ClusterView, now: float, policy: Policy, intent: Intent) -> Action | str:
    entry = view.shards.get(intent.shard)
    if entry is None:
        return _fail(intent, now, Refusal(404, "unknown_shard", "the shard no longer exists"))
    shard = entry.record
    members = {shard.primary, *shard.replicas}
    gone = [n for n in intent.nodes if n not in members]
    if gone:
        return _fail(intent, now, Refusal(409, "interrupted",
                                          f"node {short(gone[0])} left the shard meanwhile"))
    waiting = [n for n in intent.nodes if not _caught_up(view, n)]
    if waiting:
        if now >= intent.deadline > 0:
            return _fail(intent, now, Refusal(409, "timeout", f"{short(waiting[0])} did not "
                                              "catch up in time; it stays a replica"))
        return f"{intent.subject}: waiting for {', '.join(map(short, waiting))} to catch up"
    if shard.primary in intent.leaving:
        child = view.intents.get(intent.child) if intent.child else None
        if child is not None and not child.state.finished:
            return f"{intent.subject}: leadership transfer under way ({child.message or 'pending'})"
        if child is not None and child.state is IntentState.FAILED:
            return _fail(intent, now, Refusal(409, "transfer_failed",
                                              f"leadership transfer failed: {child.message}"))
        attempt = intent.attempts + 1
        tid = _child_id(intent, attempt)
        transfer = Intent(id=tid, kind=IntentKind.FAILOVER, shard=shard.id,
                          target=intent.nodes[0], created=now, updated=now)
        updated = intent.with_(child=tid, attempts=attempt, updated=now,
                               message=f"leadership transfer to {short(intent.nodes[0])}")
        return StartTransfer(
            why=f"operator: {intent.subject}: the primary leaves: transfer to "
            f"{short(intent.nodes[0])} first",
            writes=Writes(intents=(updated, transfer)))
    leaving = [n for n in intent.leaving if n in members]
    nodes = [NodeWrite(left_shard(view, n, hidden=True), HIDDEN_BY_REMOVAL) for n in leaving]
    left = set(leaving)
    new_shard = replace(shard, replicas=tuple(r for r in shard.replicas if r not in left),
                        sync_replicas=tuple(r for r in shard.sync_replicas if r not in left))
    message = (f"{', '.join(map(short, leaving))} left shard {short(shard.id)} (hidden spares; "
               f"unhide to reuse); members now {short(shard.primary)}"
               + "".join(f", {short(r)}" for r in new_shard.replicas))
    return LeaveMembers(
        why=f"operator: {intent.subject}: {message}",
        writes=Writes(nodes=tuple(nodes), shards=(ShardWrite.kept(entry, new_shard),),
                      intents=(intent.done(now, message),)))


def _child_id(intent: Intent, attempt: int) -> str:
    digest = hashlib.sha1(f"{intent.id}|transfer|{attempt}".encode()).hexdigest()[:8]
    return f"{intent.id.split('-')[0]}-{digest}"


__all__ = ["JoinMembers", "LeaveMembers", "StartTransfer", "move_refusal", "plan_moves"]
