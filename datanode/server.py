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
from itertools import chain
from typing import TYPE_CHECKING, Any

from clusterstate.slots import SLOT_COUNT

from . import resp
from .commands import TABLE
from .config import Settings
from .connection import FAST_ARGC, Connection
from .errors import OOM, WRITE_FENCED
from .identity import load_or_create_node_id
from .info import rss_bytes
from .keyspace import ALL_HOME, Keyspace, wall_ms
from .replication import Replication
from .routing import CLUSTERDOWN, TRYAGAIN_MIGRATING, route
from .snapshot import Snapshotter

if TYPE_CHECKING:
    from clusterstate.topology import Topology

    from .cluster_view import ClusterView
    from .commands.table import CommandSpec

log = logging.getLogger(__name__)

REDIS_VERSION = "7.2.4"
CRON_INTERVAL = 0.1
_OOM = resp.error(OOM)
_FENCED = resp.error(WRITE_FENCED)
CRC_SPACE = 1 << 16  # values of CRC16


@dataclass(slots=True)
class Stats:
    commands: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    fenced_writes: int = 0


_ALL_TRUE = [True] * SLOT_COUNT


def _slots_of(view: ClusterView | None) -> set[int]:
    """The slots this node's shard owns in ``view``."""
    shard = view.my_shard if view is not None else None
    if shard is None:
        return set()
    return set(chain.from_iterable(range(lo, hi + 1) for lo, hi in shard.slots))


