"""The data node process: listeners, the periodic cron, the gates before commands,
snapshots at start, on schedule and at shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import resp
from .commands import TABLE
from .config import Settings
from .connection import Connection
from .errors import OOM
from .info import rss_bytes
from .keyspace import Keyspace, wall_ms
from .snapshot import Snapshotter

if TYPE_CHECKING:
    from .commands.table import CommandSpec

log = logging.getLogger(__name__)

REDIS_VERSION = "7.2.4"
CRON_INTERVAL = 0.1
_OOM = resp.error(OOM)


@dataclass(slots=True)
class Stats:
    commands: int = 0
    total_connections: int = 0
    rejected_connections: int = 0


class DataNode:
    """One data node: keyspace, clients, runtime configuration and lifecycle."""

    def __init__(self, settings: Settings, clock: Callable[[], int] = wall_ms) -> None:
        self.settings = settings
        self.ks = Keyspace(clock)
        self.table = TABLE
        self.clients: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self.stats = Stats()
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.dirty = 0  # writes since the last snapshot
        # Runtime configuration (CONFIG SET changes these, not the frozen settings).
        self.requirepass = settings.requirepass
        self.maxclients = settings.maxclients
        self.proto_max_bulk_len = settings.proto_max_bulk_len
        self.client_output_buffer_limit = settings.client_output_buffer_limit
        self.snapshot_interval = settings.snapshot_interval
        self.ks.set_policy(settings.maxmemory, settings.maxmemory_policy)
        # Gates: whether writes / keyed reads need the generic checks at all.
        self.gate_writes = False
        self.gate_reads = False
        self.update_gates()
        self.snapshots = Snapshotter(self, settings.snapshot_path)
        self._servers: list[asyncio.base_events.Server] = []
        self._cron: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.shutting_down = False
        self.run_id = os.urandom(20).hex()
        self.cluster_mode = False
        self.active_expire = True
        self.peak_memory = 0
        self.ops_per_sec = 0
        self._ops_sample = (time.monotonic(), 0)
        self.base_memory = rss_bytes()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        os.makedirs(self.settings.dir, exist_ok=True)
        loaded = self.snapshots.load()
        if loaded is not None:
            log.info("loaded %d keys from %s", loaded, self.settings.snapshot_path)
        loop = asyncio.get_running_loop()
        s = self.settings
        client = await loop.create_server(
            lambda: Connection(self), s.bind, s.port, reuse_address=True, backlog=1024
        )
        admin = await loop.create_server(
            lambda: Connection(self, admin=True), s.admin_bind, s.admin_port, reuse_address=True
        )
        self._servers = [client, admin]
        self._cron = asyncio.create_task(self._run_cron())
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_shutdown, True)
            except (NotImplementedError, RuntimeError):
                pass
        log.info(
            "data node ready: clients on %s:%d, admin on %s:%d, data in %s",
            s.bind, s.port, s.admin_bind, s.admin_port, s.dir,
        )

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def request_shutdown(self, save: bool) -> bool:
        """Stop serving; with ``save`` write a snapshot first. False if the save failed."""
        if self.shutting_down:
            return True
        if save:
            try:
                self.snapshots.save()
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                log.error("shutdown refused: snapshot failed: %s", exc)
                return False
        self.shutting_down = True
        log.info("shutting down (%s)", "snapshot saved" if save else "no snapshot")
        for srv in self._servers:
            srv.close()
        for conn in list(self.clients.values()):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()
        if self._cron is not None:
            self._cron.cancel()
        self.snapshots.abort_child()
        self._closed.set()
        return True

    async def _run_cron(self) -> None:
        while True:
            await asyncio.sleep(CRON_INTERVAL)
            try:
                self.cron()
            except Exception:
                log.exception("cron failed")

    def cron(self) -> None:
        if self.active_expire:
            self.ks.active_expire_cycle()
        now = time.monotonic()
        then, count = self._ops_sample
        if now - then >= 1.0:
            self.ops_per_sec = int((self.stats.commands - count) / (now - then))
            self._ops_sample = (now, self.stats.commands)
        self.snapshots.poll()
        interval = self.snapshot_interval
        if (
            interval > 0
            and self.dirty > 0
            and not self.snapshots.in_progress
            and time.time() - self.snapshots.last_attempt >= interval
        ):
            self.snapshots.bgsave()

    # ------------------------------------------------------------------ clients
    def next_client_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ gates
    def update_gates(self) -> None:
        """Recompute which commands need the generic checks (called on config change)."""
        self.gate_writes = self.ks.maxmemory > 0
        self.gate_reads = False

    def gate(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> bytes | None:
        """Checks before a handler runs, in Redis's order; a refusal reply or None."""
        if spec.write:
            ks = self.ks
            if ks.maxmemory and ks.over_memory() and not ks.evict() and spec.denyoom:
                return _OOM
        return None

    def gate_queued(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> bytes | None:
        """Checks made when a command is queued inside MULTI."""
        return None

    def after_write(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> None:
        self.dirty += 1
        ks = self.ks
        if ks.watched:
            for key in spec.keys(argv):
                ks.touch(key)
        conn.effects = None

    def run_transaction(self, conn: Connection, queued: list[list[bytes]]) -> bytes:
        """EXEC: run the queued commands back to back; one array of their replies."""
        return resp.array([conn.execute(argv) for argv in queued])

    # ------------------------------------------------------------------ facts for INFO
    def uptime(self) -> int:
        return int(time.monotonic() - self.started_mono)

    def used_memory(self) -> int:
        """Interpreter baseline at start plus the dataset estimate."""
        return self.base_memory + self.ks.mem

    def role_name(self) -> str:
        return "master"

    def replication_info(self) -> list[tuple[str, object]]:
        return [
            ("role", self.role_name()),
            ("connected_slaves", 0),
            ("master_replid", self.run_id),
            ("master_repl_offset", 0),
        ]


async def serve(settings: Settings) -> None:
    node = DataNode(settings)
    await node.start()
    await node.wait_closed()
    await asyncio.sleep(0)  # let transports flush their last replies
