"""Migrations in which this node is the target primary (DESIGN §5, docs/slot-transfer.md).

:func:`migrations_to_run` (pure) picks them from the applied view: state
``RUNNING``, ``to_shard`` is this node's shard, this node is its primary and
holds the slot lease. For each one a :class:`MigrationRun` has the data node pull
the slots from the source primary (``SLOTKEEPER IMPORT``), waits on
``IMPORT-STATUS … WAIT`` (answered at the end of the copy, or every 0.5 s for
progress), and writes progress into ``migrations/<id>`` with compare-and-set,
keeping every field the coordinator wrote:

    keys_moved, bytes_moved, error           (DESIGN §1)
    copy_state: running | done | failed      (the target's verdict)
    copied_by: <node_id>, copy_updated_ms: <wall ms>

The sidecar never touches ``state``: it is part of the served view, which may
only change with an epoch bump. On ``copy_state: done`` the coordinator commits
the new owner (shards + epoch); on ``failed`` it retries later. ``done`` is
written only while both shards' slot leases are those recorded at the start (a
compare in the same transaction); once it is written the coordinator rolls the
move forward whatever happens, so the sidecar then has the source **hand the
slots off**: this data node serves them (``SLOTKEEPER IMPORT-HANDOFF``), then the
source's answers MOVED to this node (``SLOTKEEPER HANDOFF``), and writes resume
here without waiting for the new topology. A migration that
leaves ``RUNNING`` (or disappears) while the import runs is cancelled on the data
node (``IMPORT-CANCEL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clusterstate.keys import Keys
from clusterstate.topology import (
    MigrationRecord,
    MigrationState,
    NodeRecord,
    Role,
    Topology,
    node_by_id,
    shard_by_id,
)
from dcs.errors import StoreError
from dcs.port import Compare, Put, Store

from .admin import AdminConnection, AdminError, Datanode, DatanodeUnavailable, plain
from .watcher import Records

log = logging.getLogger(__name__)

STATUS_WAIT = 0.5  # IMPORT-STATUS … WAIT: the data node answers at the end, or after this
PROGRESS_EVERY = 0.5  # seconds between progress writes while running
HANDOFF_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Job:
    migration: MigrationRecord
    source: NodeRecord  # the source shard's primary

    @property
    def id(self) -> str:
        return self.migration.id


def migrations_to_run(view: Topology | None, node_id: str, holds_slot_lease: bool) -> list[Job]:
    """The RUNNING migrations this node must carry out as the target primary."""
    if view is None or not holds_slot_lease:
        return []
    me = node_by_id(view, node_id)
    if me is None or me.role is not Role.PRIMARY:
        return []
    jobs = []
    for m in view.migrations:
        if m.state is not MigrationState.RUNNING or m.to_shard != me.shard:
            continue
        source_shard = shard_by_id(view, m.from_shard)
        source = node_by_id(view, source_shard.primary) if source_shard is not None else None
        if source is not None:
            jobs.append(Job(m, source))
    return jobs


def progress_document(
    current: Mapping[str, Any], status: Mapping[str, Any], node_id: str, wall_ms: int
) -> dict[str, Any]:
    """``current`` (the stored record) with the import's progress merged in."""
    state = str(status.get("state", ""))
    copy_state = {"done": "done", "failed": "failed", "cancelled": "failed"}.get(state, "running")
    doc = dict(current)
    doc.update(
        keys_moved=int(status.get("keys", 0) or 0),
        bytes_moved=int(status.get("bytes", 0) or 0),
        error=str(status.get("error", "") or ("cancelled" if state == "cancelled" else "")),
        copy_state=copy_state,
        copied_by=node_id,
        copy_updated_ms=wall_ms,
    )
    return doc


