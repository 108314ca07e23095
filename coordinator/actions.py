"""What the planner decides: actions, each a frozen value with the records it
writes and one sentence saying why.

An action carries its :class:`Writes` in full (the new node and shard records,
replica ids to allocate, intents to update, slot leases that must be absent),
so the reconciler applies it without deciding anything, and planner tests
compare exact records. Actions of one cycle never write the same node, shard
or intent (:attr:`Action.touches`); the planner defers an overlapping one to
the next cycle.

Families: topology (registration, health, bootstrap, failover, leadership
transfer, repair, operator flags, removal), bookkeeping (intents, settings) and,
reserved for the next issue, :class:`MigrationAction` (plan, commit, abort of
slot migrations; the reconciler's dispatch table has room for their own
transaction builders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from clusterstate.records import Settings
from clusterstate.topology import NodeRecord, ShardRecord

from .intents import Intent
from .view import Handoff, NodeEntry, ShardEntry


@dataclass(frozen=True, slots=True)
class NodeWrite:
    """A node record to write. ``since``: the epoch of its current assignment;
    ``None`` when this write assigns it (the reconciler puts the new epoch)."""

    record: NodeRecord
    hidden_by: str = ""
    since: int | None = None

    @classmethod
    def kept(cls, entry: NodeEntry, record: NodeRecord, hidden_by: str | None = None) -> NodeWrite:
        """A rewrite of ``entry`` that keeps its assignment (health, flags, tags)."""
        by = entry.hidden_by if hidden_by is None else hidden_by
        return cls(record, by if record.hidden else "", entry.since)


@dataclass(frozen=True, slots=True)
class ShardWrite:
    """A shard record to write. ``primary_since``: ``None`` when this write
    assigns its primary (the reconciler puts the new epoch)."""

    record: ShardRecord
    handoff: Handoff | None = None
    primary_since: int | None = None

    @classmethod
    def kept(cls, entry: ShardEntry, record: ShardRecord) -> ShardWrite:
        """A rewrite of ``entry`` that keeps its primary and its handoff."""
        return cls(record, entry.handoff, entry.primary_since)


@dataclass(frozen=True, slots=True, kw_only=True)
class Writes:
    """The records an action writes, and the conditions its transaction needs
    besides the epoch and the revisions of the records it replaces."""

    nodes: tuple[NodeWrite, ...] = ()
    shards: tuple[ShardWrite, ...] = ()
    forget_nodes: tuple[str, ...] = ()  # nodes/<id> deleted
    forget_shards: tuple[str, ...] = ()  # shards/<id> deleted (a dissolved, empty shard)
    forget_migrations: tuple[str, ...] = ()  # migrations/<id> deleted (finished ones)
    replica_ids: tuple[int, ...] = ()  # replica-ids/<id> created (must be absent)
    intents: tuple[Intent, ...] = ()  # intents/<id> rewritten (outcome, progress)
    forget_intents: tuple[str, ...] = ()  # intents/<id> deleted
    lease_absent: tuple[str, ...] = ()  # shards whose leases/<shard> must be absent
    lease_as_read: tuple[str, ...] = ()  # shards whose leases/<shard> must be as read
    settings: Settings | None = None  # settings written (must be as read)
    epoch: int | None = None  # jump the epoch to this value (else current + 1)

    @property
    def topology(self) -> bool:
        """Changes ``nodes/`` or ``shards/``: bumps the epoch, writes history."""
        return bool(self.nodes or self.shards or self.forget_nodes or self.forget_shards
                    or self.forget_migrations or self.epoch is not None)

    def node(self, node_id: str) -> NodeRecord | None:
        return next((w.record for w in self.nodes if w.record.id == node_id), None)

    def shard(self, shard_id: str) -> ShardRecord | None:
        return next((w.record for w in self.shards if w.record.id == shard_id), None)

    def intent(self, intent_id: str) -> Intent | None:
        return next((i for i in self.intents if i.id == intent_id), None)

    def touches(self) -> frozenset[str]:
        out: set[str] = set()
        out.update(f"node:{w.record.id}" for w in self.nodes)
        out.update(f"node:{n}" for n in self.forget_nodes)
        out.update(f"shard:{w.record.id}" for w in self.shards)
        out.update(f"shard:{s}" for s in self.forget_shards)
        out.update(f"migration:{m}" for m in self.forget_migrations)
        out.update(f"intent:{i.id}" for i in self.intents)
        out.update(f"intent:{i}" for i in self.forget_intents)
        out.update(f"lease:{s}" for s in (*self.lease_absent, *self.lease_as_read))
        if self.settings is not None:
            out.add("settings")
        if self.epoch is not None:
            out.add("epoch")
        return frozenset(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Base of every action: why (one sentence, no final period) and what it writes."""

    kind: ClassVar[str] = "action"
    automatic: ClassVar[bool] = True  # stopped by pause; manual actions are not

    why: str
    writes: Writes = field(default_factory=Writes)

    @property
    def touches(self) -> frozenset[str]:
        return self.writes.touches()

    def subjects(self) -> dict[str, Any]:
        """The ids this action is about, for the history entry."""
        return {
            "nodes": sorted(
                {w.record.id for w in self.writes.nodes} | set(self.writes.forget_nodes)
            ),
            "shards": sorted(
                {w.record.id for w in self.writes.shards} | set(self.writes.forget_shards)
            ),
            "intents": sorted({i.id for i in self.writes.intents}),
        }


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterNodes(Action):
    """Sidecars that registered (``status/<id>``) without a node record become
    ONLINE spares."""

    kind: ClassVar[str] = "register"
    automatic: ClassVar[bool] = False  # an observation: keeps flowing while paused

    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateHealth(Action):
    """Observed health reaches the served view: states, health, the hidden flag
    of loading replicas (policy) and ``sync_replicas``."""

    kind: ClassVar[str] = "health"
    automatic: ClassVar[bool] = False

    changes: tuple[str, ...]  # one phrase per node or shard changed


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True, kw_only=True)
class Bootstrap(Action):
    kind: ClassVar[str] = "bootstrap"

    shards: tuple[str, ...]
    primaries: tuple[str, ...]
    replicas: tuple[tuple[str, ...], ...]  # per shard, in the order of ``shards``


