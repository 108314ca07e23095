"""Slot transfer: a target data node pulls slots' keys straight from the source.

DESIGN.md §5. The target's sidecar (or an operator) drives the target; the target
opens one *pull connection* to the source's admin port and asks it to stream the
slots. Everything here runs on the node's event loop in small steps, so neither
side stalls its clients for more than a batch (about 1,000 keys).

Commands (admin port only; registered in ``datanode/commands/transfer.py``)
--------------------------------------------------------------------------

On the **target**:

``SLOTKEEPER IMPORT <source-host> <source-admin-port> <source-node-id> <ranges> [BATCH n] [TIMEOUT ms] [TAKEOVER]``
    Marks the slots importing (``importing[slot] = source id``: served only after
    ``ASKING``), drops any keys it already holds in them (so a retry starts clean),
    then pulls them in a background task and answers ``+OK`` at once. The same
    import while it runs → ``+OK`` (nothing restarts); slots overlapping another
    running import → error; slots this node's shard owns → error. ``BATCH``: keys per
    batch asked of the source (default 1000); ``TIMEOUT``: the longest silence
    tolerated on the pull connection (default 30000 ms). After a successful import
    the slots stay importing until a topology makes them this node's
    (``set_topology`` clears those marks). After a failure the marks are cleared,
    the keys imported so far are dropped in the background and the source is told
    ``MIGRATE-ABORT`` (best effort). Refused on a replica. With ``TAKEOVER`` the
    slots are taken over (``IMPORT-HANDOFF``) the moment the import completes: the
    sidecar's way, which saves a round trip in the window writes wait. Entries whose absolute
    expiry passed in flight are skipped. On a primary with a replication stream,
    every imported entry is replicated as ``RESTORE key <abs-ms|0> <payload>
    REPLACE ABSTTL`` and every key the import deletes (clean start, cancel,
    failure) as ``DEL``, so the target's replicas hold exactly what it holds.
``SLOTKEEPER IMPORT-STATUS [<ranges>] [WAIT ms]``
    The latest import (or the latest one touching ``ranges``) as a map (RESP2: flat
    array): ``state`` (running|done|failed|cancelled|none), ``source``, ``slots``,
    ``keys`` (applied), ``bytes`` (stream payload received), ``skipped`` (expired
    in flight), ``elapsed_ms``, ``error``. With ``WAIT ms`` a running import
    answers when it ends, or after ``ms`` (the connection blocks meanwhile).
``SLOTKEEPER IMPORT-CANCEL [<ranges>]``
    Cancels every open import (or those touching ``ranges``): a running one, or a
    finished one whose slots are still importing. Stops the pull, clears the
    importing marks, drops the imported keys in the background and tells the source
    ``MIGRATE-ABORT`` (best effort; closing the pull connection mid-stream already
    makes it resume writes). Answers the number of imports cancelled.
``SLOTKEEPER IMPORT-HANDOFF <ranges>``
    The copy of these slots is complete and recorded: serve them as this node's
    own (without ``ASKING``) until a topology makes them so. Each must have a
    completed import whose mark is still set; a new import or a cancel ends it.
    Answers the number of slots newly taken over.
``SLOTKEEPER IMPORTING``
    The importing marks: map slot → source node id.

On the **source**:

``SLOTKEEPER EXPORT <ranges> <target-node-id> [BATCH n]``
    Sent by the target's pull connection (the connection is then dedicated to the
    stream). Every slot must belong to this primary's shard and not be migrating to
    another node. Marks the slots migrating (``migrating[slot] = target``: a write
    waits, its connection held, until the slot's window ends — then it runs again:
    ``MOVED`` after a handoff or a new topology, executed here after an abort — or
    answers ``-TRYAGAIN`` after 1 s; reads are served, reads of missing keys get
    ``ASK``), then
    a background task writes the stream:

    * zero or more RESP bulk strings, each a whole number of entry records of
      ``datanode/codec.py`` (key, value, absolute expiry; at most ``n`` keys or
      about 256 KiB per bulk, expired keys skipped). Their concatenation is one
      entry stream: the last bulk ends with the codec's end marker (0xFF);
    * ``+DONE <keys> <bytes>``: the number of entries and of payload bytes sent, so
      the target can check it got everything.

    A validation error answers ``-ERR …`` instead of the stream. An abort mid-stream
    writes ``-ERR …`` in place of the next bulk and closes the connection. The
    writer honours flow control (it waits while the socket's buffer is above 1 MiB;
    a target that reads nothing for 30 s aborts the export) and yields to the loop
    between bulks. Not valid inside MULTI. Writes are refused during the copy, but
    keys may still expire or vanish (FLUSHALL): a key missing when its batch is
    built is simply not sent. If the connection is lost before ``DONE`` the slots
    are unmarked (writes resume). After ``DONE`` they stay migrating until a
    topology moves them away (``set_topology`` clears the mark and drops the keys
    in the background) or ``MIGRATE-ABORT``. Re-sending ``EXPORT`` for the same
    target supersedes a running export of those slots (a retry by the target).
``SLOTKEEPER HANDOFF <ranges> <target-node-id>``
    Sent by the target's sidecar once the copy is complete *and recorded in etcd*
    (``copy_state: done``; from then on the coordinator only commits the move),
    after ``IMPORT-HANDOFF`` on the target. Every slot must be migrating to the
    target with its export finished. Keyed commands on them then answer
    ``-MOVED <slot> <target>`` (reads too: the target may hold newer values), so
    writes resume on the target before the new topology reaches anyone. (MOVED,
    not ASK: redis-py follows ASK only to a node it already knows, and a new
    shard's primary is in no client's map yet.) The handoff ends
    with the mark: when a topology moves the slots away (``MOVED`` from then on) or
    on ``MIGRATE-ABORT``; a newer view that shows no migration of a handed-off slot
    does not end it (the target may have taken writes). A handed-off slot refuses a
    new ``EXPORT``. Answers the number of slots newly handed off.
``SLOTKEEPER MIGRATE-ABORT <ranges> [<target-node-id>]``
    Clears the migrating marks of those slots (only those migrating to
    ``target-node-id`` if given) and stops an export of them still streaming.
    Answers the number of slots unmarked.
``SLOTKEEPER MIGRATING``
    The migrating marks: map slot → target node id.
``SLOTKEEPER TRANSFER-WINDOWS [RESET]``
    How long writes were refused, once per move that ended here (handed off,
    moved away by a topology, or unmarked): the latest 10,000, in microseconds,
    oldest first. ``RESET`` forgets them after answering.
``SLOTKEEPER DROPSLOTS <ranges>``
    Deletes those slots' keys in the background in small batches
    (``DataNode.drop_slots``); refused for slots this node's shard owns and for
    slots being imported. Answers the number of keys to delete.

``<ranges>`` is ``clusterstate.topology.parse_ranges`` syntax: ``100``, ``100-200``,
``0-10,20``.

Order of a move (what the sidecar/coordinator does): ``IMPORT`` on the target,
``IMPORT-STATUS … WAIT`` until ``done``, record the copy as done (etcd),
``IMPORT-HANDOFF`` on the target then ``HANDOFF`` on the source (writes resume on
the target), commit the new owner
(epoch + 1), apply the new topology on the **target first**, then on the source.
(The other order makes the source answer MOVED to a target that still answers
MOVED back until it gets the topology.) Writes to the slot are refused from
``EXPORT`` until the handoff, or without one until the source applies the new
topology.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref
from binascii import crc_hqx
from collections import deque
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import hiredis

from clusterstate.slots import key_slot
from clusterstate.topology import (
    MigrationState,
    Topology,
    TopologyError,
    parse_ranges,
    slot_ranges,
)

from .codec import END, CodecError, Entry, EntryDecoder, encode_entry
from .connection import BLOCKED
from .errors import CommandError
from .routing import TRYAGAIN_MIGRATING

if TYPE_CHECKING:
    from .commands.table import CommandSpec
    from .connection import Connection
    from .server import DataNode

log = logging.getLogger(__name__)

BATCH_KEYS = 1000  # keys per streamed bulk (IMPORT … BATCH n overrides)
MAX_BATCH_KEYS = 100_000
BATCH_BYTES = 256 * 1024  # a bulk is cut once its payload reaches this
SCAN_LIMIT = 4 * BATCH_KEYS  # keys looked at between two yields even if none is sent
HIGH_WATER = 1 << 20  # exporter waits while the socket buffer holds more than this …
LOW_WATER = 256 * 1024  # … until it is below this
DRAIN_POLL = 0.001  # seconds between two looks at a full socket buffer
STALL_TIMEOUT = 30.0  # an export whose target reads nothing for this long is aborted
APPLY_CHUNK = 250  # entries applied between two yields on the target
DROP_BATCH = 500  # keys the target deletes between two yields (retry, cancel, failure)
READ_SIZE = 1 << 20
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
ABORT_TIMEOUT = 2.0  # the best-effort MIGRATE-ABORT to the source
KEEP_IMPORTS = 16  # finished imports remembered for IMPORT-STATUS
WINDOWS_KEPT = 10_000  # write-refusal windows remembered for TRANSFER-WINDOWS
HOLD = 1.0  # seconds a write to a slot being copied away waits before -TRYAGAIN
PULL_NAME = b"slotkeeper-pull"  # CLIENT SETNAME of the pull connection (CLIENT LIST on the source)

RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"


class TransferError(Exception):
    """A transfer cannot go on; the message says why (reported in IMPORT-STATUS)."""


class _ConnectionLost(Exception):
    """The export connection closed before DONE."""


class _Stopped(Exception):
    """The import was ended (IMPORT-CANCEL) while its task was between two steps.

    ``Task.cancel`` alone is not enough on Python 3.11: ``asyncio.wait_for`` returns
    the result instead of raising when the awaited read completes in the same loop
    iteration as the cancellation, so the pull loop also checks the import's state
    after every await (and uses ``asyncio.timeout``, which does not swallow it).
    """


# --------------------------------------------------------------------------- ranges


def parse_slots(raw: bytes) -> tuple[int, ...]:
    """``b"0-10,20"`` → sorted distinct slots; CommandError if malformed or empty."""
    try:
        ranges = parse_ranges(raw.decode("ascii"))
    except (TopologyError, UnicodeDecodeError) as exc:
        raise CommandError(f"ERR invalid slot ranges: {exc}") from None
    slots = sorted({s for start, end in ranges for s in range(start, end + 1)})
    if not slots:
        raise CommandError("ERR invalid slot ranges: no slot given")
    return tuple(slots)


def format_slots(slots: Iterable[int]) -> str:
    """Slots as ranges text: ``[1, 2, 3, 7]`` → ``"1-3,7"``."""
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in slot_ranges(slots))


def command(*args: bytes | str | int) -> bytes:
    """One RESP command (array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


# --------------------------------------------------------------------------- records


@dataclass(eq=False, slots=True)
class Export:
    """One stream being written to a target's pull connection (source side)."""

    slots: tuple[int, ...]
    target: str
    conn: Connection
    batch: int
    keys: int = 0
    nbytes: int = 0
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    epoch: int = 0  # the target's view epoch when it asked (0: not given)


@dataclass(eq=False, slots=True)
class Import:
    """One pull from a source (target side)."""

    host: str
    port: int
    source: str
    slots: tuple[int, ...]
    batch: int
    timeout: float
    slot_set: frozenset[int] = frozenset()
    epoch: int = 0  # this node's view epoch when the import began
    state: str = RUNNING
    keys: int = 0  # entries applied
    received: int = 0  # entries decoded (applied + skipped)
    nbytes: int = 0  # stream payload bytes received
    skipped: int = 0  # entries whose TTL passed in flight
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    task: asyncio.Task[None] | None = None
    waiters: list[list[Any]] = field(default_factory=list)  # IMPORT-STATUS … WAIT
    takeover: bool = False  # IMPORT … TAKEOVER: serve the slots once complete

    def same_as(self, host: str, port: int, source: str, slots: tuple[int, ...]) -> bool:
        return (self.host, self.port, self.source, self.slots) == (host, port, source, slots)

    def elapsed_ms(self) -> int:
        end = self.finished if self.finished is not None else time.monotonic()
        return int((end - self.started) * 1000)

    def status(self) -> list[tuple[bytes, bytes | int]]:
        return [
            (b"state", self.state.encode()),
            (b"source", self.source.encode()),
            (b"slots", format_slots(self.slots).encode()),
            (b"keys", self.keys),
            (b"bytes", self.nbytes),
            (b"skipped", self.skipped),
            (b"elapsed_ms", self.elapsed_ms()),
            (b"error", self.error.encode()),
        ]


NO_IMPORT_STATUS: list[tuple[bytes, bytes | int]] = [
    (b"state", b"none"), (b"source", b""), (b"slots", b""), (b"keys", 0), (b"bytes", 0),
    (b"skipped", 0), (b"elapsed_ms", 0), (b"error", b""),
]


# --------------------------------------------------------------------------- per node

_NODES: weakref.WeakKeyDictionary[DataNode, SlotTransfers] = weakref.WeakKeyDictionary()


def transfers_of(server: DataNode) -> SlotTransfers:
    """The transfer state of one data node (created on first use)."""
    t = _NODES.get(server)
    if t is None:
        t = _NODES[server] = SlotTransfers(server)
    return t


class SlotTransfers:
    """Both halves of slot transfer for one data node: exports (source) and imports
    (target). Owns which export holds each migrating mark, so a superseded or dead
    export never clears a mark a newer one set."""

    def __init__(self, server: DataNode) -> None:
        self.server = server
        self.exports: dict[int, Export] = {}  # slot -> the export streaming it
        self.imports: deque[Import] = deque()  # newest last; running ones are never trimmed
        self._aborts: dict[tuple[str, int], set[asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # background drops and aborts (kept alive)
        self.mark_epochs: dict[int, int] = {}  # slot -> the EPOCH its migrating mark was set at
        self.marked_at: dict[int, float] = {}  # slot -> when writes to it began to be refused
        self.windows: deque[int] = deque(maxlen=WINDOWS_KEPT)  # µs writes were refused, per move
        self.held: dict[int, list[tuple[Connection, list[bytes], asyncio.TimerHandle]]] = {}

    # =================================================================== source side

    def start_export(self, conn: Connection, slots: tuple[int, ...], target: str, batch: int,
                     epoch: int = 0) -> None:
        """Validate, mark the slots migrating and start streaming them to ``conn``.

        A slot still marked for another target is refused, unless this EXPORT
        comes from a newer view (``epoch``) than the mark and this node's view
        runs a migration of the slot to ``target``'s shard (the target shard
        failed over after its primary copied the slot: the old mark is stale)."""
        server = self.server
        view = server.view
        if view is None or view.topology is None:
            raise CommandError("ERR this node has no cluster topology")
        if view.my_shard is None or not view.is_primary:
            raise CommandError("ERR only the primary of a slot's shard can export it")
        if target == server.node_id:
            raise CommandError("ERR a node cannot export slots to itself")
        mine = view.my_shard.id
        for s in slots:
            owner = view.owner[s]
            if owner is None or owner.id != mine:
                raise CommandError(f"ERR slot {s} is not served by this node's shard")
            if s in server.handed:
                raise CommandError(
                    f"ERR slot {s} was handed off to {server.migrating.get(s)}: it waits for the "
                    "topology that moves it (SLOTKEEPER MIGRATE-ABORT to take it back)"
                )
            peer = server.migrating.get(s)
            if peer is not None and peer != target and not (
                epoch > self.mark_epochs.get(s, 0) and s in running_to(view.topology, target)
            ):
                raise CommandError(
                    f"ERR slot {s} is migrating to {peer}: SLOTKEEPER MIGRATE-ABORT it first"
                )
        wanted = set(slots)
        if any(ex.conn is conn for ex in self.exports.values()):
            raise CommandError("ERR an export is already streaming on this connection")
        for old in {self.exports[s] for s in slots if s in self.exports}:
            log.info("export of slots %s to %s superseded by a new EXPORT",
                     format_slots(old.slots), old.target)
            self._stop_export(old, b"superseded by a new EXPORT of the same slots", keep=wanted)
        ex = Export(slots, target, conn, batch, epoch=epoch)
        now = time.monotonic()
        for s in slots:
            if server.migrating.get(s) != target:
                self.marked_at[s] = now  # a retry for the same target continues the window
            server.migrating[s] = target
            self.exports[s] = ex
            self.mark_epochs[s] = epoch
        server.update_gates()
        log.info("exporting slots %s to %s (writes to them refused until they move)",
                 format_slots(slots), target)
        ex.task = asyncio.get_running_loop().create_task(self._export(ex))

    def on_topology(self, topology: Topology) -> None:
        """A new view: drop the migrating marks it shows stale. A mark set by an
        EXPORT at epoch ``e`` is stale in a view newer than ``e`` that runs no
        migration of the slot to the mark's target (the migration failed, was
        cancelled, or its target shard failed over): writes resume here."""
        server = self.server
        stale: dict[str, list[int]] = {}
        allowed: dict[str, set[int]] = {}
        for s, target in server.migrating.items():
            e = self.mark_epochs.get(s, 0)
            if not e or topology.epoch <= e:
                continue
            if s in server.handed:
                # the target took writes since the handoff: only the view that moves
                # the slot away (or an explicit MIGRATE-ABORT) ends it
                if s not in running_to(topology, target):
                    log.warning("slot %d was handed off to %s but the view of epoch %d runs "
                                "no migration of it: still handed off", s, target, topology.epoch)
                continue
            if target not in allowed:
                allowed[target] = running_to(topology, target)
            if s not in allowed[target]:
                stale.setdefault(target, []).append(s)
        for target, slots in stale.items():
            log.info("migrating marks of slots %s to %s are stale at epoch %d: dropped",
                     format_slots(slots), target, topology.epoch)
            self.abort_migration(tuple(slots), target)
        # target side: an import whose slots a newer view no longer moves here
        # (failed, cancelled) is cancelled: its keys are dropped
        if server.importing and server.node_id:
            here = running_to(topology, server.node_id)
            dead = [s for im in self.imports if im.epoch and topology.epoch > im.epoch
                    for s in im.slots if server.importing.get(s) == im.source and s not in here]
            if dead:
                log.info("imports of slots %s are no longer running at epoch %d: cancelled",
                         format_slots(dead), topology.epoch)
                self.cancel_imports(tuple(dead))

    def abort_migration(self, slots: tuple[int, ...], target: str | None) -> int:
        """MIGRATE-ABORT: unmark these slots (migrating to ``target`` if given)."""
        server = self.server
        unmarked = 0
        for s in slots:
            peer = server.migrating.get(s)
            if peer is None or (target is not None and peer != target):
                continue
            unmarked += 1
            ex = self.exports.get(s)
            if ex is not None:
                self._stop_export(ex, b"aborted by SLOTKEEPER MIGRATE-ABORT")
            server.migrating.pop(s, None)
            server.handed.pop(s, None)
            self.mark_epochs.pop(s, None)
            self.window_end((s,))
        server.update_gates()
        if unmarked:
            log.info("migration of %d slot(s) in %s aborted: writes resume", unmarked,
                     format_slots(slots))
        return unmarked

    def handoff(self, slots: tuple[int, ...], target: str) -> int:
        """HANDOFF: the copy of these slots is complete on ``target`` and recorded as
        such (the target's sidecar wrote ``copy_state: done``, after which the
        coordinator only ever commits the move) and the target took them over
        (IMPORT-HANDOFF): every keyed command on them now answers ``-MOVED`` to the
        target, so writes resume there before the new topology arrives. Each slot
        must be migrating to ``target`` with its export finished."""
        server = self.server
        view = server.view
        if view is None or view.topology is None:
            raise CommandError("ERR this node has no cluster topology")
        addr = view.addr_of(target)
        if addr is None:
            raise CommandError(f"ERR node {target} is not in this node's topology")
        for s in slots:
            if server.migrating.get(s) != target:
                raise CommandError(f"ERR slot {s} is not migrating to {target}")
            if s in self.exports:
                raise CommandError(f"ERR slot {s} is still being copied to {target}")
        fresh = [s for s in slots if s not in server.handed]
        for s in slots:
            server.handed[s] = b"-MOVED %d %s\r\n" % (s, addr)
        self.window_end(fresh)
        if fresh:
            log.info("slots %s handed off to %s: MOVED there from now on",
                     format_slots(fresh), target)
        return len(fresh)

    def adopt(self, slots: tuple[int, ...]) -> int:
        """IMPORT-HANDOFF (target side, before HANDOFF on the source): serve these
        imported slots as this node's own until the topology makes them so. Each
        must have been imported completely (the import done, the mark still set)."""
        server = self.server
        if server.view is None or not server.view.is_primary:
            raise CommandError("ERR only a primary can take imported slots over")
        for s in slots:
            im = next((i for i in reversed(self.imports) if s in i.slot_set), None)
            if im is None or im.state != DONE or server.importing.get(s) != im.source:
                raise CommandError(f"ERR slot {s} has no completed import on this node")
        fresh = [s for s in slots if s not in server.adopted]
        server.adopted.update(slots)
        if fresh:
            log.info("imported slots %s taken over: served here until the new topology",
                     format_slots(fresh))
        return len(fresh)

    def window_end(self, slots: Iterable[int]) -> None:
        """Writes to ``slots`` are no longer refused here (handed off, moved away or
        unmarked): record how long they were, once per move, and run the writes
        held meanwhile again (now MOVED, or executed here)."""
        slots = list(slots)
        started = [t for s in slots if (t := self.marked_at.pop(s, None)) is not None]
        if started:
            self.windows.append(int((time.monotonic() - min(started)) * 1_000_000))
        if self.held:
            loop = asyncio.get_running_loop()
            for s in slots:
                for conn, argv, timer in self.held.pop(s, ()):
                    timer.cancel()
                    loop.call_soon(_resume, conn, argv)

    def hold(self, conn: Connection, spec: CommandSpec, argv: list[bytes]) -> bytes:
        """A write to a slot being copied away waits here (its connection blocked)
        rather than answering ``-TRYAGAIN``: the write runs again the moment the
        slot's window ends, so the client sees ``MOVED`` (or its reply) after the
        window itself instead of retrying on a backoff. Past :data:`HOLD` it answers
        ``-TRYAGAIN`` after all."""
        from .routing import slot_of

        slot = slot_of(spec.keys(argv))
        entries = self.held.setdefault(slot, [])

        def expire() -> None:
            for i, (c, _, _) in enumerate(entries):
                if c is conn:
                    del entries[i]
                    break
            if not entries and self.held.get(slot) is entries:
                del self.held[slot]
            conn.unblock(TRYAGAIN_MIGRATING)

        entries.append((conn, argv, asyncio.get_running_loop().call_later(HOLD, expire)))
        return conn.block()

    def _stop_export(self, ex: Export, why: bytes, keep: Set[int] = frozenset()) -> None:
        """Stop a running export: its slots not in ``keep`` are unmarked, its stream
        ends with an error and its connection is closed."""
        self._release(ex, unmark=True, keep=keep)
        if ex.task is not None and ex.task is not asyncio.current_task():
            ex.task.cancel()
        transport = ex.conn.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > HIGH_WATER:
            ex.conn.kill()  # the target is not reading: an error line would never get out
        else:
            transport.write(b"-ERR export aborted: %b\r\n" % why)
            transport.close()

    def _release(self, ex: Export, unmark: bool, keep: Set[int] = frozenset()) -> None:
        """Forget ``ex`` as the owner of its slots; with ``unmark`` clear their marks."""
        server = self.server
        changed = False
        for s in ex.slots:
            if self.exports.get(s) is ex:
                del self.exports[s]
                if unmark and s not in keep and server.migrating.get(s) == ex.target:
                    del server.migrating[s]
                    self.window_end((s,))
                    changed = True
        if changed:
            server.update_gates()

    async def _export(self, ex: Export) -> None:
        server = self.server
        ks = server.ks
        transport = ex.conn.transport
        assert transport is not None
        parts: list[bytes] = []
        count = size = 0
        try:
            for slot in ex.slots:
                names = list(ks.slots[slot])
                i, n = 0, len(names)
                while i < n:
                    self._check_export(ex, slot)
                    d = ks.data  # re-read: FLUSHALL swaps the dicts
                    exp = ks.expires
                    now = ks.clock()
                    stop = min(n, i + SCAN_LIMIT)
                    while i < stop and count < ex.batch and size < BATCH_BYTES:
                        key = names[i]
                        i += 1
                        value = d.get(key)
                        if value is None:
                            continue  # deleted (expired, flushed) since the slot was listed
                        at = exp.get(key) if exp else None
                        if at is not None and at <= now:
                            continue
                        rec = encode_entry(key, value, at)
                        parts.append(rec)
                        size += len(rec)
                        count += 1
                    if count >= ex.batch or size >= BATCH_BYTES:
                        await self._send(ex, parts, count)
                        parts, count, size = [], 0, 0
                    elif i < n:
                        await asyncio.sleep(0)
            self._check_export(ex, None)
            parts.append(END)
            await self._send(ex, parts, count)
            self._check_export(ex, None)
            transport.write(b"+DONE %d %d\r\n" % (ex.keys, ex.nbytes))
            self._release(ex, unmark=False)
            log.info("exported %d keys (%d bytes) of slots %s to %s in %.0f ms; "
                     "they stay migrating until the new topology", ex.keys, ex.nbytes,
                     format_slots(ex.slots), ex.target, (time.monotonic() - ex.started) * 1000)
        except _ConnectionLost:
            self._release(ex, unmark=True)
            log.warning("export of slots %s to %s: connection lost after %d keys; "
                        "slots unmarked, writes resume", format_slots(ex.slots), ex.target, ex.keys)
        except TransferError as exc:
            log.warning("export of slots %s to %s stopped: %s", format_slots(ex.slots), ex.target, exc)
            self._stop_export(ex, str(exc).encode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on the stream and logged
            log.exception("export of slots %s to %s failed", format_slots(ex.slots), ex.target)
            self._stop_export(ex, f"internal error: {exc!r}".encode())
        finally:
            self._release(ex, unmark=False)

    def _check_export(self, ex: Export, slot: int | None) -> None:
        transport = ex.conn.transport
        if ex.conn.closing or transport is None or transport.is_closing():
            raise _ConnectionLost
        if slot is not None and self.server.migrating.get(slot) != ex.target:
            raise TransferError(f"slot {slot} is no longer migrating to {ex.target}")

    async def _send(self, ex: Export, parts: list[bytes], count: int) -> None:
        """Write one bulk, then yield; wait while the socket buffer is too full."""
        data = b"".join(parts)
        transport = ex.conn.transport
        assert transport is not None
        self._check_export(ex, None)
        transport.write(b"$%d\r\n" % len(data))
        transport.write(data)
        transport.write(b"\r\n")
        ex.keys += count
        ex.nbytes += len(data)
        await asyncio.sleep(0)
        if transport.get_write_buffer_size() > HIGH_WATER:
            deadline = time.monotonic() + STALL_TIMEOUT
            while transport.get_write_buffer_size() > LOW_WATER:
                self._check_export(ex, None)
                if time.monotonic() > deadline:
                    raise TransferError(f"the target read nothing for {STALL_TIMEOUT:g} s")
                await asyncio.sleep(DRAIN_POLL)

    # =================================================================== target side

    def start_import(
        self, host: str, port: int, source: str, slots: tuple[int, ...], batch: int, timeout: float,
        takeover: bool = False,
    ) -> bool:
        """Mark the slots importing and start pulling; False if the same import runs."""
        server = self.server
        view = server.view
        if not server.cluster_mode or view is None:
            raise CommandError("ERR This instance has cluster support disabled")
        if source == server.node_id:
            raise CommandError("ERR a node cannot import slots from itself")
        if server.role_name() == "replica":
            raise CommandError("ERR a replica cannot import slots: import on its primary")
        for s in slots:
            if _owned(server, s):
                raise CommandError(f"ERR slot {s} is already served by this node's shard")
        wanted = set(slots)
        for im in self.imports:
            if im.state == RUNNING and not wanted.isdisjoint(im.slot_set):
                if im.same_as(host, port, source, slots):
                    return False
                raise CommandError(
                    f"ERR slots {format_slots(wanted & im.slot_set)} are being imported from "
                    f"{im.source}: SLOTKEEPER IMPORT-CANCEL first"
                )
        im = Import(host, port, source, slots, batch, timeout, slot_set=frozenset(slots),
                    takeover=takeover)
        im.epoch = view.topology.epoch if view.topology is not None else 0
        for old in [o for o in self.imports if not wanted.isdisjoint(o.slot_set)]:
            self.imports.remove(old)  # finished and superseded: the new one owns the marks
        for s in slots:
            server.importing[s] = source
            server.adopted.discard(s)
        server.update_gates()
        _cancel_pending_drops(server, slots)
        self.imports.append(im)
        self._trim()
        log.info("importing slots %s from %s (%s:%d)", format_slots(slots), source, host, port)
        im.task = asyncio.get_running_loop().create_task(self._import(im))
        return True

    def find(self, slots: tuple[int, ...] | None) -> Import | None:
        """The latest import (touching ``slots`` if given)."""
        for im in reversed(self.imports):
            if slots is None or not im.slot_set.isdisjoint(slots):
                return im
        return None

    def status(self, slots: tuple[int, ...] | None) -> list[tuple[bytes, bytes | int]]:
        im = self.find(slots)
        return im.status() if im is not None else NO_IMPORT_STATUS

    def wait_end(self, conn: Connection, im: Import, wait_ms: int,
                 encode: Callable[[list[tuple[bytes, bytes | int]]], bytes]) -> bytes:
        """Block ``conn`` until ``im`` ends or ``wait_ms`` pass; then its status."""
        waiter: list[Any] = []

        def answer() -> None:
            if waiter in im.waiters:
                im.waiters.remove(waiter)
            waiter[0].cancel()
            conn.unblock(encode(im.status()))

        waiter.extend((asyncio.get_running_loop().call_later(wait_ms / 1000, answer), answer))
        im.waiters.append(waiter)
        return conn.block()

    @staticmethod
    def _ended(im: Import) -> None:
        """Answer the IMPORT-STATUS … WAIT callers of an import that just ended."""
        for waiter in list(im.waiters):
            waiter[1]()

    def cancel_imports(self, slots: tuple[int, ...] | None) -> int:
        """IMPORT-CANCEL: stop open imports (touching ``slots`` if given)."""
        importing = self.server.importing
        n = 0
        for im in list(self.imports):
            if slots is not None and im.slot_set.isdisjoint(slots):
                continue
            if im.state == RUNNING:
                if im.task is not None:
                    im.task.cancel()
            elif not (im.state == DONE and any(importing.get(s) == im.source for s in im.slots)):
                continue
            self._end_import(im, CANCELLED, "cancelled by SLOTKEEPER IMPORT-CANCEL")
            n += 1
        return n

    def _trim(self) -> None:
        finished = [im for im in self.imports if im.state != RUNNING]
        for im in finished[: max(0, len(finished) - KEEP_IMPORTS)]:
            self.imports.remove(im)

    def _end_import(self, im: Import, state: str, why: str) -> None:
        """A failed or cancelled import: unmark, drop what it brought, tell the source."""
        im.state = state
        im.error = why if state == FAILED else ""
        im.finished = time.monotonic()
        self._ended(im)
        server = self.server
        released = [s for s in im.slots if server.importing.get(s) == im.source]
        for s in released:
            del server.importing[s]
            server.adopted.discard(s)
        if released:
            server.update_gates()
        held = [s for s in released if server.ks.slots[s]]
        if held:
            self._background(self._drop_slots(held))
        log.warning("import of slots %s from %s %s after %d keys (%s); %d slot(s) to drop",
                    format_slots(im.slots), im.source, state, im.keys, why, len(held))
        self._tell_source(im)

    def _background(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drop_slots(self, slots: list[int], im: Import | None = None) -> int:
        """Delete the keys of ``slots`` in batches, yielding between them. With ``im``
        (a running import starting clean) it stops when that import ends; without, a
        slot being imported again is left to its new import (which empties it itself).
        Deletions are replicated (DEL), as imported keys are (RESTORE)."""
        server = self.server
        ks = server.ks
        dropped = 0
        for s in slots:
            while ks.slots[s]:
                if im is None and (s in server.importing or _owned(server, s)):
                    break
                dropped += self._drop_batch(s)
                await asyncio.sleep(0)
                if im is not None:
                    _check_running(im)
        return dropped

    def _drop_batch(self, slot: int) -> int:
        ks = self.server.ks
        propagate = _propagator(self.server)
        n = 0
        for key in list(islice(ks.slots[slot], DROP_BATCH)):
            if ks.delete(key):  # an expired key is deleted (and replicated) by the keyspace
                n += 1
                if ks.watched:
                    ks.touch(key)
                if propagate is not None:
                    propagate([[b"DEL", key]])
        self.server.dirty += n
        return n

    def _tell_source(self, im: Import) -> None:
        """Best effort ``MIGRATE-ABORT`` to the source, in the background."""
        where = (im.host, im.port)
        task = self._background(self._abort_source(im))
        pending = self._aborts.setdefault(where, set())
        pending.add(task)

        def done(t: asyncio.Task[None]) -> None:
            pending.discard(t)
            if not pending and self._aborts.get(where) is pending:
                del self._aborts[where]

        task.add_done_callback(done)

    async def _abort_source(self, im: Import) -> None:
        writer = None
        try:
            async with asyncio.timeout(ABORT_TIMEOUT):
                reader, writer = await asyncio.open_connection(im.host, im.port)
                writer.write(command(b"SLOTKEEPER", b"MIGRATE-ABORT", format_slots(im.slots),
                                     self.server.node_id))
                reply = await reader.readline()
            log.info("source %s answered MIGRATE-ABORT of slots %s: %r", im.source,
                     format_slots(im.slots), reply.strip())
        except (OSError, TimeoutError) as exc:
            log.info("could not tell source %s to abort slots %s: %r (it unmarks them itself "
                     "when the pull connection drops)", im.source, format_slots(im.slots), exc)
        finally:
            if writer is not None:
                writer.close()

    async def _import(self, im: Import) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            pending = self._aborts.get((im.host, im.port))
            if pending:  # an earlier abort must not land after this import's EXPORT
                await asyncio.wait(list(pending), timeout=2 * ABORT_TIMEOUT)
                _check_running(im)
            await self._drop_held(im)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, stream = await asyncio.open_connection(im.host, im.port)
            except TimeoutError:
                raise TransferError(f"cannot connect to {im.host}:{im.port}: timed out") from None
            except OSError as exc:
                raise TransferError(f"cannot connect to {im.host}:{im.port}: {exc}") from None
            writer = stream
            _check_running(im)
            sock = stream.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream.write(
                command(b"CLIENT", b"SETNAME", PULL_NAME)
                + command(b"SLOTKEEPER", b"EXPORT", format_slots(im.slots), self.server.node_id,
                          b"BATCH", im.batch, *self._epoch_option())
            )
            await self._pull(im, reader)
            im.state = DONE
            im.finished = time.monotonic()
            if im.takeover:
                self.adopt(im.slots)
            self._ended(im)
            log.info("imported %d keys (%d bytes, %d expired in flight) of slots %s from %s "
                     "in %d ms", im.keys, im.nbytes, im.skipped, format_slots(im.slots),
                     im.source, im.elapsed_ms())
        except _Stopped:
            pass  # IMPORT-CANCEL already did the bookkeeping
        except asyncio.CancelledError:
            raise  # IMPORT-CANCEL already did the bookkeeping
        except (TransferError, CodecError, hiredis.ProtocolError, OSError) as exc:
            if im.state == RUNNING:
                self._end_import(im, FAILED, str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - reported in IMPORT-STATUS and logged
            log.exception("import of slots %s failed", format_slots(im.slots))
            if im.state == RUNNING:
                self._end_import(im, FAILED, f"internal error: {exc!r}")
        finally:
            if writer is not None:
                writer.close()
            self._trim()

    async def _drop_held(self, im: Import) -> None:
        """Delete any keys this node already holds in the slots (a retry starts clean)."""
        dropped = await self._drop_slots(list(im.slots), im)
        if dropped:
            log.info("dropped %d keys already held in slots %s before importing them",
                     dropped, format_slots(im.slots))

    async def _pull(self, im: Import, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        decoder = EntryDecoder()
        greeted = False  # the CLIENT SETNAME reply comes first
        while True:
            reply = parser.gets()
            if reply is False:
                try:
                    async with asyncio.timeout(im.timeout):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    raise TransferError(
                        f"no data from the source for {im.timeout:g} s"
                    ) from None
                _check_running(im)
                if not data:
                    raise TransferError("the source closed the connection before DONE")
                parser.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise TransferError(f"source: {reply}")
            if not greeted:
                if reply != b"OK":
                    raise TransferError(f"unexpected reply to CLIENT SETNAME: {reply!r:.100}")
                greeted = True
                continue
            if not isinstance(reply, bytes):
                raise TransferError(f"unexpected reply from the source: {reply!r:.100}")
            if decoder.done:
                self._check_done(im, reply)
                return
            entries = decoder.feed(reply)
            im.nbytes += len(reply)
            im.received += len(entries)
            for i in range(0, len(entries), APPLY_CHUNK):
                self._apply(im, entries[i : i + APPLY_CHUNK])
                await asyncio.sleep(0)
                _check_running(im)

    def _epoch_option(self) -> tuple[bytes | int, ...]:
        """``EPOCH <e>``: the epoch of this node's view (so the source can tell a
        newer EXPORT from a stale mark)."""
        view = self.server.view
        epoch = view.topology.epoch if view is not None and view.topology is not None else 0
        return (b"EPOCH", epoch) if epoch > 0 else ()

    def _check_done(self, im: Import, reply: bytes) -> None:
        word, _, rest = reply.partition(b" ")
        try:
            keys, nbytes = (int(x) for x in rest.split())
        except ValueError:
            raise TransferError(f"expected DONE <keys> <bytes>, got {reply[:100]!r}") from None
        if word != b"DONE":
            raise TransferError(f"expected DONE <keys> <bytes>, got {reply[:100]!r}")
        if (keys, nbytes) != (im.received, im.nbytes):
            raise TransferError(
                f"source sent {keys} keys / {nbytes} bytes, received {im.received} / {im.nbytes}"
            )

    def _apply(self, im: Import, entries: list[Entry]) -> None:
        server = self.server
        ks = server.ks
        now = ks.clock()
        slots = im.slot_set
        kset = ks.set
        propagate = _propagator(server)
        applied = 0
        for key, value, at in entries:
            if (crc_hqx(key, 0) & 16383 if 123 not in key else key_slot(key)) not in slots:
                raise TransferError(f"the source sent key {key[:64]!r} of a slot not imported")
            if at is None:
                kset(key, value)
            elif at <= now:
                im.skipped += 1
                continue
            else:
                kset(key, value)
                ks.set_expire(key, at)
            applied += 1
            if propagate is not None:
                propagate([_restore(key, value, at)])
        if ks.watched:
            for key, _, _ in entries:
                ks.touch(key)
        im.keys += applied
        server.dirty += applied

    # =================================================================== both

    def drop(self, slots: tuple[int, ...]) -> int:
        """DROPSLOTS: background-delete keys of slots that belong elsewhere."""
        server = self.server
        view = server.view
        if not server.cluster_mode or view is None:
            raise CommandError("ERR This instance has cluster support disabled")
        for s in slots:
            if _owned(server, s):
                raise CommandError(f"ERR slot {s} is served by this node's shard: not dropped")
            if s in server.importing:
                raise CommandError(f"ERR slot {s} is being imported: SLOTKEEPER IMPORT-CANCEL first")
        held = [s for s in slots if server.ks.slots[s]]
        keys = sum(len(server.ks.slots[s]) for s in held)
        if held:
            server.drop_slots(held)
            log.info("dropping %d keys of slots %s in the background", keys, format_slots(held))
        return keys


def _propagator(server: DataNode) -> Callable[[list[list[bytes]]], None] | None:
    """``propagate(cmds)`` of the replication stream while this primary has one."""
    return getattr(server.repl, "propagate", None)


def _resume(conn: Connection, argv: list[bytes]) -> None:
    """Run a held write again (routing decides anew) and answer it."""
    if conn.closing or not conn.blocked:
        return
    reply = conn.execute(argv)
    if reply is not BLOCKED:  # (BLOCKED: held again, or waiting for replica acks)
        conn.unblock(reply)


def _restore(key: bytes, value: Any, at: int | None) -> list[bytes]:
    """The replicated form of an imported entry (what RESTORE itself replicates)."""
    from .commands.persistence import dump_payload

    return [b"RESTORE", key, b"%d" % (at or 0), dump_payload(value), b"REPLACE", b"ABSTTL"]


def running_to(topology: Topology | None, target: str) -> set[int]:
    """Slots that RUNNING migrations of ``topology`` move to the shard whose
    primary is ``target``."""
    if topology is None:
        return set()
    shard = next((sh.id for sh in topology.shards if sh.primary == target), None)
    if shard is None:
        return set()
    return {s for m in topology.migrations
            if m.state is MigrationState.RUNNING and m.to_shard == shard
            for lo, hi in m.slots for s in range(lo, hi + 1)}


def _owned(server: DataNode, slot: int) -> bool:
    """True if this node's shard serves ``slot`` in its current view."""
    view = server.view
    if view is None or view.my_shard is None:
        return False
    owner = view.owner[slot]
    return owner is not None and owner.id == view.my_shard.id


def _check_running(im: Import) -> None:
    if im.state != RUNNING:
        raise _Stopped


def _cancel_pending_drops(server: DataNode, slots: Iterable[int]) -> None:
    """Keep the server's background slot drop off slots being imported again."""
    server.cancel_drops(list(slots))

