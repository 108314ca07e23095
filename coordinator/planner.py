"""``plan(view, settings, now) -> Plan``: every decision of a cycle, pure.

The planner runs its parts in priority order (:data:`PLANNERS`) on the same
immutable view, then keeps the actions that do not overlap an earlier one
(actions of one cycle never write the same node, shard or intent, so each can
be checked against the revisions in the view); an overlapping action waits for
the next cycle, which the first action's write triggers at once. Each kept
action is folded into the topology and validated
(:class:`clusterstate.topology.Topology` construction): an action that would
produce an invalid served view is dropped and reported, never written.

While ``settings.pause`` is set, automatic actions (bootstrap, failover,
repair, epoch conflicts) are not planned; manual ones (operator intents) and
observations (registration, health) are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from clusterstate.records import Settings
from clusterstate.topology import Topology, TopologyError

from .actions import Action, ForgetIntents, InitSettings, Proposal, Writes
from .bootstrap import plan_bootstrap
from .drain import plan_moves
from .failover import plan_failover
from .health import plan_epoch_conflict, plan_health, plan_registration
from .manual import plan_node_intents
from .migrations import plan_forget_migrations, plan_migrations
from .policy import Policy
from .repair import plan_repair
from .transfer import plan_transfers
from .view import ClusterView

log = logging.getLogger(__name__)

Planner = Callable[[ClusterView, Settings, float, Policy], Proposal]


def plan_settings(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    if not view.settings_present and policy.initial_settings is not None:
        out.actions.append(
            InitSettings(
                why="no settings in etcd yet: writing the coordinator's initial settings",
                writes=Writes(settings=policy.initial_settings),
            )
        )
    return out


def plan_forget_intents(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    out = Proposal()
    finished = [i for i in view.intents.values() if i.state.finished]
    old = {i.id for i in finished if now - i.updated > policy.intent_retention}
    excess = len(finished) - policy.intents_kept
    if excess > 0:
        old.update(i.id for i in sorted(finished, key=lambda i: i.id)[:excess])
    if old:
        ids = tuple(sorted(old))
        out.actions.append(
            ForgetIntents(
                why=f"forgetting {len(ids)} finished intent(s)",
                writes=Writes(forget_intents=ids),
                intents=ids,
            )
        )
    return out


#: In priority order. Migrations (next issue) go after the operator intents and
#: before repair.
PLANNERS: tuple[tuple[str, Planner], ...] = (
    ("settings", plan_settings),
    ("failover", plan_failover),
    ("transfer", plan_transfers),
    ("operator", plan_node_intents),
    ("moves", plan_moves),
    ("migrations", plan_migrations),
    ("registration", plan_registration),
    ("health", plan_health),
    ("epoch", plan_epoch_conflict),
    ("bootstrap", plan_bootstrap),
    ("repair", plan_repair),
    ("intents", plan_forget_intents),
    ("migration-records", plan_forget_migrations),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions to apply this cycle, in order; those deferred to the next
    cycle (they overlap an earlier one); and notes on what the cluster waits for."""

    view: ClusterView
    actions: tuple[Action, ...]
    deferred: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()

    def sentence(self) -> str:
        """One sentence on what this plan does, then what the cluster waits for."""
        parts = [a.why for a in self.actions]
        if self.deferred:
            parts.append(f"{len(self.deferred)} more next cycle")
        parts.extend(self.notes)
        if parts:
            return "; ".join(parts)
        v = self.view
        alive = sum(1 for n in v.nodes if v.alive(n))
        return (
            f"nothing to do at epoch {v.epoch}: {len(v.shards)} shards, "
            f"{len(v.nodes)} nodes ({alive} alive)"
            + (", paused" if v.settings.pause else "")
        )


def plan(
    view: ClusterView, settings: Settings, now: float, policy: Policy | None = None
) -> Plan:
    policy = policy or Policy()
    proposal = Proposal()
    for name, planner in PLANNERS:
        part = planner(view, settings, now, policy)
        if settings.pause:
            kept = [a for a in part.actions if not a.automatic]
            if len(kept) != len(part.actions):
                log.error("%s planner proposed automatic actions while paused", name)
            part.actions = kept
        proposal.extend(part)
    chosen: list[Action] = []
    deferred: list[Action] = []
    notes = list(proposal.notes)
    touched: set[str] = set()
    topology = view.topology
    for action in proposal.actions:
        if action.touches & touched:
            deferred.append(action)
            continue
        try:
            topology = fold(view, topology, action.writes)
        except TopologyError as exc:
            log.error("dropping %s (%s): the result would be invalid: %s", action.kind, action.why, exc)
            notes.append(f"refused to write an invalid view ({action.kind}: {exc})")
            continue
        chosen.append(action)
        touched |= action.touches
    return Plan(view, tuple(chosen), tuple(deferred), tuple(notes))


def fold(view: ClusterView, topology: Topology, writes: Writes) -> Topology:
    """``topology`` with ``writes`` applied; raises ``TopologyError`` if invalid."""
    if not writes.topology:
        return topology
    nodes = {n.id: n for n in topology.nodes}
    shards = {s.id: s for s in topology.shards}
    for node_id in writes.forget_nodes:
        nodes.pop(node_id, None)
    for nw in writes.nodes:
        nodes[nw.record.id] = nw.record
    for sw in writes.shards:
        shards[sw.record.id] = sw.record
    for shard_id in writes.forget_shards:
        shards.pop(shard_id, None)
    epoch = writes.epoch if writes.epoch is not None else topology.epoch + 1
    gone = set(writes.forget_migrations)
    migrations = [m for m in topology.migrations if m.id not in gone]
    return Topology.build(epoch, shards.values(), nodes.values(), migrations)


__all__ = ["PLANNERS", "Plan", "Planner", "fold", "plan"]