@dataclass(frozen=True, slots=True, kw_only=True)
class Failover(Action):
    """A shard lost its primary (``leases/<shard>`` absent): promote a replica;
    the lost primary stays in the shard as a replica with a new replica_id."""

    kind: ClassVar[str] = "failover"

    shard: str
    promoted: str
    demoted: str
    replica_id: int  # the demoted node's new replica_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualFailover(Failover):
    """An operator's failover of a shard whose primary is already lost."""

    kind: ClassVar[str] = "manual-failover"
    automatic: ClassVar[bool] = False

    intent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartHandoff(Action):
    """Leadership transfer, step 1: ask the primary to stop writes."""

    kind: ClassVar[str] = "handoff-start"
    automatic: ClassVar[bool] = False

    shard: str
    target: str
    intent: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteHandoff(Action):
    """Leadership transfer, step 2: the target caught up; swap the roles."""

    kind: ClassVar[str] = "handoff-complete"
    automatic: ClassVar[bool] = False

    shard: str
    promoted: str
    demoted: str
    intent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortHandoff(Action):
    """Leadership transfer timed out: the old primary takes writes again."""

    kind: ClassVar[str] = "handoff-abort"
    automatic: ClassVar[bool] = False

    shard: str
    target: str
    intent: str
    retry: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AddReplica(Action):
    """Repair: a spare joins a shard short of replicas (new replica_id, full sync)."""

    kind: ClassVar[str] = "repair"

    shard: str
    node: str
    replica_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetNodeFlags(Action):
    """hide / unhide / tag, asked by an operator."""

    kind: ClassVar[str] = "flags"
    automatic: ClassVar[bool] = False

    node: str
    intent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode(Action):
    """A node leaves its shard (its replica_id is retired); a node whose sidecar
    is gone is forgotten."""

    kind: ClassVar[str] = "remove"
    automatic: ClassVar[bool] = False

    node: str
    intent: str
    forgotten: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveEpochConflict(Action):
    """A node reports a local epoch ahead of the registry's (etcd restored from an
    older backup): move the epoch past it so the nodes adopt the registry."""

    kind: ClassVar[str] = "epoch-conflict"

    nodes: tuple[str, ...]
    epoch: int


# --------------------------------------------------------------------------- bookkeeping


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishIntent(Action):
    """An intent ends without a topology change (refused, or nothing to do)."""

    kind: ClassVar[str] = "intent"
    automatic: ClassVar[bool] = False

    intent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetIntents(Action):
    kind: ClassVar[str] = "forget-intents"
    automatic: ClassVar[bool] = False

    intents: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InitSettings(Action):
    """No ``settings`` key yet: write the coordinator's initial settings."""

    kind: ClassVar[str] = "settings"
    automatic: ClassVar[bool] = False


# --------------------------------------------------------------------------- migrations (next issue)


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationAction(Action):
    """Base of the slot migration actions (plan, commit, abort) of the next
    issue. They carry ``migration`` ids and their own transaction builder in
    :data:`coordinator.reconciler.BUILDERS`; the planner runs them after
    failover and before repair (see :data:`coordinator.planner.PLANNERS`)."""

    kind: ClassVar[str] = "migration"

    migration: str


@dataclass(slots=True)
class Proposal:
    """What one part of the planner proposes: actions, and notes on what it is
    waiting for (they make the cycle's sentence when nothing is done)."""

    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Proposal) -> None:
        self.actions.extend(other.actions)
        self.notes.extend(other.notes)


__all__ = [
    "AbortHandoff",
    "Action",
    "AddReplica",
    "Bootstrap",
    "CompleteHandoff",
    "Failover",
    "FinishIntent",
    "ForgetIntents",
    "InitSettings",
    "ManualFailover",
    "MigrationAction",
    "NodeWrite",
    "Proposal",
    "RegisterNodes",
    "RemoveNode",
    "ResolveEpochConflict",
    "SetNodeFlags",
    "ShardWrite",
    "StartHandoff",
    "UpdateHealth",
    "Writes",
]
