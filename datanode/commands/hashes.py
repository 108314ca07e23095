"""Hash commands. A hash is a ``dict[bytes, bytes]`` (insertion order = reply order).

Memory accounting per field: ``len(field) + len(value) + ELEMENT_OVERHEAD``.
"""

from __future__ import annotations

import random
from itertools import islice
from typing import TYPE_CHECKING

from .. import resp
from ..errors import NAN_OR_INF, OVERFLOW, SYNTAX, WRONGTYPE, CommandError, wrong_args
from ..keyspace import ELEMENT_OVERHEAD
from ..numbers import INT64_MAX, INT64_MIN, format_float, parse_float, parse_int
from .encode import bulk_array, bulk_map, bulks, empty_map, pair_array
from .scanargs import parse_cursor, parse_scan_args, scan_collection, scan_reply
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command

_OH = ELEMENT_OVERHEAD
_WRONGTYPE = WRONGTYPE
_integer = resp.integer
_ZERO = resp.ZERO
_ONE = resp.ONE
_EMPTY = resp.EMPTY_ARRAY
_EMPTY_SCAN = b"*2\r\n$1\r\n0\r\n*0\r\n"
HASH_NOT_INT = "ERR hash value is not an integer"
HASH_NOT_FLOAT = "ERR hash value is not a float"
NAN_OR_INF_ARG = "ERR value is NaN or Infinity"
_LONG_RANGE = (
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)


def _read(c: Connection, key: bytes) -> dict[bytes, bytes] | None:
    h = c.ks.get(key)
    if h is not None and type(h) is not dict:
        raise CommandError(_WRONGTYPE)
    return h


def _write(c: Connection, key: bytes) -> dict[bytes, bytes] | None:
    h = c.ks.get_for_write(key)
    if h is not None and type(h) is not dict:
        raise CommandError(_WRONGTYPE)
    return h


def _hset(c: Connection, argv: list[bytes]) -> int:
    key = argv[1]
    ks = c.ks
    h = ks.get_for_write(key)
    if h is None:
        h = {}
        ks.set(key, h)
    elif type(h) is not dict:
        raise CommandError(_WRONGTYPE)
    n = len(argv)
    if n == 4:  # the common single pair
        f = argv[2]
        v = argv[3]
        old = h.get(f)
        h[f] = v
        if old is None:
            ks.account(len(f) + len(v) + _OH)
            return 1
        ks.account(len(v) - len(old))
        return 0
    added = 0
    delta = 0
    get = h.get
    for i in range(2, n, 2):
        f = argv[i]
        v = argv[i + 1]
        old = get(f)
        if old is None:
            added += 1
            delta += len(f) + len(v) + _OH
        else:
            delta += len(v) - len(old)
        h[f] = v
    ks.account(delta)
    return added


@command("hset")
def hset(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) & 1:
        raise CommandError(wrong_args("hset"))
    return _integer(_hset(c, argv))


@command("hmset")
def hmset(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) & 1:
        raise CommandError(wrong_args("hmset"))
    _hset(c, argv)
    return resp.OK


@command("hsetnx")
def hsetnx(c: Connection, argv: list[bytes]) -> bytes:
    h = c.ks.get_or_create(argv[1], dict)
    f = argv[2]
    if f in h:
        return _ZERO
    v = argv[3]
    h[f] = v
    c.ks.account(len(f) + len(v) + _OH)
    return _ONE


@command("hget")
def hget(c: Connection, argv: list[bytes]) -> bytes:
    h = c.ks.get(argv[1])
    if h is None:
        return c.null
    if type(h) is not dict:
        raise CommandError(_WRONGTYPE)
    v = h.get(argv[2])
    if v is None:
        return c.null
    return b"$%d\r\n%b\r\n" % (len(v), v)