class DataNode:
    """One data node: keyspace, clients, runtime configuration and lifecycle."""

    settings: Settings
    ks: Keyspace
    requirepass: str
    maxclients: int
    snapshot_interval: float
    cluster_mode: bool

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
        self.snapshots = Snapshotter(self, settings.snapshot_path)
        self._servers: list[asyncio.base_events.Server] = []
        self._cron: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.shutting_down = False
        self.run_id = os.urandom(20).hex()
        self.node_id = load_or_create_node_id(settings.dir, settings.node_id)
        self.cluster_mode = settings.cluster_enabled
        self.view: ClusterView | None = None
        # Open slots (slot -> peer node id): being copied away from / into this node.
        self.migrating: dict[int, str] = {}
        self.importing: dict[int, str] = {}
        self.handed: dict[int, bytes] = {}  # slot -> its MOVED reply (SLOTKEEPER HANDOFF)
        self.adopted: set[int] = set()  # imported slots handed off to this node (IMPORT-HANDOFF)
        # Per slot: True when a keyed command may skip routing (mine, primary, not open).
        self.fast_slots: list[bool] | None = None
        self.fast_crc: list[bool] | None = None  # fast_slots by raw CRC16 (see update_gates)
        self.fast_table: dict[bytes, tuple[CommandSpec | None, ...]] = {}
        self._fast_rows: dict[str, tuple[CommandSpec, tuple[CommandSpec | None, ...]]] = {}
        self._drops: set[int] = set()
        # Write permit (fencing): None = no permit configured (writes always allowed);
        # else the time.monotonic() deadline after which writes are refused.
        self.permit_deadline: float | None = None
        # Replication (datanode.replication): ``repl`` is the per-write hook object, None
        # while no hook is needed (a primary that never had a replica).
        self.repl: Any = None
        self.replication = Replication(self)
        self._drop_task: asyncio.Task[None] | None = None
        self.active_expire = True
        self.peak_memory = 0
        self.ops_per_sec = 0
        self._ops_sample = (time.monotonic(), 0)
        self.base_memory = rss_bytes()
        if self.cluster_mode:
            from .cluster_view import ClusterView

            self.view = ClusterView.build(None, self.node_id, *self._my_endpoint())
        self.update_gates()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        os.makedirs(self.settings.dir, exist_ok=True)
        if self.settings.cluster_config:
            self.set_topology(read_topology_file(self.settings.cluster_config))
        self.snapshots.load()
        self.replication.start()
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
        self.replication.stop()
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
        """Recompute which commands need the generic checks (on any config or view change)."""
        repl = self.repl
        self.gate_writes = (
            self.ks.maxmemory > 0
            or self.permit_deadline is not None
            or (repl is not None and repl.gates_writes())
            or (self.cluster_mode and (self.view is None or self.view.topology is None))
        )
        self.gate_reads = self.cluster_mode
        # name -> the spec by len(argv) (None where the arity fails), for the commands
        # that may skip the generic checks; in cluster mode only the keyless and the
        # single-key ones (the fast path checks argv[1]'s slot), the others route.
        self.fast_table = {
            name: self._fast_row(spec)
            for name, spec in self.table.items()
            if spec.fast_path
            and not (spec.write and self.gate_writes)
            and not (self.cluster_mode and spec.keyed and not spec.single_key)
        }
        if not self.cluster_mode:
            self.fast_slots = None
            self.fast_crc = None
            self.ks.set_home(ALL_HOME)
            return
        view = self.view
        fast = [False] * SLOT_COUNT
        if view is not None and view.ok and view.is_primary and view.my_shard is not None:
            for lo, hi in view.my_shard.slots:  # (slice assignment: C speed, every view)
                fast[lo : hi + 1] = _ALL_TRUE[: hi - lo + 1]
            for slot in self.migrating:
                fast[slot] = False
            for slot in self.importing:
                fast[slot] = False
        self.fast_slots = fast
        # A key present in the keyspace while no key lies outside the fast slots is in
        # one of them: the fast path checks its presence before hashing it.
        self.ks.set_home(fast)
        # The same indexed by the raw CRC16 of a key (slot = crc & 16383): the fast path
        # skips the mask. A hash-tagged key's slot (< 16384) indexes it as well.
        self.fast_crc = fast * (CRC_SPACE // SLOT_COUNT)

    def _fast_row(self, spec: CommandSpec) -> tuple[CommandSpec | None, ...]:
        """``spec`` at each len(argv) its arity allows, below FAST_ARGC (cached)."""
        cached = self._fast_rows.get(spec.name)
        if cached is not None and cached[0] is spec:
            return cached[1]
        row = tuple(
            spec if spec.min_args <= n <= spec.max_args else None for n in range(FAST_ARGC)
        )
        self._fast_rows[spec.name] = (spec, row)
        return row

    def gate(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> bytes | None:
        """Checks before a handler runs, in Redis's order; a refusal reply or None."""
        if self.cluster_mode and spec.keyed:
            refusal = route(
                self.view, spec, argv, conn.asking, conn.readonly,
                self.migrating, self.importing, self.ks.exists, self.handed, self.adopted,
            )
            conn.asking = False
            if refusal is not None:
                if refusal is TRYAGAIN_MIGRATING and conn.multi is None and not conn.in_exec:
                    from .transfer import transfers_of

                    return transfers_of(self).hold(conn, spec, argv)  # until writes resume
                return refusal
        if spec.write:
            if self.cluster_mode and (self.view is None or self.view.topology is None):
                return CLUSTERDOWN  # no view yet: keyless writes (FLUSHALL) wait too
            if self.repl is not None:
                refusal = self.repl.refuse_write(conn, spec)
                if refusal is not None:
                    return refusal
            deadline = self.permit_deadline
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.fenced_writes += 1
                return _FENCED
            ks = self.ks
            if ks.maxmemory and ks.over_memory() and not ks.evict() and spec.denyoom:
                return _OOM
        return None

    def set_write_permit(self, deadline: float | None) -> None:
        """Grant writes until ``deadline`` (time.monotonic()); None: no permit needed."""
        self.permit_deadline = deadline
        self.update_gates()

    def gate_queued(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> bytes | None:
        """Checks made when a command is queued inside MULTI (cluster routing)."""
        if self.cluster_mode and spec.keyed:
            return route(
                self.view, spec, argv, conn.asking, conn.readonly,
                self.migrating, self.importing, self.ks.exists, self.handed, self.adopted,
            )
        return None

    # ------------------------------------------------------------------ topology
    def _my_endpoint(self) -> tuple[str, int, int]:
        s = self.settings
        return s.announce_addr, s.port, s.admin_port

    def set_topology(self, topology: Topology) -> bool:
        """Swap in a new served view; False if it equals the current one (a no-op).

        A lower epoch, or different content at the same epoch, is refused with
        TopologyError and the current view stays.
        """
        from clusterstate.topology import TopologyError

        from .cluster_view import ClusterView

        current = self.view.topology if self.view is not None else None
        if current is not None:
            if topology.epoch < current.epoch:
                raise TopologyError(
                    f"stale topology: epoch {topology.epoch} is lower than the current {current.epoch}"
                )
            if topology.epoch == current.epoch:
                if topology == current:
                    return False
                raise TopologyError(
                    f"a different topology at the same epoch {topology.epoch} is refused"
                )
        old = self.view
        view = ClusterView.build(topology, self.node_id, *self._my_endpoint())
        self.view = view
        self.cluster_mode = True
        lost = self._slots_lost(old, view)
        here_set = _slots_of(view)
        gone = [slot for slot in self.migrating if slot not in here_set]
        for slot in gone:
            del self.migrating[slot]  # moved away: the export is over
            self.handed.pop(slot, None)
        if gone:
            from .transfer import transfers_of

            transfers_of(self).window_end(gone)
        for slot in list(self.importing):
            if slot in here_set:
                del self.importing[slot]  # now ours: the import is over
                self.adopted.discard(slot)
        self.update_gates()
        log.info(
            "topology epoch %d applied (%s, %d slots here)",
            topology.epoch,
            "primary" if view.is_primary else ("replica" if view.myself else "not a member"),
            len(here_set),
        )
        if lost:
            self.drop_slots(lost)
        if self.migrating or self.importing:
            from .transfer import transfers_of

            transfers_of(self).on_topology(topology)  # marks this view shows stale
        if self.settings.cluster_config:
            self.replication.follow_topology()
        return True

    def _slots_lost(self, old: ClusterView | None, new: ClusterView) -> list[int]:
        """Slots this node's shard owned before and another shard owns now."""
        if old is None or old.my_shard is None:
            return []
        if new.my_shard is not None and new.my_shard.id == old.my_shard.id \
                and new.my_shard.slots == old.my_shard.slots:
            return []  # (most views: another shard's change)
        gone = _slots_of(old) - _slots_of(new)
        slots = self.ks.slots
        return sorted(s for s in gone if new.owner[s] is not None and slots[s])

    def cancel_drops(self, slots: list[int]) -> None:
        """Forget pending background drops of these slots (an import takes them over)."""
        self._drops.difference_update(slots)

    def drop_slots(self, slots: list[int]) -> None:
        """Delete these slots' keys in the background, in small batches."""
        self._drops.update(slots)
        if self._drop_task is None or self._drop_task.done():
            self._drop_task = asyncio.get_running_loop().create_task(self._drop_loop())

    async def _drop_loop(self) -> None:
        dropped = 0
        while self._drops:
            slot = min(self._drops)
            if slot in self.importing:
                self._drops.discard(slot)  # being imported again: the import owns it
                continue
            if self.view is not None and self.view.my_shard is not None:
                owner = self.view.owner[slot]
                if owner is not None and owner.id == self.view.my_shard.id:
                    self._drops.discard(slot)  # it came back: keep the keys
                    continue
            n = self.ks.drop_slot_batch(slot, 500)
            dropped += n
            if not self.ks.slots[slot]:
                self._drops.discard(slot)
            await asyncio.sleep(0)
        if dropped:
            log.info("dropped %d keys of slots that moved away", dropped)

    def after_write(
        self, conn: Connection, spec: CommandSpec, argv: list[bytes], reply: bytes
    ) -> bytes:
        """Bookkeeping after a write ran: snapshot dirtiness, WATCH, replication.
        Returns the reply to send (or BLOCKED while replicas must acknowledge it)."""
        self.dirty += 1
        if self.ks.watched:
            ks = self.ks
            for key in spec.keys(argv):
                ks.touch(key)
        repl = self.repl
        if repl is not None:  # it replicates conn.effects (else argv), and clears them
            return repl.after_write(conn, argv, reply)
        if conn.effects is not None:
            conn.effects = None
        return reply

    def run_transaction(self, conn: Connection, queued: list[list[bytes]]) -> bytes:
        """EXEC: run the queued commands back to back; one array of their replies."""
        repl = self.repl
        if repl is not None:
            return repl.run_transaction(conn, queued)
        return resp.array([conn.execute(argv) for argv in queued])

    # ------------------------------------------------------------------ facts for INFO
    def uptime(self) -> int:
        return int(time.monotonic() - self.started_mono)

    def used_memory(self) -> int:
        """Interpreter baseline at start plus the dataset estimate."""
        return self.base_memory + self.ks.mem

    def role_name(self) -> str:
        return self.replication.role_name()

    def replication_offsets(self) -> dict[str, int]:
        """Replication offsets known here by node id (CLUSTER SHARDS shows them)."""
        return self.replication.offsets()

    def replication_info(self) -> list[tuple[str, object]]:
        return self.replication.info()


def read_topology_file(path: str) -> Topology:
    from clusterstate.topology import Topology, TopologyError

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TopologyError(f"cannot read cluster config {path}: {exc}") from exc
    try:
        return Topology.from_json(data)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from exc


async def serve(settings: Settings) -> None:
    node = DataNode(settings)
    await node.start()
    await node.wait_closed()
    await asyncio.sleep(0)  # let transports flush their last replies
