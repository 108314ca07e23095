"""Sans-IO request parsing: bytes in, lists of argv out.

Multibulk requests go through hiredis's C ``Reader``. A request that does not start
with ``*`` at a command boundary is an inline command (``PING\\r\\n``, telnet,
``redis-cli`` pipes), split with Redis's quoting rules. Limits are enforced here:
declared bulk and multibulk lengths, the size of an incomplete request, the length
of an inline line.
"""

from __future__ import annotations

import hiredis

INLINE_MAX = 64 * 1024
_HEAD_KEEP = 64 * 1024  # bytes of a read whose request headers are checked


class ProtocolError(Exception):
    """The client broke the protocol: answer ``-ERR Protocol error: …`` and close."""


class RequestParser:
    """Incremental request parser for one connection.

    hiredis consumes partial requests into its own state, so whether a read starts
    at a request boundary is only known for sure at the start of the connection and
    after an inline command. A read that starts with another byte than ``*`` where
    the boundary is not known goes to hiredis; if hiredis rejects its very first
    byte as a type byte, the read was at a boundary after all and is parsed inline.
    """

    __slots__ = (
        "_reader",
        "_inline",
        "_at_boundary",
        "_pending",
        "max_bulk",
        "max_multibulk",
        "max_query",
    )

    def __init__(self, max_bulk: int, max_multibulk: int, max_query: int) -> None:
        self._reader = hiredis.Reader()
        self._inline: bytes | None = None  # partial inline line
        self._at_boundary = True  # known to be between requests
        self._pending = 0  # bytes read since the last read that completed a request
        self.max_bulk = max_bulk
        self.max_multibulk = max_multibulk
        self.max_query = max_query

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Parse ``data`` and return the complete requests in it."""
        cmds: list[list[bytes]] = []
        if self._inline is not None or (self._at_boundary and data[:1] != b"*"):
            data = self._feed_inline(data, cmds)
            if not data:
                return cmds
        if self._at_boundary:
            check_headers(data[:_HEAD_KEEP], self.max_bulk, self.max_multibulk)
        reader = self._reader
        reader.feed(data)
        gets = reader.gets
        while True:
            try:
                item = gets()
            except hiredis.ProtocolError as exc:
                if not cmds and "as reply type byte" in str(exc) and data[:1] != b"*":
                    # The read began a new request after all: an inline one.
                    self._reader = hiredis.Reader()
                    self._at_boundary = True
                    return cmds + self.feed(data)
                raise ProtocolError(str(exc)) from None
            if type(item) is list and item:  # a request (the common case first)
                cmds.append(item)
            elif item is False:
                break
            elif item is not None and type(item) is not list:
                raise ProtocolError(f"expected '*', got a {type(item).__name__} value")
        self._at_boundary = False
        if cmds:
            self._pending = 0
        else:
            self._pending += len(data)
            if self._pending > self.max_query:
                raise ProtocolError("request exceeds the client query buffer limit")
        return cmds

    def _feed_inline(self, data: bytes, cmds: list[list[bytes]]) -> bytes:
        if self._inline:
            data = self._inline + data
        self._inline = None
        self._at_boundary = True
        pos = 0
        n = len(data)
        while pos < n:
            if data[pos] == 42:  # '*': back to multibulk
                return data[pos:]
            nl = data.find(b"\n", pos)
            if nl < 0:
                if n - pos > INLINE_MAX:
                    raise ProtocolError("too big inline request")
                self._inline = data[pos:]
                return b""
            line = data[pos:nl]
            pos = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > INLINE_MAX:
                raise ProtocolError("too big inline request")
            argv = split_inline(line)
            if argv:
                cmds.append(argv)
        return b""


def check_headers(head: bytes, max_bulk: int, max_multibulk: int) -> None:
    """Check the declared lengths visible in the start of one incomplete request."""
    nl = head.find(b"\r\n")
    if nl < 0:
        return
    try:
        count = int(head[1:nl])
    except ValueError:
        raise ProtocolError("invalid multibulk length") from None
    if count > max_multibulk:
        raise ProtocolError("invalid multibulk length")
    pos = nl + 2
    for _ in range(count):
        if pos >= len(head):
            return
        if head[pos] != 36:  # '$'
            raise ProtocolError(f"expected '$', got '{chr(head[pos])}'")
        nl = head.find(b"\r\n", pos)
        if nl < 0:
            return
        try:
            size = int(head[pos + 1 : nl])
        except ValueError:
            raise ProtocolError("invalid bulk length") from None
        if size < 0 or size > max_bulk:
            raise ProtocolError("invalid bulk length")
        pos = nl + 2 + size + 2


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line as Redis's ``sdssplitargs`` does."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if (
                    c == 92
                    and i + 3 < n
                    and line[i + 1] == ord("x")
                    and line[i + 2] in _HEX
                    and line[i + 3] in _HEX
                ):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur += _ESCAPES.get(line[i], bytes([line[i]]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    in_dq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            elif in_sq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    in_sq = False
                    i += 1
                    break
                else:
                    cur.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\r\n\v\f":
                    break
                if c == 34:
                    in_dq = True
                elif c == 39:
                    in_sq = True
                else:
                    cur.append(c)
            i += 1
        args.append(bytes(cur))
