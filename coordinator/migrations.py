"""From a rebalancing plan to ``migrations/<id>`` records, and their commit (pure).

Wired for plans that move slots between existing shards (``rebalance``,
``scale_in``): :func:`plan_migrations` is the ``migrations`` part of
:data:`coordinator.planner.PLANNERS` and :func:`migration_txn` the reconciler's
builder for :class:`StartMigration` / :class:`CommitMigration` /
:class:`FailMigration`. Creating new shards (scale out), cancel, drain and
move-shard are not wired (docs/rebalancing.md, "Execution"). What they decide:

* :func:`migration_records` cuts a plan's moves into migrations of at most
  ``batch`` slots, one source and one target each, with deterministic ids
  (derived from the epoch the plan is written at, so ``plan`` stays pure);
* :func:`to_start` picks the ``PENDING`` migrations to turn ``RUNNING``: one per
  target shard at a time, at most ``settings.migration_concurrency`` running in
  all, none touching a shard in failover (a failover pauses only the migrations
  touching that shard);
* :func:`commit` is the ownership change of one copied migration (the target's
  sidecar wrote ``copy_state: done``): the source's and the target's shard
  records with the slots moved, written in one transaction with an epoch bump
  and the migration's state ``DONE``;
* :func:`progress` sums the sidecar's progress fields for ``GET /v1/migrations``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from clusterstate.records import Settings
from clusterstate.topology import MigrationRecord, MigrationState, ShardRecord, slot_ranges
from dcs.port import Compare, Put

from .actions import MigrationAction, Proposal, ShardWrite, Writes
from .policy import Policy
from .rebalance import Move

if TYPE_CHECKING:
    from .reconciler import Chain, Reconciler, Txn
    from .view import ClusterView

#: Slots per migration record by default.
DEFAULT_BATCH = 1024


def migration_id(epoch: int, from_shard: str, to_shard: str, first_slot: int) -> str:
    return hashlib.sha1(f"migration|{epoch}|{from_shard}|{to_shard}|{first_slot}".encode()).hexdigest()


def migration_records(
    moves: Sequence[Move], epoch: int, batch: int = DEFAULT_BATCH
) -> list[MigrationRecord]:
    """The moves as ``PENDING`` migrations of at most ``batch`` slots, grouped
    by (source, target), in slot order."""
    if batch < 1:
        raise ValueError("batch must be >= 1")
    by_pair: dict[tuple[str, str], list[int]] = {}
    for m in sorted(moves):
        by_pair.setdefault((m.from_shard, m.to_shard), []).append(m.slot)
    out: list[MigrationRecord] = []
    for (src, dst), slots in sorted(by_pair.items(), key=lambda kv: kv[1][0]):
        for i in range(0, len(slots), batch):
            chunk = slots[i : i + batch]
            out.append(MigrationRecord(
                migration_id(epoch, src, dst, chunk[0]),
                tuple(slot_ranges(chunk)), src, dst, MigrationState.PENDING,
            ))
    return out


def to_start(
    migrations: Iterable[MigrationRecord],
    concurrency: int,
    paused_shards: Collection[str] = (),
) -> list[MigrationRecord]:
    """The ``PENDING`` migrations to run now: one per target shard, migrations
    to different targets in parallel, at most ``concurrency`` running in all,
    none touching a shard in ``paused_shards`` (failover in progress)."""
    items = list(migrations)
    running = [m for m in items if m.state is MigrationState.RUNNING]
    busy = {m.to_shard for m in running}
    room = max(0, concurrency - len(running))
    out: list[MigrationRecord] = []
    for m in items:
        if room <= 0:
            break
        if m.state is not MigrationState.PENDING or m.to_shard in busy:
            continue
        if m.from_shard in paused_shards or m.to_shard in paused_shards:
            continue
        out.append(m)
        busy.add(m.to_shard)
        room -= 1
    return out


def _slots(ranges: Iterable[tuple[int, int]]) -> set[int]:
    return {s for lo, hi in ranges for s in range(lo, hi + 1)}


def commit(
    shards: Mapping[str, ShardRecord], migration: MigrationRecord
) -> tuple[ShardRecord, ShardRecord]:
    """The source and target shard records once ``migration``'s slots belong to
    the target. Raises ``ValueError`` if the source no longer owns them all."""
    src = shards[migration.from_shard]
    dst = shards[migration.to_shard]
    moving = _slots(migration.slots)
    owned = _slots(src.slots)
    if not moving <= owned:
        raise ValueError(
            f"migration {migration.id}: shard {src.id} no longer owns slots "
            f"{slot_ranges(moving - owned)}"
        )
    new_src = ShardRecord(src.id, tuple(slot_ranges(owned - moving)), src.primary,
                          src.replicas, src.sync_replicas)
    new_dst = ShardRecord(dst.id, tuple(slot_ranges(_slots(dst.slots) | moving)), dst.primary,
                          dst.replicas, dst.sync_replicas)
    return new_src, new_dst


def copied(doc: Mapping[str, Any]) -> bool:
    """The target's sidecar reports the copy done (``copy_state: done``)."""
    return doc.get("copy_state") == "done" and not doc.get("error")


