"""Pure RESP2/RESP3 reply encoders: values in, bytes out.

Handlers build their reply with these and return bytes; the connection writes the
replies of a whole read batch at once. Protocol-dependent shapes (null, maps, sets,
doubles, verbatim text) take the connection's ``resp3`` flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL2 = b"$-1\r\n"
NULL3 = b"_\r\n"
NULL_ARRAY2 = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
EMPTY_BULK = b"$0\r\n\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
MINUS_ONE = b":-1\r\n"
MINUS_TWO = b":-2\r\n"

_SMALL_INTS = [b":%d\r\n" % i for i in range(0, 1024)]

CRLF = b"\r\n"
# Bulk string headers ("$<len>\r\n") of the lengths below BULK_HEADERS_MAX, built once:
# ``b"".join((header, value, CRLF))`` costs less than formatting the header each time.
BULK_HEADERS_MAX = 4096
BULK_HEADERS = [b"$%d\r\n" % n for n in range(BULK_HEADERS_MAX)]


def integer(n: int) -> bytes:
    if 0 <= n < 1024:
        return _SMALL_INTS[n]
    return b":%d\r\n" % n


def bulk(value: bytes) -> bytes:
    n = len(value)
    return b"".join((BULK_HEADERS[n] if n < BULK_HEADERS_MAX else b"$%d\r\n" % n, value, CRLF))


def bulk_or_null(value: bytes | None, resp3: bool) -> bytes:
    if value is None:
        return NULL3 if resp3 else NULL2
    n = len(value)
    return b"".join((BULK_HEADERS[n] if n < BULK_HEADERS_MAX else b"$%d\r\n" % n, value, CRLF))


def null(resp3: bool) -> bytes:
    return NULL3 if resp3 else NULL2


def null_array(resp3: bool) -> bytes:
    return NULL3 if resp3 else NULL_ARRAY2


def simple(text: bytes) -> bytes:
    return b"+" + text + b"\r\n"


def error(message: bytes | str) -> bytes:
    if isinstance(message, str):
        message = message.encode()
    # An error line may not carry CR/LF: they would break the framing.
    return b"-" + message.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def array_header(n: int) -> bytes:
    return b"*%d\r\n" % n


def bulk_array(items: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(b"$%d\r\n%b\r\n" % (len(item), item))
    return b"".join(parts)


def bulk_array_nullable(items: Sequence[bytes | None], resp3: bool) -> bytes:
    nul = NULL3 if resp3 else NULL2
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(nul if item is None else b"$%d\r\n%b\r\n" % (len(item), item))
    return b"".join(parts)


def array(encoded: Sequence[bytes]) -> bytes:
    """An array of already encoded elements."""
    return b"*%d\r\n" % len(encoded) + b"".join(encoded)


def set_of(encoded: Sequence[bytes], resp3: bool) -> bytes:
    """A RESP3 set (``~``), or a plain array in RESP2, of already encoded elements."""
    return (b"~%d\r\n" if resp3 else b"*%d\r\n") % len(encoded) + b"".join(encoded)


def bulk_set(items: Iterable[bytes], resp3: bool) -> bytes:
    encoded = [b"$%d\r\n%b\r\n" % (len(i), i) for i in items]
    return set_of(encoded, resp3)


def map_of(pairs: Sequence[tuple[bytes, bytes]], resp3: bool) -> bytes:
    """A map of already encoded keys and values (RESP2: flat array)."""
    head = b"%%%d\r\n" % len(pairs) if resp3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def bulk_map(pairs: Iterable[tuple[bytes, bytes]], resp3: bool) -> bytes:
    encoded = [
        (b"$%d\r\n%b\r\n" % (len(k), k), b"$%d\r\n%b\r\n" % (len(v), v)) for k, v in pairs
    ]
    return map_of(encoded, resp3)


def format_double(value: float) -> bytes:
    """Format a float as Redis does (shortest round-trip repr, inf/-inf, integers without .0)."""
    if value == float("inf"):
        return b"inf"
    if value == float("-inf"):
        return b"-inf"
    if value.is_integer() and abs(value) < 1e17:
        if value == 0 and str(value)[0] == "-":
            return b"-0"
        return b"%d" % int(value)
    return repr(value).encode()


def double(value: float, resp3: bool) -> bytes:
    text = format_double(value)
    if resp3:
        return b"," + text + b"\r\n"
    return b"$%d\r\n%b\r\n" % (len(text), text)


def verbatim(text: bytes, resp3: bool) -> bytes:
    if resp3:
        return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
    return b"$%d\r\n%b\r\n" % (len(text), text)


def boolean_int(flag: bool) -> bytes:
    return ONE if flag else ZERO
