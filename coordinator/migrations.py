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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from clusterstate.records import Settings
from clusterstate.topology import (
    Health,
    MigrationRecord,
    MigrationState,
    NodeState,
    Role,
    ShardRecord,
    slot_ranges,
)
from dcs.port import Compare, Put

from .actions import Action, MigrationAction, NodeWrite, Proposal, ShardWrite, Writes
from .placement import replica_id_for
from .policy import Policy
from .rebalance import Move
from .replication import left_shard
from .view import HIDDEN_BY_POLICY

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


def progress(docs: Iterable[Mapping[str, Any]], now_ms: int = 0) -> dict[str, Any]:
    """Totals over raw ``migrations/<id>`` documents (with the sidecar's fields),
    and with ``now_ms`` the rate since the first start (slots/s, keys/s) and the
    time left at that rate (``eta_s``; None before any slot moved)."""
    counts = {"migrations": 0, "slots": 0, "slots_done": 0, "keys_moved": 0, "bytes_moved": 0}
    by_state: dict[str, int] = {}
    first = 0
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
        started = int(d.get("started_ms", 0) or 0)
        if started and (not first or started < first):
            first = started
    out: dict[str, Any] = {**counts, "by_state": by_state}
    if now_ms and first:
        elapsed = max(0.001, (now_ms - first) / 1000)
        slots_s = counts["slots_done"] / elapsed
        out.update(elapsed_s=round(elapsed, 3), slots_per_s=round(slots_s, 1),
                   keys_per_s=round(counts["keys_moved"] / elapsed, 1),
                   eta_s=round((counts["slots"] - counts["slots_done"]) / slots_s, 1)
                   if slots_s > 0 else None)
    return out


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True, slots=True, kw_only=True)
class _MigrationStep(MigrationAction):
    """Rewrites ``migrations/<migration>`` with ``state`` (keeping the sidecar's
    progress fields, with ``fields`` set, or dropped where the value is None) in
    the same transaction as its shard records, which bump the epoch: a
    migration's state is part of the served view."""

    state: MigrationState
    fields: tuple[tuple[str, Any], ...] = ()

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


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryMigration(_MigrationStep):
    """A failed migration goes back to ``PENDING`` after its backoff."""

    kind: ClassVar[str] = "migration-retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardReady(Action):
    """A shard's primary leaves ``MIGRATING`` once no migration touches it: the
    new shard of a scale out received its slots."""

    kind: ClassVar[str] = "shard-ready"

    shard: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DissolveShard(Action):
    """A shard without slots and without migrations left (scale in done, or a
    scale out whose every migration was cancelled or failed for good): its
    nodes go back to ``ONLINE`` spares (role none, replica_id retired) and the
    shard record is deleted (its finished migration records stay until
    :class:`ForgetMigrations`)."""

    kind: ClassVar[str] = "shard-dissolve"

    shard: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetMigrations(Action):
    """Finished plans older than the retention leave etcd (and the served view)."""

    kind: ClassVar[str] = "forget-migrations"
    automatic: ClassVar[bool] = False  # bookkeeping: keeps flowing while paused


def _unchanged(view: ClusterView, shard_id: str, record: ShardRecord | None = None) -> ShardWrite:
    """A shard write keeping what the record carries besides ``record``."""
    entry = view.shards[shard_id]
    return ShardWrite(record or entry.record, entry.handoff, entry.primary_since)


def committing(view: ClusterView) -> set[str]:
    """Shards touched by a running migration whose copy is recorded as done. The
    move is rolled forward (the source may have handed the slots off, so the
    target may have taken writes): a failover or leadership transfer of these
    shards waits for the commit, so that a promoted source never serves them."""
    out: set[str] = set()
    for m in view.topology.migrations:
        if m.state is MigrationState.RUNNING and copied(view.migrations.get(m.id, {})):
            out.update((m.from_shard, m.to_shard))
    return out


def _paused(view: ClusterView) -> set[str]:
    """Shards in failover or in a leadership transfer: their migrations wait."""
    return {sid for sid, e in view.shards.items() if e.handoff is not None or sid not in view.leases}


def _short(view: ClusterView, settings: Settings) -> set[str]:
    """With ``min_replicas_to_ack`` ≥ 1, shards with fewer in-sync replicas: the
    migrations *to* them wait, since a copy must be acknowledged like a write."""
    need = settings.min_replicas_to_ack
    if need < 1:
        return set()
    return {sid for sid, e in view.shards.items() if len(e.record.sync_replicas) < need}


def _lease_revisions(view: ClusterView, m: MigrationRecord) -> dict[str, int]:
    """The create revision of both shards' slot leases (a failover or a restarted
    primary re-creates the lease)."""
    out = {}
    for sid in (m.from_shard, m.to_shard):
        kv = view.kv(view.keys.lease(sid))
        out[sid] = kv.create_revision if kv is not None else 0
    return out