class MigrationRun:
    """One migration carried out by this node's data node."""

    def __init__(
        self,
        job: Job,
        *,
        datanode: Datanode,
        store: Store,
        keys: Keys,
        node_id: str,
        on_progress: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
        records: Callable[[], Records | None] = lambda: None,
    ) -> None:
        self.job = job
        self.datanode = datanode
        self.store = store
        self.keys = keys
        self.node_id = node_id
        self.on_progress = on_progress
        self.clock = clock
        self.records = records  # the watcher's latest records (saves etcd reads)
        self.taken_over = False
        # the handoff's connection to the source, opened while the copy runs
        self.source_conn = AdminConnection(job.source.addr, job.source.admin_port,
                                           timeout=HANDOFF_TIMEOUT)
        self.finished = False
        self.last: dict[str, Any] = {}

    async def run(self) -> None:
        m, src = self.job.migration, self.job.source
        ranges = list(m.slots)
        # IMPORT-STATUS … WAIT blocks: on a connection of its own, so the write
        # permit's renewals never queue behind it
        waiter = AdminConnection(self.datanode.conn.host, self.datanode.conn.port,
                                 timeout=STATUS_WAIT + 5)
        try:
            status = await self.datanode.import_status(ranges)
            if status.get("state") != "running" and not (
                status.get("state") == "done" and status.get("source") == src.id
                and await self._still_importing(ranges, src.id)
            ):
                log.info("migration %s: importing slots %s from %s (%s:%d)", m.id,
                         _fmt(ranges), src.id[:8], src.addr, src.admin_port)
                await self.datanode.start_import(src.addr, src.admin_port, src.id, ranges,
                                                 takeover=True)
                self.taken_over = True  # the data node serves the slots once complete
            else:
                log.info("migration %s: import already %s on the data node", m.id,
                         status.get("state"))
            last_write = -1e9
            with contextlib.suppress(AdminError, DatanodeUnavailable, OSError, TimeoutError):
                await self.source_conn.connect()
            while True:
                status = await self._wait_status(waiter, ranges)
                state = status.get("state")
                done = state in ("done", "failed", "cancelled")
                if state == "done":
                    lagging = await self._replicated()
                    if lagging:
                        log.warning("migration %s: %s", m.id, lagging)
                        status = {**status, "state": "failed", "error": lagging}
                recorded = False
                if done or self.clock() - last_write >= PROGRESS_EVERY:
                    recorded = await self._write_progress(status)
                    last_write = self.clock()
                if done:
                    self.finished = True
                    log.info("migration %s: import %s: %s keys, %s bytes%s", m.id,
                             status.get("state"), status.get("keys"), status.get("bytes"),
                             f" ({status.get('error')})" if status.get("error") else "")
                    if recorded and status.get("state") == "done":
                        await self._handoff(ranges)
                    return
        except asyncio.CancelledError:
            if not self.finished:
                await self._cancel(ranges)
            raise
        except (AdminError, DatanodeUnavailable) as exc:
            log.warning("migration %s: import failed to run: %s", m.id, exc)
            await self._write_progress({"state": "failed", "error": str(exc)})
            self.finished = True
        finally:
            waiter.close()
            self.source_conn.close()

    async def _wait_status(self, waiter: AdminConnection, ranges: list[tuple[int, int]]
                           ) -> dict[str, Any]:
        """The import's status once it ends, or after STATUS_WAIT (progress)."""
        if not waiter.connected:
            await waiter.connect()
        reply = plain(await waiter.call("SLOTKEEPER", "IMPORT-STATUS", _fmt(ranges),
                                        "WAIT", int(STATUS_WAIT * 1000)))
        if not isinstance(reply, dict):
            raise AdminError(f"unexpected IMPORT-STATUS reply {reply!r}")
        return reply

    async def _handoff(self, ranges: list[tuple[int, int]]) -> None:
        """The copy is recorded as done, so the coordinator will only commit it: take
        the slots over here, then have the source hand them off (MOVED to this node)
        so writes resume here before the new topology. Best effort: without it,
        writes wait for the topology."""
        conn = self.source_conn
        try:
            # this node serves the slots first, so the source's MOVED never bounces
            if not self.taken_over:  # (IMPORT … TAKEOVER did it when the copy ended)
                await self.datanode.conn.call("SLOTKEEPER", "IMPORT-HANDOFF", _fmt(ranges))
            if not conn.connected:
                await conn.connect()
            n = await conn.call("SLOTKEEPER", "HANDOFF", _fmt(ranges), self.node_id)
            log.info("migration %s: the source handed %s slot(s) off: writes resume here",
                     self.job.id, n)
        except (AdminError, DatanodeUnavailable, OSError, TimeoutError) as exc:
            log.info("migration %s: no handoff by the source (%s): writes wait for the "
                     "new topology", self.job.id, exc)
        finally:
            conn.close()

    async def _replicated(self) -> str:
        """With ``min_replicas_to_ack`` ≥ 1, the copy counts only once that many
        replicas acknowledged it (``WAIT`` on a connection of its own, so the
        write permit's renewals never queue behind it): a failover of the
        target right after the commit must not lose the slots' keys. "" when
        acknowledged (or not asked for), else why not."""
        rec = self.records()
        if rec is not None and rec.settings.min_replicas_to_ack < 1:
            return ""  # the settings ask for none (the data node follows them)
        raw = plain(await self.datanode.conn.call("SLOTKEEPER", "REPLICATION"))
        if not isinstance(raw, Mapping):
            return ""
        n = int(raw.get("min_replicas_to_ack", 0) or 0)
        if n < 1:
            return ""
        timeout_ms = max(1000, 5 * int(raw.get("ack_timeout_ms", 1000) or 1000))
        conn = AdminConnection(self.datanode.conn.host, self.datanode.conn.port,
                               timeout=timeout_ms / 1000 + 2)
        try:
            await conn.connect()
            acked = int(await conn.call("WAIT", n, timeout_ms))
        finally:
            conn.close()
        if acked >= n:
            return ""
        return (f"{acked} of {n} replica(s) acknowledged the copy within {timeout_ms} ms: "
                "not committed")

    async def _still_importing(self, ranges: list[tuple[int, int]], source: str) -> bool:
        marks = await self.datanode.importing()
        return all(marks.get(s) == source for a, b in ranges for s in range(a, b + 1))

    async def _cancel(self, ranges: list[tuple[int, int]]) -> None:
        try:
            n = await asyncio.shield(self.datanode.cancel_import(ranges))
            log.info("migration %s: no longer running: import cancelled (%d)", self.job.id, n)
        except (AdminError, DatanodeUnavailable) as exc:
            log.warning("migration %s: cancel failed: %s", self.job.id, exc)

    async def _write_progress(self, status: Mapping[str, Any]) -> bool:
        """Merge the progress into migrations/<id> (compare-and-set, a few tries);
        True once written. ``copy_state: done`` is written only while both shards'
        slot leases are the ones recorded when the migration started: once it is
        written the coordinator commits the move whatever happens next (the source
        may hand the slots off), so a failover since the start must fail it instead."""
        key = self.keys.migration(self.job.id)
        rec = self.records()
        known = rec.migration(self.keys, self.job.id) if rec is not None else None
        for _ in range(5):
            try:
                # first from the watcher's copy (usually current: the copy is short),
                # then, after a lost compare-and-set, from etcd
                kv, known = known or await self.store.get(key), None
                if kv is None:
                    return False  # the coordinator dropped the migration
                current = orjson.loads(kv.value)
                doc = progress_document(current, status, self.node_id, int(time.time() * 1000))
                compares = [Compare.mod_revision(key, kv.mod_revision)]
                if doc["copy_state"] == "done":
                    compares += self._lease_compares(current)
                self.last = doc
                if await self.store.cas(compares, [Put(key, orjson.dumps(doc))]):
                    self.on_progress(self.job.id, doc)
                    return True
                if len(compares) > 1:
                    moved = await self._leases_moved(current)
                    if moved:
                        status = {**status, "state": "failed", "error": moved}
            except (StoreError, orjson.JSONDecodeError) as exc:
                log.warning("migration %s: progress not written: %s", self.job.id, exc)
                return False
        return False

    def _lease_compares(self, current: Mapping[str, Any]) -> list[Compare]:
        leases = current.get("leases")
        if not isinstance(leases, Mapping):
            return []
        return [Compare.create_revision(self.keys.lease(sid), int(rev))
                for sid, rev in leases.items() if int(rev or 0) > 0]

    async def _leases_moved(self, current: Mapping[str, Any]) -> str:
        """Why the copy may not count ("" if it may): a shard's slot lease was
        re-created since the migration started."""
        for c in self._lease_compares(current):
            kv = await self.store.get(c.key)
            if kv is None or kv.create_revision != c.operand:
                return "a shard changed primary during the copy: not committed"
        return ""


def _fmt(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