def progress(docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over raw ``migrations/<id>`` documents (with the sidecar's fields)."""
    counts = {"migrations": 0, "slots": 0, "slots_done": 0, "keys_moved": 0, "bytes_moved": 0}
    by_state: dict[str, int] = {}
    for d in docs:
        slots = sum(hi - lo + 1 for lo, hi in d.get("slots") or [])
        state = str(d.get("state", ""))
        counts["migrations"] += 1
        counts["slots"] += slots
        if state == MigrationState.DONE:
            counts["slots_done"] += slots
        counts["keys_moved"] += int(d.get("keys_moved", 0) or 0)
        counts["bytes_moved"] += int(d.get("bytes_moved", 0) or 0)
        by_state[state] = by_state.get(state, 0) + 1
    return {**counts, "by_state": by_state}


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True, slots=True, kw_only=True)
class _MigrationStep(MigrationAction):
    """Rewrites ``migrations/<migration>`` with ``state`` (keeping the sidecar's
    progress fields) in the same transaction as its shard records, which bump
    the epoch: a migration's state is part of the served view."""

    state: MigrationState

    @property
    def touches(self) -> frozenset[str]:
        return self.writes.touches() | {f"migration:{self.migration}"}

    def subjects(self) -> dict[str, Any]:
        return {**MigrationAction.subjects(self), "migrations": [self.migration]}


@dataclass(frozen=True, slots=True, kw_only=True)
class StartMigration(_MigrationStep):
    kind: ClassVar[str] = "migration-start"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitMigration(_MigrationStep):
    kind: ClassVar[str] = "migration-commit"


@dataclass(frozen=True, slots=True, kw_only=True)
class FailMigration(_MigrationStep):
    kind: ClassVar[str] = "migration-fail"


def _unchanged(view: ClusterView, shard_id: str, record: ShardRecord | None = None) -> ShardWrite:
    """A shard write keeping what the record carries besides ``record``."""
    entry = view.shards[shard_id]
    return ShardWrite(record or entry.record, entry.handoff, entry.primary_since)


def _paused(view: ClusterView) -> set[str]:
    """Shards in failover or in a leadership transfer: their migrations wait."""
    return {sid for sid, e in view.shards.items() if e.handoff is not None or sid not in view.leases}


def plan_migrations(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    out = Proposal()
    records = sorted(view.topology.migrations, key=lambda m: (m.slots[:1], m.id))
    paused = _paused(view)
    shards = {sid: e.record for sid, e in view.shards.items()}
    for m in records:
        if m.state is not MigrationState.RUNNING:
            continue
        doc = view.migrations.get(m.id, {})
        if m.from_shard in paused or m.to_shard in paused:
            out.notes.append(f"migration {m.id[:8]} waits: a shard it touches is in failover")
            continue
        if copied(doc):
            try:
                src, dst = commit(shards, m)
            except ValueError as exc:
                out.actions.append(FailMigration(
                    why=f"migration {m.id[:8]} failed: {exc}", migration=m.id,
                    state=MigrationState.FAILED,
                    writes=Writes(shards=(_unchanged(view, m.to_shard),)),
                ))
                continue
            out.actions.append(CommitMigration(
                why=f"slots {_text(m.slots)} move from shard {m.from_shard[:8]} to "
                f"{m.to_shard[:8]} (migration {m.id[:8]} copied)",
                migration=m.id, state=MigrationState.DONE,
                writes=Writes(shards=(_unchanged(view, src.id, src),
                                      _unchanged(view, dst.id, dst))),
            ))
        elif doc.get("copy_state") == "failed":
            out.actions.append(FailMigration(
                why=f"migration {m.id[:8]} failed: {doc.get('error') or 'copy failed'}; its "
                f"slots stay with shard {m.from_shard[:8]}",
                migration=m.id, state=MigrationState.FAILED,
                writes=Writes(shards=(_unchanged(view, m.to_shard),)),
            ))
        else:
            out.notes.append(f"migration {m.id[:8]} copying")
    for m in to_start(records, settings.migration_concurrency, paused):
        out.actions.append(StartMigration(
            why=f"migration {m.id[:8]} starts: slots {_text(m.slots)} from shard "
            f"{m.from_shard[:8]} to {m.to_shard[:8]}",
            migration=m.id, state=MigrationState.RUNNING,
            writes=Writes(shards=(_unchanged(view, m.to_shard),)),
        ))
    return out


def _text(ranges: Iterable[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def migration_txn(rec: Reconciler, view: ClusterView, chain: Chain, action: Any) -> Txn:
    """The shard records (epoch bump, history) and ``migrations/<id>`` with the
    new state, compared with the revision the view read."""
    from .reconciler import Txn

    txn = rec.records_txn(view, chain, action)
    key = rec.keys.migration(action.migration)
    kv = view.kv(key)
    doc = dict(orjson.loads(kv.value)) if kv is not None else {}
    doc["state"] = action.state.value
    return Txn((*txn.compares, Compare.unchanged(key, kv)),
               (*txn.ops, Put(key, orjson.dumps(doc))), txn.epoch)


def new_migration_docs(
    records: Iterable[MigrationRecord], now_ms: int, plan_epoch: int = 0
) -> dict[str, dict[str, Any]]:
    """``migrations/<id>`` documents for new records (by id); ``plan_epoch`` (the
    epoch the plan was written at) groups the migrations of one plan."""
    return {
        m.id: ({
            "id": m.id, "slots": [list(r) for r in m.slots], "from_shard": m.from_shard,
            "to_shard": m.to_shard, "state": m.state.value, "created_ms": now_ms,
            "plan_epoch": plan_epoch,
        })
        for m in records
    }


def to_cancel(view: ClusterView, migration: str) -> list[str]:
    """``DELETE /v1/migrations/<id>``: the ``PENDING`` migrations of the same
    plan (or the migration alone without one) to mark ``CANCELLED``. A
    ``RUNNING`` one is left to finish: the slots in flight are committed."""
    doc = view.migrations.get(migration, {})
    plan_epoch = doc.get("plan_epoch")
    states = {m.id: m.state for m in view.topology.migrations}
    same = [
        mid for mid, d in view.migrations.items()
        if mid == migration or (plan_epoch and d.get("plan_epoch") == plan_epoch)
    ]
    return sorted(mid for mid in same if states.get(mid) is MigrationState.PENDING)


def epoch_ops(
    keys: Any, view: ClusterView, docs: Mapping[str, Mapping[str, Any]], kind: str, why: str,
    leader: str, now: float,
) -> tuple[list[Compare], list[Put], int]:
    """One operator change of ``migrations/`` (new plan, cancel) as one
    transaction: the docs written (each compared with the revision read, absent
    when new), the epoch bumped and a history entry. The caller adds the fence."""
    epoch = view.epoch + 1
    compares = [Compare.unchanged(keys.epoch, view.kv(keys.epoch))]
    ops: list[Put] = []
    for mid, doc in docs.items():
        key = keys.migration(mid)
        compares.append(Compare.unchanged(key, view.kv(key)))
        ops.append(Put(key, orjson.dumps(dict(doc))))
    ops.append(Put(keys.epoch, str(epoch).encode()))
    ops.append(Put(keys.history(epoch), orjson.dumps({
        "epoch": epoch, "previous": view.epoch, "time": now, "kind": kind, "automatic": False,
        "leader": leader, "why": why, "migrations": sorted(docs),
    })))
    return compares, ops, epoch


def unfinished(view: ClusterView) -> list[MigrationRecord]:
    return [m for m in view.topology.migrations
            if m.state in (MigrationState.PENDING, MigrationState.RUNNING)]


__all__ = [
    "CommitMigration",
    "FailMigration",
    "StartMigration",
    "epoch_ops",
    "migration_txn",
    "new_migration_docs",
    "plan_migrations",
    "to_cancel",
    "unfinished",
    "DEFAULT_BATCH",
    "commit",
    "copied",
    "migration_id",
    "migration_records",
    "progress",
    "to_start",
]