def _leases_moved(view: ClusterView, m: MigrationRecord, doc: Mapping[str, Any]) -> str:
    """Why the migration must restart ("" if it need not): a shard's lease was
    re-created since it started."""
    then = doc.get("leases")
    if not isinstance(then, Mapping):
        return ""
    now = _lease_revisions(view, m)
    for sid, role in ((m.from_shard, "source"), (m.to_shard, "target")):
        if sid in then and then[sid] != now.get(sid):
            return f"the {role} shard {sid[:8]} changed primary"
    return ""


def retry_due(doc: Mapping[str, Any], now: float, policy: Policy) -> bool | None:
    """For a ``FAILED`` migration: True to start it again now, False to wait
    (backoff), None when it stays failed for good (attempts used up, or marked
    ``retry: false``)."""
    attempts = int(doc.get("attempts", 1) or 1)
    if doc.get("retry") is False or attempts >= policy.migration_attempts:
        return None
    failed = float(doc.get("failed_ms", 0) or 0) / 1000
    return now - failed >= policy.migration_retry_after(attempts)


def open_work(view: ClusterView, now: float, policy: Policy) -> list[MigrationRecord]:
    """Migrations not finished for good: pending, running, or failed and still
    to be retried."""
    out = []
    for m in view.topology.migrations:
        if m.state in (MigrationState.PENDING, MigrationState.RUNNING):
            out.append(m)
        elif m.state is MigrationState.FAILED and \
                retry_due(view.migrations.get(m.id, {}), now, policy) is not None:
            out.append(m)
    return out


