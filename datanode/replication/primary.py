"""The primary's side of replication: the write hooks, the stream to the replicas,
full and partial syncs, acknowledgements, WAIT and acknowledged writes.

A :class:`Primary` is the node's ``repl`` hook object while it is a primary with a
backlog (from the first replica on). Per write it canonicalises the effects and
appends their encoding, as pieces, to a list (``_parts``); at most FLUSH_DELAY later
(at the end of the event-loop iteration when a client waits for acknowledgements or
much is pending) the list is joined into one chunk, which is appended to the backlog
and written to every online replica's transport. Nothing of this runs while no
backlog exists.

The hot path is the plain 3-argument write (``SET k v``, ``HSET h f v`` …) with no
effects, no transaction being recorded and no acknowledged writes: a dict lookup of
its name and one ``list.extend`` of precomputed pieces and the arguments themselves,
nothing formatted, no offset arithmetic. The stream offset (``repl.offset``) counts
the pending pieces lazily, when it is read (:meth:`_count`) or at the flush.

Acknowledged writes (``min_replicas_to_ack`` ≥ 1): the client is blocked
(``conn.block()``) until that many online replicas acknowledged the stream offset
of its write; past ``ack_timeout`` it gets ``-NOREPLICAS`` and the write stays
applied here (as Redis's WAIT). A write is refused up front (not applied) while
fewer replicas than that are online.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .. import resp
from ..errors import CommandError
from .fullsync import fork_fullsync
from .stream import (
    CRLF,
    EXEC,
    GETACK,
    MID,
    MULTI,
    NUM,
    PING,
    REWRITERS,
    SMALL,
    canonical,
    encode,
    encode_into,
    head3,
    mark,
)

if TYPE_CHECKING:
    from ..connection import Connection
    from .manager import Replication

log = logging.getLogger(__name__)

NOREPLICAS = "NOREPLICAS Not enough good replicas to write."
_NOREPLICAS = resp.error(NOREPLICAS)
PING_PERIOD = 10.0  # seconds between PINGs on an idle stream (Redis's repl-ping-replica-period)
# The stream is written to the replicas at most this long after a write (coalescing
# many event-loop iterations into one socket write), at once when a client waits for
# acknowledgements (WAIT, acknowledged writes), and at the end of the event-loop
# iteration once large arguments (≥ SMALL bytes: the fast path takes none) pending
# pass FLUSH_BYTES.
FLUSH_DELAY = 0.001
FLUSH_BYTES = 64 * 1024

_rewriter = REWRITERS.get

# name -> [head3(name) + NUM[n] for n < KEY_SMALL], for the command names (as spelled,
# all upper or all lower case) whose 3-argument form is replicated as it came: added
# by the slow path when it sees one.
KEY_SMALL = 256
_HEAD3: dict[bytes, list[bytes]] = {}
_NO_HEADS: dict[bytes, list[bytes]] = {}


def _heads(name: bytes) -> list[bytes]:
    head = head3(name)
    return [head + NUM[n] for n in range(KEY_SMALL)]


class FollowerState(StrEnum):
    """What INFO shows as ``state=`` (Redis's words)."""

    HANDSHAKE = "handshake"
    WAIT_FORK = "wait_bgsave"
    SYNCING = "send_bulk"
    ONLINE = "online"


@dataclass(eq=False, slots=True)
class Follower:
    """One replica connected to this primary."""

    conn: Connection
    state: FollowerState = FollowerState.HANDSHAKE
    node_id: str = ""
    listening_port: int = 0
    ip: str = ""
    ack: int = -1  # last acknowledged offset (-1: none yet)
    ack_time: float = field(default_factory=time.monotonic)
    legacy: bool = False  # came with SYNC, not PSYNC
    child: int | None = None
    pipe: int | None = None
    fork_offset: int = 0
    sync_started: float = 0.0

    @property
    def addr(self) -> str:
        if self.ip:
            return self.ip
        host = self.conn.addr.rpartition(":")[0]
        return host.strip("[]") or "?"


@dataclass(eq=False, slots=True)
class _Hold:
    offset: int
    conn: Connection
    reply: bytes
    deadline: float


@dataclass(eq=False, slots=True)
class _Wait:
    offset: int
    count: int
    conn: Connection
    timer: asyncio.TimerHandle | None = None


class Primary:
    """Hooks and stream of a primary (installed as ``node.repl``)."""

    def __init__(self, repl: Replication) -> None:
        self.repl = repl
        self.node = repl.node
        self.ks = repl.node.ks
        self.followers: dict[int, Follower] = {}  # by connection id
        self.online: list[Follower] = []
        self.min_acks = 0
        self.ack_timeout = 1.0  # seconds
        # The stream not flushed yet, as pieces; the first ``_counted`` of them are
        # counted in ``repl.offset`` (the rest when it is read: _count()).
        self._parts: list[bytes] = []
        self._counted = 0
        self._counted_bytes = 0
        self._big = 0  # bytes of large pieces pending (flushed early past FLUSH_BYTES)
        # _HEAD3 while the hot path applies (no transaction being recorded, no
        # acknowledged writes), else an empty dict.
        self._heads3 = _HEAD3
        self._flush_handle: asyncio.Handle | None = None
        self._flush_soon = False
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._getack = False
        self._tx: list[list[bytes]] | None = None
        self._holds: deque[_Hold] = deque()
        self._waits: list[_Wait] = []
        self._hold_timer: asyncio.TimerHandle | None = None
        self._last_ping = time.monotonic()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref
        if loop is None:
            loop = self._loop_ref = asyncio.get_running_loop()
        return loop

    # ================================================================== hooks (node.repl)
    def gates_writes(self) -> bool:
        return self.min_acks > 0

    def refuse_write(self, conn: Connection, spec: Any) -> bytes | None:
        n = self.min_acks
        if n and len(self.online) < n:
            return _NOREPLICAS
        return None

    def after_write(self, conn: Connection, argv: list[bytes], reply: bytes) -> bytes:
        """Per write (the primary's hot path): its effects (``conn.effects``, else the
        command itself, canonicalised) go to the stream."""
        effects = conn.effects
        if effects is None:
            heads = self._heads3.get(argv[0])
            if heads is not None and len(argv) == 3:
                _, a, b = argv
                try:  # an IndexError when a or b is too long for the tables
                    self._parts.extend((heads[len(a)], a, MID[len(b)], b, CRLF))
                except IndexError:
                    return self._after_write(conn, [argv], reply)
                if self._flush_handle is None:
                    self._schedule(False)
                return reply
            return self._after_write(conn, [argv], reply)
        conn.effects = None
        return self._after_write(conn, effects, reply)

    def _after_write(self, conn: Connection, cmds: list[list[bytes]], reply: bytes) -> bytes:
        if conn.in_exec and self._tx is not None:
            for argv in cmds:
                self._tx.extend(canonical(self.ks, argv))
            return reply
        parts = self._parts
        size = len(parts)
        for argv in cmds:
            name = argv[0]
            entry = _rewriter(name)
            if entry is None:
                if not (name.isupper() or name.islower()):
                    entry = _rewriter(name.lower())
                elif len(argv) == 3 and type(name) is bytes and name not in _HEAD3:
                    _HEAD3[name] = _heads(name)  # replicated as it came from now on
            elif len(argv) < entry[1]:
                if len(argv) == 3 and name not in _HEAD3:
                    _HEAD3[name] = _heads(name)  # SET k v: as it came, unlike SET k v EX n
                entry = None
            if entry is None:
                encode_into(parts, argv)
            else:
                for c in entry[0](self.ks, argv):
                    encode_into(parts, c)
        if len(parts) == size:
            return reply  # nothing to replicate
        for argv in cmds:
            for a in argv:
                if len(a) >= SMALL:
                    self._big += len(a)
        big = self._big >= FLUSH_BYTES
        if self._flush_handle is None or (big and not self._flush_soon):
            self._schedule(big)
        if self.min_acks:
            return self._hold(conn, reply)
        return reply

    def run_transaction(self, conn: Connection, queued: list[list[bytes]]) -> bytes:
        """EXEC: the queued commands back to back; their effects go to the stream
        wrapped in MULTI/EXEC, so a replica applies them as one step."""
        tx: list[list[bytes]] = []
        self._tx = tx
        self._heads3 = _NO_HEADS
        conn.in_exec = True
        try:
            replies = [conn.execute(argv) for argv in queued]
        finally:
            conn.in_exec = False
            self._tx = None
            self._heads3 = _NO_HEADS if self.min_acks else _HEAD3
        reply = resp.array(replies)
        if not tx:
            return reply
        parts = self._parts
        parts.append(MULTI)
        for argv in tx:
            encode_into(parts, argv)
        parts.append(EXEC)
        if self._flush_handle is None:
            self._schedule(False)
        if self.min_acks:
            return self._hold(conn, reply)
        return reply

    def on_delete(self, key: bytes) -> None:
        """The keyspace deleted a key by itself (expiry, eviction): replicate a DEL."""
        self.append(encode([b"DEL", key]))

    def propagate(self, cmds: list[list[bytes]]) -> None:
        """Replicate commands that changed the keyspace outside a client command."""
        for argv in cmds:
            self.append(encode(argv))

    def _count(self) -> None:
        """Count the pending pieces not counted yet in ``repl.offset``."""
        parts = self._parts
        i = self._counted
        n = len(parts)
        if i < n:
            size = sum(map(len, parts[i:] if i else parts))
            self.repl._offset += size
            self._counted_bytes += size
            self._counted = n

    # ================================================================== the stream
    def append(self, data: bytes) -> None:
        """Add encoded commands to the stream."""
        self._parts.append(data)
        if len(data) >= SMALL:
            self._big += len(data)
            if self._big >= FLUSH_BYTES and not self._flush_soon:
                self._schedule(True)
                return
        if self._flush_handle is None:
            self._schedule(False)

    def _schedule(self, soon: bool) -> None:
        """Flush at the end of this loop iteration (``soon``) or after FLUSH_DELAY."""
        handle = self._flush_handle
        if handle is not None:
            if not soon or self._flush_soon:
                return
            handle.cancel()
        loop = self._loop
        if soon:
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_later(FLUSH_DELAY, self._flush)
        self._flush_soon = soon

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # a no-op when it is the one running
            self._flush_handle = None
        self._big = 0
        parts = self._parts
        if self._getack:
            self._getack = False
            if self.online:
                parts.append(GETACK)
        if not parts:
            return
        body = b"".join(parts)
        parts.clear()
        repl = self.repl
        offset = repl._offset + len(body) - self._counted_bytes
        self._counted = self._counted_bytes = 0
        m = mark(offset)
        repl._offset = offset + len(m)
        chunk = body + m
        backlog = repl.backlog
        assert backlog is not None
        backlog.append(chunk)
        dropped = None
        limit = self.node.client_output_buffer_limit
        for f in self.online:
            t = f.conn.transport
            if f.conn.closing or t is None:
                continue  # reaped by tick()
            t.write(chunk)
            if limit and t.get_write_buffer_size() > limit:
                dropped = (dropped or []) + [f]
        for f in dropped or ():
            self.drop(f, "output buffer limit reached (replica too slow)")

    def flush_now(self) -> None:
        """Push what is pending into the backlog (and to online replicas) at once."""
        if self._parts or self._getack:
            self._flush()

    # ================================================================== handshake and sync
    def follower(self, conn: Connection) -> Follower:
        f = self.followers.get(conn.id)
        if f is None:
            f = self.followers[conn.id] = Follower(conn)
        return f

    def psync(self, conn: Connection, replid: str, offset: int, legacy: bool = False) -> bytes:
        """PSYNC (``offset`` as sent: the next byte wanted) or SYNC. The reply, or b""
        when the full sync child will write it."""
        repl = self.repl
        f = self.follower(conn)
        if f.state is not FollowerState.HANDSHAKE:
            raise CommandError("ERR this connection already synced")
        self.flush_now()
        backlog = repl.backlog
        assert backlog is not None
        want = offset - 1
        same = (replid == repl.replid and want <= repl.offset) or (
            replid == repl.replid2 and want < repl.offset2
        )
        if not legacy and same and backlog.holds(want):
            data = backlog.read_from(want) or b""
            f.state = FollowerState.ONLINE
            f.ack = want
            f.ack_time = time.monotonic()
            self.online.append(f)
            repl.stats.sync_partial_ok += 1
            log.info(
                "replica %s:%d (%s) resumes at offset %d: partial resync, %d bytes from the backlog",
                f.addr, f.listening_port, f.node_id or "?", want, len(data),
            )
            return b"+CONTINUE %s\r\n" % repl.replid.encode() + data
        if replid != "?" and not legacy:
            repl.stats.sync_partial_err += 1
            why = (
                "unknown replication id" if not same else
                f"offset {want} not in the backlog [{backlog.start}, {backlog.end}]"
            )
            log.info("replica %s:%d asks PSYNC %s %d: full sync (%s)",
                     f.addr, f.listening_port, replid, offset, why)
        f.state = FollowerState.WAIT_FORK
        f.legacy = legacy
        f.sync_started = time.monotonic()
        self._loop.call_soon(self._start_full_sync, f)
        return b""

    def _start_full_sync(self, f: Follower) -> None:
        if self.followers.get(f.conn.id) is not f:
            return
        t = f.conn.transport
        if f.conn.closing or t is None:
            self.drop(f, "connection closed before the full sync")
            return
        if t.get_write_buffer_size():
            # Replies still queued on the socket: the child must write after them.
            self._loop.call_later(0.002, self._start_full_sync, f)
            return
        repl = self.repl
        self.flush_now()
        offset = repl.offset
        head = b"" if f.legacy else b"+FULLRESYNC %s %d\r\n" % (repl.replid.encode(), offset)
        sock = t.get_extra_info("socket")
        try:
            pid, pipe = fork_fullsync(self.ks, sock.fileno(), head, repl.timeout)
        except OSError as exc:
            log.error("full sync for replica %s not started: fork failed: %s", f.addr, exc)
            self.drop(f, "fork failed")
            return
        f.child, f.pipe, f.fork_offset = pid, pipe, offset
        f.state = FollowerState.SYNCING
        repl.stats.sync_full += 1
        self._loop.add_reader(pipe, self._child_done, f)
        log.info(
            "full sync to replica %s:%d (%s) from offset %d by child %d",
            f.addr, f.listening_port, f.node_id or "?", offset, pid,
        )

    def _child_done(self, f: Follower) -> None:
        pipe = f.pipe
        if pipe is None:
            return
        try:
            message = os.read(pipe, 4096).decode("utf-8", "replace")
        except BlockingIOError:
            return
        except OSError as exc:
            message = f"err status pipe: {exc}"
        self._close_child(f, kill=False)
        if not message.startswith("ok "):
            why = message.removeprefix("err ") or "child exited without a status"
            log.warning("full sync to replica %s:%d failed: %s", f.addr, f.listening_port, why)
            self.drop(f, "full sync failed")
            return
        _, keys, size = message.split()
        if self.followers.get(f.conn.id) is not f or f.conn.closing:
            self.drop(f, "connection closed during the full sync")
            return
        self.flush_now()
        data = self.repl.backlog.read_from(f.fork_offset) if self.repl.backlog else None
        if data is None:
            log.warning(
                "replica %s:%d: the writes made during its full sync no longer fit in the "
                "backlog (repl-backlog-size %d): dropping it, it will sync again",
                f.addr, f.listening_port, self.repl.backlog_size,
            )
            self.drop(f, "backlog overrun during the full sync")
            return
        assert f.conn.transport is not None
        if data:
            f.conn.transport.write(data)
        f.state = FollowerState.ONLINE
        f.ack_time = time.monotonic()
        self.online.append(f)
        log.info(
            "full sync to replica %s:%d done: %s keys, %s bytes in %.2fs; %d bytes of stream follow",
            f.addr, f.listening_port, keys, size, time.monotonic() - f.sync_started, len(data),
        )

    def _close_child(self, f: Follower, kill: bool) -> None:
        pid, pipe = f.child, f.pipe
        f.child = f.pipe = None
        if pipe is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(pipe)
            with contextlib.suppress(OSError):
                os.close(pipe)
        if pid is not None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _reap(pid, self._loop)
            gc.unfreeze()

    def drop(self, f: Follower, why: str) -> None:
        """Forget a replica: stop its sync child, close its connection."""
        if self.followers.get(f.conn.id) is f:
            del self.followers[f.conn.id]
            log.info("replica %s:%d (%s) dropped: %s", f.addr, f.listening_port,
                     f.node_id or "?", why)
        if f in self.online:
            self.online.remove(f)
        if f.child is not None:
            self._close_child(f, kill=True)
        if not f.conn.closing:
            f.conn.kill()

    def drop_all(self, why: str) -> None:
        for f in list(self.followers.values()):
            self.drop(f, why)

    # ================================================================== acknowledgements
    def on_ack(self, conn: Connection, offset: int) -> None:
        f = self.followers.get(conn.id)
        if f is None:
            return
        if offset > f.ack:
            f.ack = offset
        f.ack_time = time.monotonic()
        if self._holds or self._waits:
            self._release()

    def acked(self, offset: int) -> int:
        """Online replicas that acknowledged ``offset``."""
        return sum(1 for f in self.online if f.ack >= offset)

    def _threshold(self, n: int) -> int:
        """The highest offset acknowledged by at least ``n`` online replicas (-1: none)."""
        acks = sorted((f.ack for f in self.online), reverse=True)
        return acks[n - 1] if 0 < n <= len(acks) else -1

    def _release(self) -> None:
        holds = self._holds
        if holds:
            n = self.min_acks
            top = self._threshold(n) if n else self.repl.offset
            while holds and holds[0].offset <= top:
                h = holds.popleft()
                h.conn.unblock(h.reply)
        if self._waits:
            # Unblocking runs the client's next commands, which may WAIT again.
            waits, self._waits = self._waits, []
            keep = []
            for w in waits:
                count = self.acked(w.offset)
                if count >= w.count:
                    if w.timer is not None:
                        w.timer.cancel()
                    w.conn.unblock(resp.integer(count))
                elif not w.conn.closing:
                    keep.append(w)
            self._waits = keep + self._waits

    def _hold(self, conn: Connection, reply: bytes) -> bytes:
        deadline = time.monotonic() + self.ack_timeout
        self._holds.append(_Hold(self.repl.offset, conn, reply, deadline))
        self._getack = True
        self._schedule(True)
        if self._hold_timer is None:
            self._hold_timer = self._loop.call_later(self.ack_timeout, self._expire_holds)
        return conn.block()

    def _expire_holds(self) -> None:
        self._hold_timer = None
        holds = self._holds
        now = time.monotonic()
        while holds and holds[0].deadline <= now:
            h = holds.popleft()
            h.conn.unblock(_NOREPLICAS)
        if holds:
            self._hold_timer = self._loop.call_later(holds[0].deadline - now, self._expire_holds)

    def set_min_acks(self, n: int, timeout: float | None) -> None:
        self.min_acks = n
        self._heads3 = _HEAD3 if not n and self._tx is None else _NO_HEADS
        if timeout is not None:
            self.ack_timeout = timeout
        if self._holds:
            self._release()

    def wait(self, conn: Connection, count: int, timeout_ms: int) -> bytes:
        """WAIT: block until ``count`` replicas acknowledged everything written so far."""
        offset = self.repl.offset
        acked = self.acked(offset)
        if acked >= count or conn.in_exec or conn.multi is not None:
            return resp.integer(acked)
        w = _Wait(offset, count, conn)
        self._waits.append(w)
        if timeout_ms > 0:
            w.timer = self._loop.call_later(timeout_ms / 1000.0, self._wait_timeout, w)
        self._getack = True
        self._schedule(True)
        return conn.block()

    def _wait_timeout(self, w: _Wait) -> None:
        if w in self._waits:
            self._waits.remove(w)
            w.conn.unblock(resp.integer(self.acked(w.offset)))

    def unblock_all(self) -> None:
        """Answer every blocked client now (called once this node is not a primary
        any more, so what they send next is refused rather than blocked again)."""
        holds, self._holds = self._holds, deque()
        waits, self._waits = self._waits, []
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for h in holds:
            h.conn.unblock(_NOREPLICAS)
        for w in waits:
            if w.timer is not None:
                w.timer.cancel()
            w.conn.unblock(resp.integer(self.acked(w.offset)))

    # ================================================================== housekeeping
    def tick(self, now: float) -> None:
        timeout = self.repl.timeout
        for f in list(self.followers.values()):
            if f.conn.closing:
                self.drop(f, "connection closed")
            elif f.state is FollowerState.ONLINE and now - f.ack_time > timeout:
                self.drop(f, f"no acknowledgement for {timeout:.0f}s")
        if self._waits:
            self._waits = [w for w in self._waits if not w.conn.closing]
        if self.online and now - self._last_ping >= PING_PERIOD:
            self._last_ping = now
            self.append(PING)


def _reap(pid: int, loop: asyncio.AbstractEventLoop, tries: int = 200) -> None:
    """Collect an exiting child without blocking the loop."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if done == 0 and tries > 0:
        loop.call_later(0.01, _reap, pid, loop, tries - 1)
