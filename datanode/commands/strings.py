"""String commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import resp
from ..errors import (
    NAN_OR_INF,
    NOT_INTEGER,
    OVERFLOW,
    STRING_TOO_LONG,
    SYNTAX,
    WRONGTYPE,
    CommandError,
    invalid_expire,
)
from ..numbers import INT64_MAX, INT64_MIN, format_float, parse_float, parse_int
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command

_OK = resp.OK
_WRONGTYPE = WRONGTYPE
_HEADERS = resp.BULK_HEADERS
_HEADERS_MAX = resp.BULK_HEADERS_MAX
_CRLF = resp.CRLF


def _string_or_none(c: Connection, key: bytes) -> bytes | None:
    v = c.ks.get(key)
    if v is not None and type(v) is not bytes:
        raise CommandError(_WRONGTYPE)
    return v


@command("get")
def get(c: Connection, argv: list[bytes]) -> bytes:
    # The hottest handler: Keyspace.get inlined for a key without a TTL while no LRU
    # clock is kept (a key with a TTL, or LRU, takes Keyspace.get itself).
    ks = c.ks
    key = argv[1]
    v = ks.data.get(key)
    if v is None:
        ks.misses += 1
        return c.null
    exp = ks.expires
    if (exp and key in exp) or ks.lru is not None:
        v = ks.get(key)
        if v is None:
            return c.null
    else:
        ks.hits += 1
    try:
        n = len(v)
        return v.join((_HEADERS[n] if n < _HEADERS_MAX else b"$%d\r\n" % n, _CRLF))
    except (AttributeError, TypeError):  # not a string: no join (dict, deque, set, ZSet)
        raise CommandError(_WRONGTYPE) from None


def parse_expiry(c: Connection, opt: bytes, raw: bytes, command: str) -> int:
    """EX/PX/EXAT/PXAT value → absolute ms, with Redis's errors."""
    n = parse_int(raw)
    if n <= 0:
        raise CommandError(invalid_expire(command))
    if opt == b"EX":
        if n > INT64_MAX // 1000:
            raise CommandError(invalid_expire(command))
        return c.ks.clock() + n * 1000
    if opt == b"PX":
        return c.ks.clock() + n
    if opt == b"EXAT":
        if n > INT64_MAX // 1000:
            raise CommandError(invalid_expire(command))
        return n * 1000
    return n  # PXAT


