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


def _slot(key: bytes) -> int:
    return crc_hqx(key, 0) & 16383 if 123 not in key else key_slot(key)

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

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
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
        server = self.server
        server.stats.commands += len(cmds)
        # The fast path runs known commands with the right arity straight into their
        # handler when no per-command check applies; anything else takes execute().
        fast = self.authed and self.multi is None
        gate_writes = server.gate_writes
        fast_slots = server.fast_slots
        table = self.table
        out = []
        append = out.append
        for argv in cmds:
            spec = table.get(argv[0])
            if (
                spec is None
                or not fast
                or not spec.fast_path
                or (gate_writes and spec.write)
                or ((len(argv) != spec.arity) if spec.arity > 0 else (len(argv) < -spec.arity))
                or (
                    fast_slots is not None
                    and spec.keyed
                    and not (spec.single_key and fast_slots[_slot(argv[1])])
                )
            ):
                append(self.execute(argv))
                if self.closing:
                    break
                fast = self.authed and self.multi is None
                continue
            try:
                append(spec.handler(self, argv))
            except CommandError as exc:
                self.effects = None
                append(resp.error(exc.message))
                continue
            except Exception:
                append(self._handler_failed(spec, argv))
                if self.closing:
                    break
                continue
            if spec.write:
                server.after_write(self, spec, argv)
        if not out:
            return
        self.last_cmd = argv[0]
        transport = self.transport
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.closing:
            transport.close()
        elif self.backlogged and transport.get_write_buffer_size() > self.out_limit:
            log.warning("client %s (%s) closed: output buffer limit reached", self.id, self.addr)
            self.kill()

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
            server.after_write(self, spec, argv)
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
