"""The data node's admin port, as the sidecar speaks to it (RESP3 over one TCP
connection per user; replies come back in request order).

:class:`AdminConnection` is the socket layer: :meth:`~AdminConnection.send`
writes a command at once (so commands leave in the order they are sent, even from
different tasks) and returns a future for its reply; :attr:`~AdminConnection.lost`
resolves the moment the connection closes, which is how the sidecar notices its
data node die. :class:`Datanode` wraps it in the commands of
``datanode/commands/admin.py``, ``replication.py`` and ``transfer.py``.

Errors: :class:`DatanodeUnavailable` (cannot connect, connection lost, no reply in
time) and :class:`AdminError` (the data node answered an error reply).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis

from clusterstate.topology import SlotRange, Topology

from .facts import Replication

log = logging.getLogger(__name__)


class DatanodeUnavailable(Exception):
    """The data node cannot be reached or stopped answering."""


class AdminError(Exception):
    """The data node refused a command; ``str(exc)`` is its error reply."""


def encode(args: Sequence[object]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def plain(value: Any) -> Any:
    """A RESP3 reply with bytes decoded to str, recursively."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[str] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                if self.transport is not None:
                    self.transport.close()
                self._fail(f"protocol error: {exc}")
                return
            if reply is False:
                return
            if not self.pending:
                continue  # an unsolicited push: ignored
            fut = self.pending.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(AdminError(str(reply)))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost ({exc})" if exc else "connection closed by the data node")

    def _fail(self, why: str) -> None:
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(DatanodeUnavailable(why))
        if not self.lost.done():
            self.lost.set_result(why)