@command("hmget")
def hmget(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    fields = argv[2:]
    nul = c.null
    if h is None:
        return b"*%d\r\n" % len(fields) + nul * len(fields)
    get = h.get
    out = [b"*%d\r\n" % len(fields)]
    ap = out.append
    for f in fields:
        v = get(f)
        ap(nul if v is None else b"$%d\r\n%b\r\n" % (len(v), v))
    return b"".join(out)


@command("hdel")
def hdel(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    h = _write(c, key)
    if h is None:
        return _ZERO
    removed = 0
    freed = 0
    pop = h.pop
    for f in argv[2:]:
        v = pop(f, None)
        if v is not None:
            removed += 1
            freed += len(f) + len(v) + _OH
    if removed:
        c.ks.account(-freed)
        if not h:
            c.ks.delete(key)
    return _integer(removed)


@command("hexists")
def hexists(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    return _ONE if h is not None and argv[2] in h else _ZERO


@command("hlen")
def hlen(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    return _ZERO if h is None else _integer(len(h))


@command("hstrlen")
def hstrlen(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    if h is None:
        return _ZERO
    v = h.get(argv[2])
    return _ZERO if v is None else _integer(len(v))


def _flat(h: dict[bytes, bytes]) -> list[bytes]:
    flat: list[bytes] = []
    ext = flat.extend
    for item in h.items():
        ext(item)
    return flat


@command("hgetall")
def hgetall(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    if h is None:
        return empty_map(c.resp3)
    return bulk_map(_flat(h), c.resp3)


@command("hkeys")
def hkeys(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    if h is None:
        return _EMPTY
    return bulks(b"*%d\r\n" % len(h), h)  # type: ignore[arg-type]


@command("hvals")
def hvals(c: Connection, argv: list[bytes]) -> bytes:
    h = _read(c, argv[1])
    if h is None:
        return _EMPTY
    return bulks(b"*%d\r\n" % len(h), h.values())  # type: ignore[arg-type]


@command("hincrby")
def hincrby(c: Connection, argv: list[bytes]) -> bytes:
    delta = parse_int(argv[3])
    h = c.ks.get_or_create(argv[1], dict)
    f = argv[2]
    old = h.get(f)
    if old is None:
        value = delta
    else:
        value = parse_int(old, HASH_NOT_INT) + delta
        if value < INT64_MIN or value > INT64_MAX:
            raise CommandError(OVERFLOW)
    text = b"%d" % value
    h[f] = text
    c.ks.account(len(text) - len(old) if old is not None else len(f) + len(text) + _OH)
    return _integer(value)


@command("hincrbyfloat")
def hincrbyfloat(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    delta = parse_float(argv[3])
    if delta in (float("inf"), float("-inf")):
        raise CommandError(NAN_OR_INF_ARG)
    h = c.ks.get_or_create(key, dict)
    f = argv[2]
    old = h.get(f)
    current = 0.0 if old is None else parse_float(old, HASH_NOT_FLOAT)
    value = current + delta
    if value != value or value in (float("inf"), float("-inf")):
        if not h:
            c.ks.delete(key)
        raise CommandError(NAN_OR_INF)
    text = format_float(value)
    h[f] = text
    c.ks.account(len(text) - len(old) if old is not None else len(f) + len(text) + _OH)
    # Replicate the result, not the increment (as Redis does): no float drift on replicas.
    c.effects = [[b"HSET", key, f, text]]
    return b"$%d\r\n%b\r\n" % (len(text), text)


@command("hrandfield")
def hrandfield(c: Connection, argv: list[bytes]) -> bytes:
    n_args = len(argv)
    if n_args == 2:
        h = _read(c, argv[1])
        if not h:
            return c.null
        n = len(h)
        f = next(islice(h, random.randrange(n), None)) if n > 1 else next(iter(h))
        return b"$%d\r\n%b\r\n" % (len(f), f)
    count = parse_int(argv[2])
    if count == INT64_MIN:
        raise CommandError(_LONG_RANGE)
    withvalues = False
    if n_args == 4:
        if argv[3].upper() != b"WITHVALUES":
            raise CommandError(SYNTAX)
        withvalues = True
        if count < -(INT64_MAX // 2) or count > INT64_MAX // 2:
            raise CommandError("ERR value is out of range")
    elif n_args > 4:
        raise CommandError(SYNTAX)
    h = _read(c, argv[1])
    if not h or count == 0:
        return _EMPTY
    size = len(h)
    if count < 0 or count == 1:
        # With repetition (also a single field: same distribution).
        fields = random.choices(list(h), k=-count if count < 0 else 1)
    elif count >= size:
        fields = list(h)
    else:
        fields = random.sample(list(h), count)
    if not withvalues:
        return bulk_array(fields)
    flat: list[bytes] = []
    ap = flat.append
    for f in fields:
        ap(f)
        ap(h[f])
    return pair_array(flat, c.resp3)


@command("hscan")
def hscan(c: Connection, argv: list[bytes]) -> bytes:
    cursor = parse_cursor(argv[2])
    h = _read(c, argv[1])
    if h is None:
        return _EMPTY_SCAN
    count, match, extra = parse_scan_args(argv, 3, allow_novalues=True)
    next_cursor, candidates = scan_collection(h, cursor, count)
    novalues = extra.novalues
    out: list[bytes] = []
    ap = out.append
    get = h.get
    for f in candidates:
        v = get(f)
        if v is None or (match is not None and not match(f)):
            continue
        ap(b"$%d\r\n%b\r\n" % (len(f), f))
        if not novalues:
            ap(b"$%d\r\n%b\r\n" % (len(v), v))
    return scan_reply(next_cursor, out)


__all__ = ["group"]