@command("set")
def set_(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    key = argv[1]
    if len(argv) == 3:
        value = argv[2]
        data = ks.data
        old = data.get(key)
        if type(old) is bytes and not ks.expires:
            # Keyspace.set inlined for the common overwrite of a string while no key
            # has a TTL: only the value and the memory estimate change.
            data[key] = value
            ks.mem += len(value) - len(old)
        else:
            ks.set(key, value, False, old)
        return _OK
    nx = xx = get_old = keep_ttl = False
    expire_at: int | None = None
    i = 3
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get_old = True
        elif opt == b"KEEPTTL" and expire_at is None:
            keep_ttl = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not keep_ttl and expire_at is None:
            if i + 1 >= n:
                raise CommandError(SYNTAX)
            expire_at = parse_expiry(c, opt, argv[i + 1], "set")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    old = ks.get_for_write(key)
    if get_old and old is not None and type(old) is not bytes:
        raise CommandError(_WRONGTYPE)
    if (nx and old is not None) or (xx and old is None):
        return (c.null if old is None else resp.bulk(old)) if get_old else c.null
    ks.set(key, argv[2], keep_ttl=keep_ttl)
    if expire_at is not None:
        ks.set_expire(key, expire_at)
    if get_old:
        return c.null if old is None else resp.bulk(old)
    return _OK


@command("setnx")
def setnx(c: Connection, argv: list[bytes]) -> bytes:
    if c.ks.get_for_write(argv[1]) is not None:
        return resp.ZERO
    c.ks.set(argv[1], argv[2])
    return resp.ONE


def _setex(c: Connection, argv: list[bytes], unit: bytes, name: str) -> bytes:
    at = parse_expiry(c, unit, argv[2], name)
    c.ks.set(argv[1], argv[3])
    c.ks.set_expire(argv[1], at)
    return _OK


@command("setex")
def setex(c: Connection, argv: list[bytes]) -> bytes:
    return _setex(c, argv, b"EX", "setex")


@command("psetex")
def psetex(c: Connection, argv: list[bytes]) -> bytes:
    return _setex(c, argv, b"PX", "psetex")


@command("mget")
def mget(c: Connection, argv: list[bytes]) -> bytes:
    get_ = c.ks.get
    values = []
    for key in argv[1:]:
        v = get_(key)
        values.append(v if type(v) is bytes else None)
    return resp.bulk_array_nullable(values, c.resp3)


def _check_pairs(argv: list[bytes], name: str) -> None:
    if len(argv) % 2 == 0:
        raise CommandError(f"ERR wrong number of arguments for '{name}' command")


@command("mset")
def mset(c: Connection, argv: list[bytes]) -> bytes:
    _check_pairs(argv, "mset")
    set_key = c.ks.set
    for i in range(1, len(argv), 2):
        set_key(argv[i], argv[i + 1])
    return _OK


@command("msetnx")
def msetnx(c: Connection, argv: list[bytes]) -> bytes:
    _check_pairs(argv, "msetnx")
    ks = c.ks
    for i in range(1, len(argv), 2):
        if ks.get_for_write(argv[i]) is not None:
            return resp.ZERO
    for i in range(1, len(argv), 2):
        ks.set(argv[i], argv[i + 1])
    return resp.ONE


@command("getset")
def getset(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    old = ks.get_for_write(argv[1])
    if old is not None and type(old) is not bytes:
        raise CommandError(_WRONGTYPE)
    ks.set(argv[1], argv[2])
    return c.null if old is None else resp.bulk(old)


@command("getdel")
def getdel(c: Connection, argv: list[bytes]) -> bytes:
    old = _string_or_none(c, argv[1])
    if old is None:
        return c.null
    c.ks.delete(argv[1])
    return resp.bulk(old)


@command("getex")
def getex(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    key = argv[1]
    expire_at: int | None = None
    persist = False
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt in (b"EX", b"PX", b"EXAT", b"PXAT") and expire_at is None and not persist:
            if i + 1 >= len(argv):
                raise CommandError(SYNTAX)
            expire_at = parse_expiry(c, opt, argv[i + 1], "getex")
            i += 2
        elif opt == b"PERSIST" and expire_at is None and not persist:
            persist = True
            i += 1
        else:
            raise CommandError(SYNTAX)
    v = _string_or_none(c, key)
    if v is None:
        return c.null
    if expire_at is not None:
        if expire_at <= ks.clock():
            ks.delete(key)
        else:
            ks.set_expire(key, expire_at)
    elif persist:
        ks.persist(key)
    return resp.bulk(v)


def _incr(c: Connection, key: bytes, delta: int) -> bytes:
    ks = c.ks
    old = ks.get_for_write(key)
    if old is None:
        value = delta
    else:
        if type(old) is not bytes:
            raise CommandError(_WRONGTYPE)
        current = parse_int(old)
        value = current + delta
        if value < INT64_MIN or value > INT64_MAX:
            raise CommandError(OVERFLOW)
    ks.set(key, b"%d" % value, keep_ttl=True)
    return resp.integer(value)


@command("incr")
def incr(c: Connection, argv: list[bytes]) -> bytes:
    return _incr(c, argv[1], 1)


@command("decr")
def decr(c: Connection, argv: list[bytes]) -> bytes:
    return _incr(c, argv[1], -1)


@command("incrby")
def incrby(c: Connection, argv: list[bytes]) -> bytes:
    return _incr(c, argv[1], parse_int(argv[2]))


@command("decrby")
def decrby(c: Connection, argv: list[bytes]) -> bytes:
    delta = parse_int(argv[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr(c, argv[1], -delta)


@command("incrbyfloat")
def incrbyfloat(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    key = argv[1]
    delta = parse_float(argv[2])
    old = ks.get_for_write(key)
    if old is not None and type(old) is not bytes:
        raise CommandError(_WRONGTYPE)
    current = 0.0 if old is None else parse_float(old)
    value = current + delta
    if value != value or value in (float("inf"), float("-inf")):
        raise CommandError(NAN_OR_INF)
    text = format_float(value)
    ks.set(key, text, keep_ttl=True)
    # Replicate the result, not the increment: float sums must not drift on replicas.
    c.effects = [[b"SET", key, text, b"KEEPTTL"]]
    return resp.bulk(text)


@command("append")
def append(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    key = argv[1]
    old = ks.get_for_write(key)
    if old is None:
        ks.set(key, argv[2])
        return resp.integer(len(argv[2]))
    if type(old) is not bytes:
        raise CommandError(_WRONGTYPE)
    if len(old) + len(argv[2]) > c.server.proto_max_bulk_len:
        raise CommandError(STRING_TOO_LONG)
    value = old + argv[2]
    ks.set(key, value, keep_ttl=True)
    return resp.integer(len(value))


@command("strlen")
def strlen(c: Connection, argv: list[bytes]) -> bytes:
    v = _string_or_none(c, argv[1])
    return resp.integer(0 if v is None else len(v))


@command("getrange")
def getrange(c: Connection, argv: list[bytes]) -> bytes:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    v = _string_or_none(c, argv[1])
    if not v:
        return resp.EMPTY_BULK
    n = len(v)
    if start < 0 and end < 0 and start > end:
        return resp.EMPTY_BULK
    if start < 0:
        start = max(0, n + start)
    if end < 0:
        end = max(0, n + end)
    end = min(end, n - 1)
    if start > end:
        return resp.EMPTY_BULK
    return resp.bulk(v[start : end + 1])


@command("substr")
def substr(c: Connection, argv: list[bytes]) -> bytes:
    return getrange(c, argv)


@command("setrange")
def setrange(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    key = argv[1]
    offset = parse_int(argv[2])
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    patch = argv[3]
    old = ks.get_for_write(key)
    if old is not None and type(old) is not bytes:
        raise CommandError(_WRONGTYPE)
    old = old or b""
    if not patch:
        return resp.integer(len(old))
    if offset + len(patch) > c.server.proto_max_bulk_len:
        raise CommandError(STRING_TOO_LONG)
    if len(old) < offset:
        old = old + b"\x00" * (offset - len(old))
    value = old[:offset] + patch + old[offset + len(patch) :]
    ks.set(key, value, keep_ttl=True)
    return resp.integer(len(value))


__all__ = ["group", "parse_expiry", "NOT_INTEGER"]
