"""One client connection: the only module on the client path that touches sockets.

``data_received`` parses the whole read batch, runs each command through the
generic checks (arity, auth, MULTI queueing, the node's gates) and its handler,
and writes all replies with one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from binascii import crc_hqx
from typing import TYPE_CHECKING, Any

from clusterstate.slots import key_slot

from . import resp
from .errors import NOAUTH, CommandError, unknown_command, wrong_args
from .request import ProtocolError, RequestParser

if TYPE_CHECKING:
    from .server import DataNode

log = logging.getLogger(__name__)

_NOAUTH = resp.error(NOAUTH)


# The fast table (DataNode.update_gates) maps a command name to its spec by len(argv)
# below FAST_ARGC, None where the arity fails: one index checks the arity.
FAST_ARGC = 32
_NOT_FAST: tuple[Any, ...] = (None,) * FAST_ARGC
_NO_FAST_PATH: dict[bytes, tuple[Any, ...]] = {}


class _Blocked(bytes):
    """The type of BLOCKED: a reply that will come later."""


BLOCKED: bytes = _Blocked()


_QUEUED = resp.QUEUED


class Connection(asyncio.Protocol):
    __slots__ = (
        "server",
        "ks",
        "table",
        "parser",
        "transport",
        "resp3",
        "null",
        "authed",
        "id",
        "name",
        "lib_name",
        "lib_ver",
        "addr",
        "laddr",
        "admin",
        "multi",
        "multi_failed",
        "watching",
        "dirty",
        "asking",
        "readonly",
        "closing",
        "created",
        "last_cmd",
        "effects",
        "out_limit",
        "flags",
        "backlogged",
        "blocked",
        "pending",
        "in_exec",
    )

    def __init__(self, server: DataNode, admin: bool = False) -> None:
        self.server = server
        self.ks = server.ks
        self.table = server.table
        s = server.settings
        self.parser = RequestParser(
            server.proto_max_bulk_len, s.max_multibulk_len, s.client_query_buffer_limit
        )
        self.transport: asyncio.Transport | None = None
        self.resp3 = False
        self.null = resp.NULL2
        self.authed = not server.requirepass or admin
        self.id = server.next_client_id()
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.addr = "?"
        self.laddr = "?"
        self.admin = admin
        self.multi: list[list[bytes]] | None = None
        self.multi_failed = False
        self.watching: set[bytes] | None = None
        self.dirty = False
        self.asking = False
        self.readonly = False
        self.closing = False
        self.created = time.monotonic()
        self.last_cmd = b"NULL"
        # A handler whose command is not deterministic on replay sets the effects to
        # replicate instead of its argv (used by replication).
        self.effects: list[list[bytes]] | None = None
        self.out_limit = server.client_output_buffer_limit
        self.flags = ""
        self.backlogged = False
        self.blocked = False  # waiting for unblock(): reading paused
        self.pending: list[list[bytes]] = []  # commands read while blocked
        self.in_exec = False  # running EXEC's queued commands

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.addr = _fmt_addr(peer)
        self.laddr = _fmt_addr(sock)
        server = self.server
        if not self.admin and len(server.clients) >= server.maxclients:
            transport.write(resp.error("ERR max number of clients reached"))
            self.closing = True
            transport.close()
            server.stats.rejected_connections += 1
            return
        server.clients[self.id] = self
        server.stats.total_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.clients.pop(self.id, None)
        if self.watching:
            self.unwatch_all()

    def pause_writing(self) -> None:
        # The transport's buffer passed its high-water mark: from now on check the
        # output limit after each batch (until it drains).
        self.backlogged = True

    def resume_writing(self) -> None:
        self.backlogged = False

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            cmds = self.parser.feed(data)
        except ProtocolError as exc:
            self._protocol_error(str(exc))
            return
        if not cmds:
            return
        self.server.stats.commands += len(cmds)
        if self.blocked:
            self.pending.extend(cmds)  # read before the pause took effect
            return
        self._run(cmds)

    def _run(self, cmds: list[list[bytes]]) -> None:
        """Run a batch of commands and write all their replies at once.

        The fast path runs known commands with the right arity straight into their
        handler when no per-command check applies; anything else takes execute().
        A handler that must wait (WAIT, a write waiting for replica acks) returns
        BLOCKED: the replies so far are written, the rest of the batch waits in
        ``pending`` and reading pauses until :meth:`unblock`.
        """
        server = self.server
        # Commands that may skip the generic checks right now (server.update_gates).
        table = server.fast_table if self.authed and self.multi is None else _NO_FAST_PATH
        # Cluster mode: whether a slot may skip routing, by the raw CRC16 of its key;
        # a key in ks.home_keys is in such a slot (no CRC needed).
        fast_crc = server.fast_crc
        ks = self.ks
        blocked = BLOCKED
        out: list[bytes] = []
        for argv in cmds:
            try:
                spec = table.get(argv[0], _NOT_FAST)[len(argv)]
            except IndexError:  # FAST_ARGC arguments or more
                spec = None
            if spec is None or (
                fast_crc is not None
                and spec.keyed
                and (k := argv[1]) not in ks.home_keys
                and not fast_crc[crc_hqx(k, 0) if 123 not in k else key_slot(k)]
            ):
                reply = self.execute(argv)
                if reply is blocked:
                    self._block_rest(cmds, argv)
                    break
                out.append(reply)
                if self.closing:
                    break
                table = server.fast_table if self.authed and self.multi is None else _NO_FAST_PATH
                continue
            handler = spec.handler  # (not spec.handler(...): LOAD_METHOD on a slot is slow)
            try:
                reply = handler(self, argv)
            except CommandError as exc:
                self.effects = None
                out.append(resp.error(exc.message))
                continue
            except Exception:
                out.append(self._handler_failed(spec, argv))
                if self.closing:
                    break
                continue
            if spec.write:
                reply = server.after_write(self, spec, argv, reply)
            if reply is blocked:
                self._block_rest(cmds, argv)
                break
            out.append(reply)
        self.last_cmd = argv[0]
        transport = self.transport
        if transport is None:
            return
        if out:
            transport.write(b"".join(out))  # one reply: join returns it as is
        if self.closing:
            transport.close()
        elif self.backlogged and transport.get_write_buffer_size() > self.out_limit:
            log.warning("client %s (%s) closed: output buffer limit reached", self.id, self.addr)
            self.kill()

    # ------------------------------------------------------------------ blocking
    def block(self) -> bytes:
        """Called by a handler that will answer later through :meth:`unblock`."""
        self.blocked = True
        return BLOCKED

    def _block_rest(self, cmds: list[list[bytes]], blocked: list[bytes]) -> None:
        """Keep the commands after ``blocked`` (an element of ``cmds``) for unblock()."""
        i = next(i for i, argv in enumerate(cmds) if argv is blocked)
        self.pending = cmds[i + 1 :]
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def unblock(self, reply: bytes) -> None:
        """Answer the blocked command, then run what the client sent meanwhile."""
        if not self.blocked:
            return
        self.blocked = False
        if self.closing or self.transport is None:
            return
        self.transport.write(reply)
        pending, self.pending = self.pending, []
        if pending:
            self._run(pending)
        if not self.blocked and not self.closing:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ dispatch
    def execute(self, argv: list[bytes]) -> bytes:
        """Run one command through the generic checks and its handler; the encoded reply."""
        table = self.table
        name = argv[0]
        spec = table.get(name)
        if spec is None:
            spec = table.get(name.lower()) if type(name) is bytes else None
            if spec is None:
                if any(type(a) is not bytes for a in argv):
                    self._protocol_error("expected '$' bulk strings as arguments")
                    return b""
                if self.multi is not None:
                    self.multi_failed = True
                return resp.error(unknown_command(argv))
        arity = spec.arity
        if (len(argv) != arity) if arity > 0 else (len(argv) < -arity):
            if self.multi is not None:
                self.multi_failed = True
            return resp.error(wrong_args(spec.name))
        if not self.authed and not spec.noauth:
            return _NOAUTH
        if self.multi is not None and spec.queued:
            return self._queue(spec, argv)
        server = self.server
        if (spec.write and server.gate_writes) or (spec.keyed and server.gate_reads):
            refusal = server.gate(self, spec, argv)
            if refusal is not None:
                return refusal
        try:
            reply = spec.handler(self, argv)
        except CommandError as exc:
            self.effects = None
            return resp.error(exc.message)
        except Exception:
            return self._handler_failed(spec, argv)
        if spec.write:
            return server.after_write(self, spec, argv, reply)
        return reply

    def _handler_failed(self, spec: Any, argv: list[bytes]) -> bytes:
        self.effects = None
        if any(type(a) is not bytes for a in argv):
            self._protocol_error("expected '$' bulk strings as arguments")
            return b""
        log.exception("command %s failed", spec.name)
        return resp.error(f"ERR internal error while running '{spec.name}'")

    def _queue(self, spec: Any, argv: list[bytes]) -> bytes:
        refusal = self.server.gate_queued(self, spec, argv)
        if refusal is not None:
            self.multi_failed = True
            return refusal
        assert self.multi is not None
        self.multi.append(argv)
        return _QUEUED

    # ------------------------------------------------------------------ WATCH
    def watch(self, key: bytes) -> None:
        if self.watching is None:
            self.watching = set()
        if key not in self.watching:
            self.watching.add(key)
            self.ks.watched.setdefault(key, set()).add(self)

    def unwatch_all(self) -> None:
        watched = self.ks.watched
        for key in self.watching or ():
            clients = watched.get(key)
            if clients is not None:
                clients.discard(self)
                if not clients:
                    del watched[key]
        self.watching = None
        self.dirty = False

    # ------------------------------------------------------------------ helpers
    def set_protocol(self, version: int) -> None:
        self.resp3 = version == 3
        self.null = resp.NULL3 if self.resp3 else resp.NULL2

    def kill(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _protocol_error(self, message: str) -> None:
        log.info("client %s (%s): protocol error: %s", self.id, self.addr, message)
        self.closing = True
        if self.transport is not None:
            self.transport.write(resp.error(f"ERR Protocol error: {message}"))
            self.transport.close()

    def age(self) -> int:
        return int(time.monotonic() - self.created)


def _fmt_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
