"""Migrations in which this node is the target primary (DESIGN §5, docs/slot-transfer.md).

:func:`migrations_to_run` (pure) picks them from the applied view: state
``RUNNING``, ``to_shard`` is this node's shard, this node is its primary and
holds the slot lease. For each one a :class:`MigrationRun` has the data node pull
the slots from the source primary (``SLOTKEEPER IMPORT``), polls
``IMPORT-STATUS``, and writes progress into ``migrations/<id>`` with
compare-and-set, keeping every field the coordinator wrote:

    keys_moved, bytes_moved, error           (DESIGN §1)
    copy_state: running | done | failed      (the target's verdict)
    copied_by: <node_id>, copy_updated_ms: <wall ms>

The sidecar never touches ``state``: it is part of the served view, which may
only change with an epoch bump. On ``copy_state: done`` the coordinator commits
the new owner (shards + epoch); on ``failed`` it retries later. A migration that
leaves ``RUNNING`` (or disappears) while the import runs is cancelled on the data
node (``IMPORT-CANCEL``).
"""

from __future__ import annotations

import asyncio
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

log = logging.getLogger(__name__)

POLL = 0.005  # seconds between IMPORT-STATUS polls (the copy's end starts the commit)
PROGRESS_EVERY = 0.5  # seconds between progress writes while running


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
    ) -> None:
        self.job = job
        self.datanode = datanode
        self.store = store
        self.keys = keys
        self.node_id = node_id
        self.on_progress = on_progress
        self.clock = clock
        self.finished = False
        self.last: dict[str, Any] = {}

    async def run(self) -> None:
        m, src = self.job.migration, self.job.source
        ranges = list(m.slots)
        try:
            status = await self.datanode.import_status(ranges)
            if status.get("state") != "running" and not (
                status.get("state") == "done" and status.get("source") == src.id
                and await self._still_importing(ranges, src.id)
            ):
                log.info("migration %s: importing slots %s from %s (%s:%d)", m.id,
                         _fmt(ranges), src.id[:8], src.addr, src.admin_port)
                await self.datanode.start_import(src.addr, src.admin_port, src.id, ranges)
            else:
                log.info("migration %s: import already %s on the data node", m.id,
                         status.get("state"))
            last_write = -1e9
            while True:
                status = await self.datanode.import_status(ranges)
                state = status.get("state")
                done = state in ("done", "failed", "cancelled")
                if state == "done":
                    lagging = await self._replicated()
                    if lagging:
                        log.warning("migration %s: %s", m.id, lagging)
                        status = {**status, "state": "failed", "error": lagging}
                if done or self.clock() - last_write >= PROGRESS_EVERY:
                    await self._write_progress(status)
                    last_write = self.clock()
                if done:
                    self.finished = True
                    log.info("migration %s: import %s: %s keys, %s bytes%s", m.id, state,
                             status.get("keys"), status.get("bytes"),
                             f" ({status.get('error')})" if status.get("error") else "")
                    return
                await asyncio.sleep(POLL)
        except asyncio.CancelledError:
            if not self.finished:
                await self._cancel(ranges)
            raise
        except (AdminError, DatanodeUnavailable) as exc:
            log.warning("migration %s: import failed to run: %s", m.id, exc)
            await self._write_progress({"state": "failed", "error": str(exc)})
            self.finished = True

    async def _replicated(self) -> str:
        """With ``min_replicas_to_ack`` ≥ 1, the copy counts only once that many
        replicas acknowledged it (``WAIT`` on a connection of its own, so the
        write permit's renewals never queue behind it): a failover of the
        target right after the commit must not lose the slots' keys. "" when
        acknowledged (or not asked for), else why not."""
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

    async def _write_progress(self, status: Mapping[str, Any]) -> None:
        """Merge the progress into migrations/<id> (compare-and-set, a few tries)."""
        key = self.keys.migration(self.job.id)
        for _ in range(5):
            try:
                kv = await self.store.get(key)
                if kv is None:
                    return  # the coordinator dropped the migration
                current = orjson.loads(kv.value)
                doc = progress_document(current, status, self.node_id, int(time.time() * 1000))
                self.last = doc
                self.on_progress(self.job.id, doc)
                if await self.store.cas([Compare.mod_revision(key, kv.mod_revision)],
                                        [Put(key, orjson.dumps(doc))]):
                    return
            except (StoreError, orjson.JSONDecodeError) as exc:
                log.warning("migration %s: progress not written: %s", self.job.id, exc)
                return


def _fmt(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