class AdminConnection:
    """One connection to a data node's admin port."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._proto: _Protocol | None = None

    def __repr__(self) -> str:
        return f"AdminConnection({self.host}:{self.port})"

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, proto = await loop.create_connection(
                    lambda: _Protocol(loop), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            raise DatanodeUnavailable(
                f"cannot connect to the data node admin port {self.host}:{self.port}: {exc}"
            ) from exc
        self._proto = proto
        await self.call("HELLO", 3)

    @property
    def lost(self) -> asyncio.Future[str]:
        assert self._proto is not None, "not connected"
        return self._proto.lost

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.lost.done()

    def send(self, *args: object) -> asyncio.Future[Any]:
        """Write the command now; the future resolves with its reply."""
        proto = self._proto
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if proto is None or proto.lost.done() or proto.transport is None:
            fut.set_exception(DatanodeUnavailable("not connected to the data node"))
            return fut
        proto.pending.append(fut)
        proto.transport.write(encode(args))
        return fut

    async def call(self, *args: object, timeout: float | None = None) -> Any:
        return await self.reply(self.send(*args), args, timeout=timeout)

    async def reply(self, fut: asyncio.Future[Any], args: Sequence[object], *,
                    timeout: float | None = None) -> Any:
        """The reply of a command :meth:`send` wrote (``args``: for the error)."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                return await fut
        except TimeoutError:
            raise DatanodeUnavailable(
                f"no reply from the data node to {args[0]!s} {args[1] if len(args) > 1 else ''}"
                f" within {self.timeout if timeout is None else timeout:.2f}s"
            ) from None

    def close(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.close()


def ranges_text(ranges: Sequence[SlotRange]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


class Datanode:
    """The admin commands the sidecar uses, over one :class:`AdminConnection`."""

    def __init__(self, conn: AdminConnection) -> None:
        self.conn = conn

    async def node_id(self) -> str:
        return plain(await self.conn.call("SLOTKEEPER", "NODEID"))  # type: ignore[no-any-return]

    async def ports(self) -> tuple[int, int]:
        """(client port, admin port) from INFO server."""
        text = plain(await self.conn.call("INFO", "server"))
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return int(fields["tcp_port"]), int(fields["admin_port"])

    async def push_view(self, view: Topology) -> bool:
        """``TOPOLOGY SET``: True if applied, False for the same view (NOOP)."""
        reply = plain(await self.conn.call("SLOTKEEPER", "TOPOLOGY", "SET", view.to_json()))
        return reply != "NOOP"

    async def view_epoch(self) -> int | None:
        raw = await self.conn.call("SLOTKEEPER", "TOPOLOGY", "GET")
        return None if raw is None else Topology.from_json(raw).epoch

    def grant(self, until_ms: int) -> asyncio.Future[Any]:
        """``WRITE-PERMIT UNTIL``: sent at once (ordered with every other command)."""
        return self.conn.send("SLOTKEEPER", "WRITE-PERMIT", "UNTIL", until_ms)

    def revoke(self) -> asyncio.Future[Any]:
        return self.conn.send("SLOTKEEPER", "WRITE-PERMIT", "REVOKE")

    async def promote(self, epoch: int, replica_id: int) -> bool:
        reply = plain(await self.conn.call("SLOTKEEPER", "PROMOTE", epoch, replica_id))
        return reply != "NOOP"

    async def replicate(self, host: str, port: int, epoch: int, replica_id: int) -> bool:
        reply = plain(
            await self.conn.call("SLOTKEEPER", "REPLICATE", host, port, epoch, replica_id)
        )
        return reply != "NOOP"

    async def replicate_and_observe(
        self, host: str, port: int, epoch: int, replica_id: int
    ) -> tuple[bool, Replication | None]:
        """``REPLICATE`` with ``SLOTKEEPER REPLICATION`` written right behind it on the
        same connection: (changed, the data node's replication just after it took the
        instruction, before any sync that starts could complete: that takes round trips
        to the primary; None if that read was refused)."""
        instruct = ("SLOTKEEPER", "REPLICATE", host, port, epoch, replica_id)
        observe = ("SLOTKEEPER", "REPLICATION")
        instructed, observed = self.conn.send(*instruct), self.conn.send(*observe)
        observed.add_done_callback(_retrieved)  # not awaited if the instruction fails
        changed = plain(await self.conn.reply(instructed, instruct)) != "NOOP"
        try:
            return changed, _replication(await self.conn.reply(observed, observe))
        except AdminError as exc:
            log.warning("SLOTKEEPER REPLICATION refused after REPLICATE: %s", exc)
            return changed, None

    async def replication(self) -> Replication:
        return _replication(await self.conn.call("SLOTKEEPER", "REPLICATION"))

    async def min_replicas_to_ack(self, n: int, timeout_ms: int) -> None:
        await self.conn.call("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", n, timeout_ms)

    async def start_import(
        self, host: str, port: int, source_id: str, ranges: Sequence[SlotRange],
        takeover: bool = False,
    ) -> None:
        await self.conn.call("SLOTKEEPER", "IMPORT", host, port, source_id, ranges_text(ranges),
                             *(("TAKEOVER",) if takeover else ()))

    async def import_status(self, ranges: Sequence[SlotRange]) -> dict[str, Any]:
        reply = plain(await self.conn.call("SLOTKEEPER", "IMPORT-STATUS", ranges_text(ranges)))
        if not isinstance(reply, dict):
            raise AdminError(f"unexpected IMPORT-STATUS reply {reply!r}")
        return reply

    async def cancel_import(self, ranges: Sequence[SlotRange]) -> int:
        return int(await self.conn.call("SLOTKEEPER", "IMPORT-CANCEL", ranges_text(ranges)))

    async def importing(self) -> dict[int, str]:
        reply = plain(await self.conn.call("SLOTKEEPER", "IMPORTING"))
        return {int(k): v for k, v in reply.items()} if isinstance(reply, dict) else {}


async def fence_or_confirm_gone(
    host: str, port: int, timeout: float, attempts: int = 3, pause: float = 0.02
) -> str:
    """After the monitor lost the data node: ``"gone"`` if its admin port refuses
    connections (the process is dead), ``"fenced"`` if a fresh connection got
    ``WRITE-PERMIT REVOKE`` acknowledged, ``"unknown"`` otherwise (hung).

    A process being killed closes its connections a moment before its listening
    socket, so a check made in that moment can connect and then be reset: it is
    tried again a few times before the answer is "unknown"."""
    for attempt in range(attempts):
        fate = await _fence_or_confirm_gone_once(host, port, timeout)
        if fate != "unknown":
            return fate
        if attempt + 1 < attempts:
            await asyncio.sleep(pause)
    return "unknown"


async def _fence_or_confirm_gone_once(host: str, port: int, timeout: float) -> str:
    conn = AdminConnection(host, port, timeout=timeout)
    try:
        await conn.connect()
    except DatanodeUnavailable as exc:
        return "gone" if isinstance(exc.__cause__, ConnectionRefusedError) else "unknown"
    try:
        await conn.call("SLOTKEEPER", "WRITE-PERMIT", "REVOKE")
        return "fenced"
    except (DatanodeUnavailable, AdminError):
        return "unknown"
    finally:
        conn.close()


def _replication(raw: Any) -> Replication:
    reply = plain(raw)
    if not isinstance(reply, Mapping):
        raise AdminError(f"unexpected SLOTKEEPER REPLICATION reply {reply!r}")
    return Replication.from_reply(reply)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
