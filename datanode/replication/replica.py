"""The replica's side: the link to the primary and the applier of its stream.

A :class:`ReplicaLink` is one asyncio task that connects to the primary, does the
handshake (``REPLCONF listening-port``, ``REPLCONF node-id``, ``REPLCONF capa
psync2``, then ``PSYNC <replid> <offset+1>``), loads a full sync if the primary
answers ``+FULLRESYNC``, then applies the command stream until the link breaks,
and reconnects with jittered exponential backoff.

Applying: commands are run straight through their handlers with a "primary client"
(no reply, no routing, no read-only or permit check), with the keyspace's clock
frozen at 0 so that no key counts as expired while the primary's commands run (the
primary decides expiry and sends DELs). Commands are applied chunk by chunk, when
the chunk's end marker (``REPLCONF MARK <offset>``) arrives: the processed offset
is then exactly the marker's, a chunk cut by the network applies nothing until it is
whole, and a ``MULTI … EXEC`` block (always inside one chunk) applies as one step.
The chunk's bytes are appended to this node's backlog, so a promoted replica can
serve partial resyncs to the other replicas of its shard.

While a full sync loads, the old data stays visible to readers (it is swapped for
the new keyspace in one step at the end), and INFO reports the progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import hiredis

from .. import resp
from ..connection import Connection
from ..errors import READONLY, CommandError
from .fullsync import HEADER, SyncError, SyncLoader
from .stream import encode

if TYPE_CHECKING:
    from .manager import Replication

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
FEED = 4096  # the stream is fed to the parser in pieces of at most this many bytes

_READONLY = resp.error(READONLY)


class LinkError(Exception):
    """The primary answered the handshake with something unexpected."""


class LinkState(StrEnum):
    """ROLE's replica states (Redis's words)."""

    CONNECT = "connect"
    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    SYNC = "sync"
    CONNECTED = "connected"


def _zero_clock() -> int:
    return 0


class ReplicaHooks:
    """``node.repl`` while this node is a replica: every client write is refused."""

    def gates_writes(self) -> bool:
        return True

    def refuse_write(self, conn: Connection, spec: Any) -> bytes | None:
        return _READONLY

    def after_write(self, conn: Connection, argv: list[bytes], reply: bytes) -> bytes:
        conn.effects = None
        return reply

    def run_transaction(self, conn: Connection, queued: list[list[bytes]]) -> bytes:
        return resp.array([conn.execute(argv) for argv in queued])


class _LinkProtocol(asyncio.Protocol):
    """The link's socket. During the handshake it collects lines for the session
    coroutine; then the full sync and the stream are handled right here in
    ``data_received`` (no coroutine hop per read)."""

    def __init__(self, link: ReplicaLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.mode = "lines"  # "lines" → "sync" → "stream"
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        link = self.link
        link.last_io = time.monotonic()
        try:
            if self.mode == "stream":
                link._process(data)
            elif self.mode == "sync":
                link._load(data)
            else:
                self.buf += data
                w = self._waiter
                if w is not None and not w.done():
                    w.set_result(None)
        except Exception as exc:  # noqa: BLE001 - ends the session, which reconnects
            self.fail(exc)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or EOFError("the primary closed the link"))

    def fail(self, exc: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()  # retrieved: the session may end on another await
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    async def line(self, timeout: float) -> bytes:
        """The next line of the handshake (without CRLF)."""
        while True:
            if self.closed.done():
                self.closed.result()  # raises why
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line.rstrip(b"\r\n")
            self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self._waiter, timeout)

    def switch(self, mode: str) -> None:
        """Hand what is buffered, and all that follows, to the sync or stream handler."""
        self.mode = mode
        data = bytes(self.buf)
        self.buf.clear()
        if data:
            self.data_received(data)


class ReplicaLink:
    """The link of this replica to its primary at ``host:port``."""

    def __init__(self, repl: Replication, host: str, port: int, auth: str = "") -> None:
        self.repl = repl
        self.node = repl.node
        self.host = host
        self.port = port
        self.auth = auth
        self.state = LinkState.CONNECT
        self.loader: SyncLoader | None = None
        self.last_io = time.monotonic()
        self.down_since = time.monotonic()
        self.attempts = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._proto: _LinkProtocol | None = None
        self._sync_target: tuple[str, int] = ("", 0)
        self._client = Connection(self.node, admin=True)  # the "primary client"
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._parser = hiredis.Reader()
        self._raw = bytearray()  # received bytes from the last applied chunk on
        self._pending: list[list[bytes]] = []  # commands of the chunk not complete yet
        self._ack_wanted = False  # a GETACK came in the chunk being received
        self._ack_due = False
        self._broken = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._close()
        self.loader = None

    @property
    def up(self) -> bool:
        return self.state is LinkState.CONNECTED

    @property
    def unapplied(self) -> int:
        """Bytes received but not applied yet (the incomplete end of a chunk)."""
        return len(self._raw)

    def _close(self) -> None:
        proto = self._proto
        self._proto = None
        if proto is not None:
            proto.mode = "closed"
            if proto.transport is not None:
                proto.transport.abort()

    def abort(self, why: str) -> None:
        """Drop the connection (the task reconnects)."""
        proto = self._proto
        if proto is not None:
            log.warning("replication link to %s:%d: %s", self.host, self.port, why)
            proto.fail(TimeoutError(why))

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            was_up = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, EOFError, LinkError, SyncError, ValueError) as exc:
                was_up = self.state is LinkState.CONNECTED
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning("replication link to %s:%d: %s", self.host, self.port, self.last_error)
            except Exception as exc:  # noqa: BLE001 - a bug must not end replication
                was_up = self.state is LinkState.CONNECTED
                self.last_error = repr(exc)
                log.exception("replication link to %s:%d failed", self.host, self.port)
            finally:
                self._close()
                if self.state is LinkState.CONNECTED:
                    self.down_since = time.monotonic()
                self.state = LinkState.CONNECT
                self.loader = None
            if was_up:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    # ------------------------------------------------------------------ one session
    async def _session(self) -> None:
        repl = self.repl
        self.attempts += 1
        self.state = LinkState.CONNECTING
        loop = asyncio.get_running_loop()
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _LinkProtocol(self), self.host, self.port),
            CONNECT_TIMEOUT,
        )
        self._proto = proto
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.last_io = time.monotonic()
        self.state = LinkState.HANDSHAKE
        if self.auth:
            await self._call(proto, b"AUTH", self.auth.encode())
        await self._call(proto, b"REPLCONF", b"listening-port", b"%d" % self.node.settings.port)
        await self._call(proto, b"REPLCONF", b"node-id", self.node.node_id.encode())
        await self._call(proto, b"REPLCONF", b"capa", b"psync2")
        replid, offset = repl.psync_args()
        transport.write(encode([b"PSYNC", replid.encode(), b"%d" % offset]))
        line = await proto.line(repl.timeout)
        self._reset_stream()
        if line.startswith(b"+FULLRESYNC "):
            parts = line.split()
            if len(parts) != 3:
                raise LinkError(f"bad FULLRESYNC line {line[:200]!r}")
            head = (await proto.line(repl.timeout)).split()
            if len(head) != 2 or head[0] != HEADER:
                raise LinkError(f"bad full sync header {b' '.join(head)[:200]!r}")
            ks = self.node.ks
            self.loader = SyncLoader(int(head[1]), ks.clock, ks.maxmemory, ks.policy)
            self._sync_target = (parts[1].decode(), int(parts[2]))
            self.state = LinkState.SYNC
            log.info("full sync from %s:%d: %d keys at offset %s", self.host, self.port,
                     self.loader.total, parts[2].decode())
            proto.switch("sync")
        elif line.startswith(b"+CONTINUE"):
            parts = line.split()
            repl.continue_as(parts[1].decode() if len(parts) > 1 else repl.replid)
            log.info("replication link to %s:%d up: partial resync from offset %d",
                     self.host, self.port, repl.offset)
            self._linked()
            proto.switch("stream")
        else:
            raise LinkError(f"PSYNC answered {line[:200]!r}")
        await proto.closed

    async def _call(self, proto: _LinkProtocol, *argv: bytes) -> None:
        assert proto.transport is not None
        proto.transport.write(encode(list(argv)))
        line = await proto.line(self.repl.timeout)
        if not line.startswith(b"+"):
            what = b" ".join(argv[:2]).decode("utf-8", "replace") if argv[0] != b"AUTH" else "AUTH"
            raise LinkError(f"{what} answered {line[:200]!r}")

    def _linked(self) -> None:
        self.state = LinkState.CONNECTED
        self.send_ack()

    def _load(self, data: bytes) -> None:
        """A piece of the full sync arrived."""
        loader = self.loader
        assert loader is not None and self._proto is not None
        rest = loader.feed(data)
        if rest is None:
            return
        replid, offset = self._sync_target
        self.repl.full_sync_loaded(loader, replid, offset)
        log.info("full sync from %s:%d done: %d keys, %d bytes in %.2fs", self.host, self.port,
                 loader.loaded, loader.nbytes, time.monotonic() - loader.started)
        self.loader = None
        self._proto.mode = "stream"
        self._linked()
        if rest:
            self._process(rest)

    # ------------------------------------------------------------------ acks
    def send_ack(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and self.state is LinkState.CONNECTED:
            off = b"%d" % self.repl.offset
            proto.transport.write(
                b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$%d\r\n%b\r\n" % (len(off), off)
            )

    # ------------------------------------------------------------------ applying the stream
    def _process(self, data: bytes) -> None:
        """Parse what arrived; apply each chunk when its end marker is in."""
        self._raw += data
        n = len(data)
        if n <= FEED:
            self._parser.feed(data)
            self._parse()
        else:
            # hiredis moves what is left of its buffer to the front each time 1 KiB of
            # it is consumed: fed a large read at once, that is quadratic.
            feed = self._parser.feed
            for i in range(0, n, FEED):
                feed(data, i, min(FEED, n - i))
                self._parse()
                if self._broken:
                    break
        if self._ack_due:
            self._ack_due = False
            self.send_ack()
        if self._broken:
            raise LinkError(self._broken)

    def _parse(self) -> None:
        gets = self._parser.gets
        pending = self._pending
        while True:
            argv = gets()
            if argv is False:
                break
            if type(argv) is not list or not argv:
                self._broken = f"unexpected item in the replication stream: {argv!r:.100}"
                break
            if argv[0] == b"REPLCONF" and len(argv) > 1:
                sub = argv[1].upper()
                if sub == b"MARK" and len(argv) == 3:
                    self._commit(int(argv[2]))
                    if self._broken:
                        break
                elif sub == b"GETACK":
                    self._ack_wanted = True
                continue
            pending.append(argv)

    def _commit(self, end: int) -> None:
        """The chunk ending at stream offset ``end`` is complete: apply it."""
        repl = self.repl
        raw = self._raw
        n = end - repl.offset
        if not 0 < n <= len(raw):
            self._broken = (f"stream marker says offset {end} but this replica is at "
                            f"{repl.offset} with {len(raw)} bytes received: resyncing in full")
            repl.force_full_sync()
            return
        if self._ack_wanted:  # GETACK in this chunk: acknowledge once it is applied
            self._ack_wanted = False
            self._ack_due = True
        pending = self._pending
        if pending:
            ks = self.node.ks
            clock = ks.clock
            ks.clock = _zero_clock  # nothing is expired while the primary's commands run
            try:
                self._apply_batch(pending)
            finally:
                ks.clock = clock
            pending.clear()
        if n == len(raw):
            repl.stream_applied(raw)
            self._raw = bytearray()
        else:
            repl.stream_applied(raw[:n])
            del raw[:n]

    def _apply_batch(self, batch: list[list[bytes]]) -> None:
        """Run a chunk's commands through their handlers (the replica's hot path)."""
        node = self.node
        table = node.table
        ks = node.ks
        c = self._client
        writes = 0
        for argv in batch:
            spec = table.get(argv[0])
            if spec is None:
                spec = table.get(argv[0].lower())
                if spec is None:
                    log.warning("unknown command %r in the replication stream: skipped",
                                argv[0][:64])
                    continue
            if not spec.write:
                continue  # MULTI/EXEC (the chunk applies as one step anyway), PING
            try:
                spec.handler(c, argv)
            except CommandError as exc:
                log.debug("replicated %s failed here too: %s", spec.name, exc.message)
            except Exception:
                log.exception("applying replicated %s failed", spec.name)
            writes += 1
            if ks.watched:
                for key in spec.keys(argv):
                    ks.touch(key)
        c.effects = None
        node.dirty += writes