def plan_migrations(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    out = Proposal()
    now_ms = int(now * 1000)
    records = sorted(view.topology.migrations, key=lambda m: (m.slots[:1], m.id))
    paused = _paused(view)
    short = _short(view, settings)
    shards = {sid: e.record for sid, e in view.shards.items()}
    for m in records:
        doc = view.migrations.get(m.id, {})
        if m.state is MigrationState.FAILED:
            due = retry_due(doc, now, policy)
            if m.from_shard not in shards or m.to_shard not in shards:
                continue  # a shard it names is gone: it stays failed
            if due and m.from_shard not in paused and m.to_shard not in paused:
                out.actions.append(RetryMigration(
                    why=f"migration {m.id[:8]} is retried (attempt "
                    f"{int(doc.get('attempts', 1) or 1) + 1} of {policy.migration_attempts})",
                    migration=m.id, state=MigrationState.PENDING,
                    fields=(("copy_state", None), ("last_error", doc.get("error") or ""),
                            ("error", "")),
                    writes=Writes(shards=(_unchanged(view, m.to_shard),)),
                ))
            elif due is False:
                out.notes.append(f"migration {m.id[:8]} failed: retried after its backoff")
            continue
        if m.state is not MigrationState.RUNNING:
            continue
        if copied(doc):
            # rolled forward whatever happened since: the target's sidecar wrote
            # "done" only while both leases were the starting ones, and the source
            # may have handed the slots off since (the target took writes)
            try:
                src, dst = commit(shards, m)
            except ValueError as exc:
                out.actions.append(FailMigration(
                    why=f"migration {m.id[:8]} failed: {exc}", migration=m.id,
                    state=MigrationState.FAILED,
                    fields=(("failed_ms", now_ms), ("retry", False), ("error", str(exc))),
                    writes=Writes(shards=(_unchanged(view, m.to_shard),)),
                ))
                continue
            out.actions.append(CommitMigration(
                why=f"slots {_text(m.slots)} move from shard {m.from_shard[:8]} to "
                f"{m.to_shard[:8]} (migration {m.id[:8]} copied)",
                migration=m.id, state=MigrationState.DONE, fields=(("done_ms", now_ms),),
                writes=Writes(shards=(_unchanged(view, src.id, src),
                                      _unchanged(view, dst.id, dst))),
            ))
            continue
        if m.from_shard in paused or m.to_shard in paused:
            out.notes.append(f"migration {m.id[:8]} waits: a shard it touches is in failover")
            continue
        moved = _leases_moved(view, m, doc)
        if moved:
            # a shard failed over (or its primary restarted) since the copy began: the
            # source may have taken writes without its marks, the target may hold a
            # partial copy; copy again (the retry starts clean)
            out.actions.append(FailMigration(
                why=f"migration {m.id[:8]} restarts: {moved} since it began",
                migration=m.id, state=MigrationState.FAILED,
                fields=(("failed_ms", now_ms), ("error", moved), ("attempts", 0)),
                writes=Writes(shards=(_unchanged(view, m.to_shard),)),
            ))
            continue
        if doc.get("copy_state") == "failed":
            out.actions.append(FailMigration(
                why=f"migration {m.id[:8]} failed: {doc.get('error') or 'copy failed'}; its "
                f"slots stay with shard {m.from_shard[:8]}",
                migration=m.id, state=MigrationState.FAILED, fields=(("failed_ms", now_ms),),
                writes=Writes(shards=(_unchanged(view, m.to_shard),)),
            ))
        else:
            out.notes.append(f"migration {m.id[:8]} copying")
    for sid in short & {m.to_shard for m in records if m.state is MigrationState.PENDING}:
        out.notes.append(f"migrations to shard {sid[:8]} wait: fewer in-sync replicas than "
                         f"min_replicas_to_ack ({settings.min_replicas_to_ack})")
    startable = [m for m in records if not (m.state is MigrationState.PENDING
                                            and m.to_shard in short)]
    for m in to_start(startable, settings.migration_concurrency, paused):
        doc = view.migrations.get(m.id, {})
        attempts = int(doc.get("attempts", 0) or 0) + 1
        out.actions.append(StartMigration(
            why=f"migration {m.id[:8]} starts: slots {_text(m.slots)} from shard "
            f"{m.from_shard[:8]} to {m.to_shard[:8]}",
            migration=m.id, state=MigrationState.RUNNING,
            fields=(("attempts", attempts), ("started_ms", now_ms), ("copy_state", None),
                    ("keys_moved", 0), ("bytes_moved", 0), ("error", ""),
                    ("leases", _lease_revisions(view, m))),
            writes=Writes(shards=(_unchanged(view, m.to_shard),)),
        ))
    out.extend(plan_shard_lifecycle(view, settings, now, policy))
    return out


def plan_shard_lifecycle(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    """Shards whose migrations are over: a ``MIGRATING`` primary of a shard with
    slots becomes ``ACTIVE``; a shard left without slots dissolves."""
    out = Proposal()
    busy: set[str] = set()
    for m in open_work(view, now, policy):
        busy.update((m.from_shard, m.to_shard))
    for sid, entry in sorted(view.shards.items()):
        if sid in busy:
            continue
        shard = entry.record
        if not shard.slots:
            out.actions.append(_dissolve(view, sid))
            continue
        primary = view.nodes.get(shard.primary)
        if primary is not None and primary.record.state is NodeState.MIGRATING:
            out.actions.append(ShardReady(
                why=f"shard {sid[:8]} holds its slots: primary {shard.primary[:8]} is ACTIVE",
                shard=sid,
                writes=Writes(nodes=(NodeWrite.kept(
                    primary, replace(primary.record, state=NodeState.ACTIVE)),)),
            ))
    return out


def _dissolve(view: ClusterView, shard_id: str) -> DissolveShard:
    shard = view.shards[shard_id].record
    nodes = [NodeWrite(left_shard(view, n, hidden=False))
             for n in (shard.primary, *shard.replicas) if n in view.nodes]
    return DissolveShard(
        why=f"shard {shard_id[:8]} owns no slot and no migration touches it: its "
        f"{len(nodes)} node(s) go back to ONLINE spares",
        shard=shard_id,
        writes=Writes(nodes=tuple(nodes), forget_shards=(shard_id,)),
    )


def plan_forget_migrations(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    """Forget the records of plans whose every migration finished longer than
    ``policy.migration_retention`` ago (a plan: the records of one
    ``plan_epoch``)."""
    out = Proposal()
    states = {m.id: m.state for m in view.topology.migrations}
    plans: dict[Any, list[str]] = {}
    for mid, doc in view.migrations.items():
        plans.setdefault(doc.get("plan_epoch") or mid, []).append(mid)
    old: list[str] = []
    for ids in plans.values():
        docs = [view.migrations[i] for i in ids]
        if any(states.get(i) in (MigrationState.PENDING, MigrationState.RUNNING) for i in ids):
            continue
        if any(states.get(i) is MigrationState.FAILED and
               retry_due(view.migrations[i], now, policy) is not None for i in ids):
            continue
        last = max(max(float(d.get(k, 0) or 0) for k in ("done_ms", "failed_ms", "created_ms"))
                   for d in docs) / 1000
        if now - last >= policy.migration_retention:
            old.extend(ids)
    if old:
        gone = tuple(sorted(old))
        out.actions.append(ForgetMigrations(
            why=f"forgetting {len(gone)} finished migration record(s)",
            writes=Writes(forget_migrations=gone),
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
    for name, value in action.fields:
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return Txn((*txn.compares, Compare.unchanged(key, kv)),
               (*txn.ops, Put(key, orjson.dumps(doc))), txn.epoch)


def new_migration_docs(
    records: Iterable[MigrationRecord], now_ms: int, plan_epoch: int = 0, plan_kind: str = ""
) -> dict[str, dict[str, Any]]:
    """``migrations/<id>`` documents for new records (by id); ``plan_epoch`` (the
    epoch the plan was written at) groups the migrations of one plan."""
    return {
        m.id: ({
            "id": m.id, "slots": [list(r) for r in m.slots], "from_shard": m.from_shard,
            "to_shard": m.to_shard, "state": m.state.value, "created_ms": now_ms,
            "plan_epoch": plan_epoch, "plan_kind": plan_kind,
        })
        for m in records
    }


def to_cancel(view: ClusterView, migration: str) -> list[str]:
    """``DELETE /v1/migrations/<id>``: the ``PENDING`` (and ``FAILED``, so they
    are not retried) migrations of the same plan (or the migration alone
    without one) to mark ``CANCELLED``. A ``RUNNING`` one is left to finish:
    the slots in flight are committed."""
    doc = view.migrations.get(migration, {})
    plan_epoch = doc.get("plan_epoch")
    states = {m.id: m.state for m in view.topology.migrations}
    same = [
        mid for mid, d in view.migrations.items()
        if mid == migration or (plan_epoch and d.get("plan_epoch") == plan_epoch)
    ]
    return sorted(mid for mid in same
                  if states.get(mid) in (MigrationState.PENDING, MigrationState.FAILED))


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


def unfinished(view: ClusterView, now: float, policy: Policy | None = None) -> list[MigrationRecord]:
    """Migrations that still hold a plan open (pending, running, or failed and
    to be retried): a new plan waits for them."""
    return open_work(view, now, policy or Policy())


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPlan(Action):
    """An operator's plan is written: its ``PENDING`` migrations, and for a
    scale out the new shards (empty) with their members, for a scale in the
    leaving shards' primaries ``MIGRATING``; one transaction, epoch bumped."""

    kind: ClassVar[str] = "migration-plan"
    automatic: ClassVar[bool] = False

    plan_kind: str
    migrations: tuple[str, ...]

    def subjects(self) -> dict[str, Any]:
        return {**Action.subjects(self), "migrations": list(self.migrations)}


def plan_writes(view: ClusterView, settings: Settings, planned: Any) -> Writes:
    """The topology records a plan writes besides its migrations."""
    nodes: list[NodeWrite] = []
    shards: list[ShardWrite] = []
    ids: list[int] = []
    taken = set(view.replica_ids)

    def new_id(node_id: str) -> int:
        rid = replica_id_for(node_id, view.epoch, taken)
        taken.add(rid)
        ids.append(rid)
        return rid

    hide = settings.hide_while_loading
    for new in planned.new_shards:
        shards.append(ShardWrite(ShardRecord(new.id, (), new.primary, tuple(new.replicas))))
        p = view.nodes[new.primary].record
        nodes.append(NodeWrite(replace(p, shard=new.id, role=Role.PRIMARY,
                                       state=NodeState.MIGRATING, health=Health.ONLINE,
                                       hidden=False, replica_id=new_id(p.id))))
        for rid_node in new.replicas:
            r = view.nodes[rid_node].record
            nodes.append(NodeWrite(
                replace(r, shard=new.id, role=Role.REPLICA, state=NodeState.RECOVERING,
                        health=Health.LOADING, hidden=hide, replica_id=new_id(r.id)),
                HIDDEN_BY_POLICY if hide else "",
            ))
    for sid in planned.leaving:
        entry = view.shards[sid]
        p_entry = view.nodes.get(entry.record.primary)
        if p_entry is not None and p_entry.record.state is not NodeState.MIGRATING:
            nodes.append(NodeWrite.kept(p_entry, replace(p_entry.record,
                                                         state=NodeState.MIGRATING)))
    return Writes(nodes=tuple(nodes), shards=tuple(shards), replica_ids=tuple(ids),
                  epoch=view.epoch + 1)


def plan_txn(
    rec: Reconciler, view: ClusterView, action: StartPlan, docs: Mapping[str, Mapping[str, Any]]
) -> Txn:
    """The plan's records (``action.writes``) and its ``migrations/<id>``
    documents (absent until now) in one transaction."""
    from .reconciler import Chain, Txn

    kv = view.kv(rec.keys.epoch)
    chain = Chain(view.epoch, None if kv is None else kv.value, list(view.history))
    txn = rec.records_txn(view, chain, action)
    compares = list(txn.compares)
    ops = list(txn.ops)
    for mid, doc in docs.items():
        key = rec.keys.migration(mid)
        compares.append(Compare.absent(key))
        ops.append(Put(key, orjson.dumps(dict(doc))))
    return Txn(tuple(compares), tuple(ops), txn.epoch)


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
