"""Generic key commands: DEL, EXISTS, EXPIRE family, TTL, TYPE, RENAME, KEYS, SCAN, …"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from clusterstate.slots import SLOT_COUNT

from .. import resp
from ..errors import NO_SUCH_KEY, SYNTAX, CommandError, invalid_expire
from ..glob import compile_glob
from ..keyspace import TYPE_NAMES
from ..numbers import INT64_MAX, INT64_MIN, parse_int
from ..zset import ZSet
from .scanargs import parse_cursor, parse_scan_args
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command


@command("del")
def del_(c: Connection, argv: list[bytes]) -> bytes:
    delete = c.ks.delete
    return resp.integer(sum(1 for key in argv[1:] if delete(key)))


@command("unlink")
def unlink(c: Connection, argv: list[bytes]) -> bytes:
    return del_(c, argv)


@command("exists")
def exists(c: Connection, argv: list[bytes]) -> bytes:
    get = c.ks.get_for_write
    return resp.integer(sum(1 for key in argv[1:] if get(key) is not None))


@command("touch")
def touch(c: Connection, argv: list[bytes]) -> bytes:
    return exists(c, argv)


@command("type")
def type_(c: Connection, argv: list[bytes]) -> bytes:
    v = c.ks.get_for_write(argv[1])
    return b"+none\r\n" if v is None else b"+" + TYPE_NAMES[type(v)] + b"\r\n"


# ---------------------------------------------------------------------- expiry
def _expire(c: Connection, argv: list[bytes], unit_ms: int, absolute: bool, name: str) -> bytes:
    ks = c.ks
    key = argv[1]
    n = parse_int(argv[2])
    nx = xx = gt = lt = False
    for opt in (a.upper() for a in argv[3:]):
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {opt.decode('latin-1')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if unit_ms == 1000 and (n > INT64_MAX // 1000 or n < INT64_MIN // 1000):
        raise CommandError(invalid_expire(name))
    at = n * unit_ms
    if not absolute:
        now = ks.clock()
        if at > INT64_MAX - now:
            raise CommandError(invalid_expire(name))
        at += now
    if ks.get_for_write(key) is None:
        return resp.ZERO
    current = ks.expire_at(key)
    if nx and current is not None:
        return resp.ZERO
    if xx and current is None:
        return resp.ZERO
    if gt and (current is None or at <= current):
        return resp.ZERO
    if lt and current is not None and at >= current:
        return resp.ZERO
    if at <= ks.clock():
        ks.delete(key)
        c.effects = [[b"DEL", key]]
        return resp.ONE
    ks.set_expire(key, at)
    # Replicate an absolute time, so replicas expire the key at the same moment.
    c.effects = [[b"PEXPIREAT", key, b"%d" % at]]
    return resp.ONE


@command("expire")
def expire(c: Connection, argv: list[bytes]) -> bytes:
    return _expire(c, argv, 1000, False, "expire")


@command("pexpire")
def pexpire(c: Connection, argv: list[bytes]) -> bytes:
    return _expire(c, argv, 1, False, "pexpire")


@command("expireat")
def expireat(c: Connection, argv: list[bytes]) -> bytes:
    return _expire(c, argv, 1000, True, "expireat")


@command("pexpireat")
def pexpireat(c: Connection, argv: list[bytes]) -> bytes:
    return _expire(c, argv, 1, True, "pexpireat")


def _ttl(c: Connection, key: bytes) -> int | None:
    """Remaining ms; -1 without TTL; None when the key is missing."""
    ks = c.ks
    if ks.get_for_write(key) is None:
        return None
    at = ks.expire_at(key)
    if at is None:
        return -1
    return max(0, at - ks.clock())


@command("ttl")
def ttl(c: Connection, argv: list[bytes]) -> bytes:
    ms = _ttl(c, argv[1])
    if ms is None:
        return resp.MINUS_TWO
    if ms < 0:
        return resp.MINUS_ONE
    return resp.integer((ms + 500) // 1000)


@command("pttl")
def pttl(c: Connection, argv: list[bytes]) -> bytes:
    ms = _ttl(c, argv[1])
    if ms is None:
        return resp.MINUS_TWO
    return resp.MINUS_ONE if ms < 0 else resp.integer(ms)


def _expiretime(c: Connection, key: bytes, divisor: int) -> bytes:
    if c.ks.get_for_write(key) is None:
        return resp.MINUS_TWO
    at = c.ks.expire_at(key)
    return resp.MINUS_ONE if at is None else resp.integer(at // divisor)


@command("expiretime")
def expiretime(c: Connection, argv: list[bytes]) -> bytes:
    return _expiretime(c, argv[1], 1000)


@command("pexpiretime")
def pexpiretime(c: Connection, argv: list[bytes]) -> bytes:
    return _expiretime(c, argv[1], 1)


@command("persist")
def persist(c: Connection, argv: list[bytes]) -> bytes:
    if c.ks.get_for_write(argv[1]) is None:
        return resp.ZERO
    return resp.boolean_int(c.ks.persist(argv[1]))


# ---------------------------------------------------------------------- rename / copy
def _rename(c: Connection, argv: list[bytes], nx: bool) -> bytes:
    ks = c.ks
    src, dst = argv[1], argv[2]
    if ks.get_for_write(src) is None:
        raise CommandError(NO_SUCH_KEY)
    if src == dst:
        return resp.ZERO if nx else resp.OK
    if nx and ks.get_for_write(dst) is not None:
        return resp.ZERO
    popped = ks.pop(src)
    assert popped is not None
    value, at = popped
    ks.delete(dst)
    ks.set(dst, value)
    if at is not None:
        ks.set_expire(dst, at)
    ks.touch(dst)
    return resp.ONE if nx else resp.OK


@command("rename")
def rename(c: Connection, argv: list[bytes]) -> bytes:
    return _rename(c, argv, False)


@command("renamenx")
def renamenx(c: Connection, argv: list[bytes]) -> bytes:
    return _rename(c, argv, True)


def copy_value(value: Any) -> Any:
    t = type(value)
    if t is bytes:
        return value
    if t is dict:
        return dict(value)
    if t is deque:
        return deque(value)
    if t is set:
        return set(value)
    z = ZSet()
    z.scores = dict(value.scores)
    z.order = list(value.order)
    return z


@command("copy")
def copy(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    src, dst = argv[1], argv[2]
    replace = False
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"DB" and i + 1 < len(argv):
            if parse_int(argv[i + 1]) != 0:
                raise CommandError("ERR DB index is out of range")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    value = ks.get_for_write(src)
    if value is None:
        return resp.ZERO
    if ks.get_for_write(dst) is not None:
        if not replace:
            return resp.ZERO
        ks.delete(dst)
    ks.set(dst, copy_value(value))
    at = ks.expire_at(src)
    if at is not None:
        ks.set_expire(dst, at)
    return resp.ONE


# ---------------------------------------------------------------------- whole keyspace
@command("keys")
def keys(c: Connection, argv: list[bytes]) -> bytes:
    match = compile_glob(argv[1])
    return resp.bulk_array([k for k in c.ks.iter_keys() if match(k)])


@command("randomkey")
def randomkey(c: Connection, argv: list[bytes]) -> bytes:
    ks = c.ks
    for _ in range(100):
        key = ks.random_key()
        if key is None:
            return c.null
        if not ks.is_expired(key):
            return resp.bulk(key)
        ks.get_for_write(key)  # lazily expires it
    return c.null


_TYPES = {b"string", b"hash", b"list", b"set", b"zset"}


@command("scan")
def scan(c: Connection, argv: list[bytes]) -> bytes:
    """SCAN with a slot cursor: each call returns whole slots, so a key present for the
    whole iteration is returned exactly once unless it moves between calls."""
    cursor = parse_cursor(argv[1])
    count, match, extra = parse_scan_args(argv, 2, allow_type=True)
    want_type = extra.type.encode() if isinstance(extra.type, str) else extra.type
    if cursor >= SLOT_COUNT:
        return resp.array([resp.bulk(b"0"), resp.EMPTY_ARRAY])
    ks = c.ks
    slots = ks.slots
    data = ks.data
    exp = ks.expires
    now = ks.clock()
    found: list[bytes] = []
    slot = cursor
    while slot < SLOT_COUNT and len(found) < count:
        d = slots[slot]
        slot += 1
        if not d:
            continue
        for key in d:
            if exp and key in exp and exp[key] <= now:
                continue
            value = data[key]
            if match is not None and not match(key):
                continue
            if want_type is not None and TYPE_NAMES[type(value)] != want_type:
                continue
            found.append(key)
    next_cursor = 0 if slot >= SLOT_COUNT else slot
    return resp.array([resp.bulk(b"%d" % next_cursor), resp.bulk_array(found)])
