"""Set commands. A set is a Python ``set[bytes]``.

Memory accounting per member: ``len(member) + ELEMENT_OVERHEAD``.

Randomness: SRANDMEMBER picks uniformly. SPOP picks uniformly from sets of up to
:data:`_RANDOM_POP_MAX` members; from bigger ones it takes ``set.pop()``'s
members, whose order follows the per-process randomised bytes hash (O(1) instead
of O(n) per pop). Popped members are replicated as ``SREM`` (as Redis does).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING

from .. import resp
from ..errors import POSITIVE, SYNTAX, WRONGTYPE, CommandError
from ..keyspace import ELEMENT_OVERHEAD
from ..numbers import INT64_MIN, parse_int
from .encode import bulk_array, bulk_set, empty_set
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
_RANDOM_POP_MAX = 1024
_LONG_RANGE = (
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)
NUMKEYS = "ERR numkeys should be greater than 0"
TOO_MANY_KEYS = "ERR Number of keys can't be greater than number of args"
LIMIT_NEGATIVE = "ERR LIMIT can't be negative"


def _read(c: Connection, key: bytes) -> set[bytes] | None:
    s = c.ks.get(key)
    if s is not None and type(s) is not set:
        raise CommandError(_WRONGTYPE)
    return s


def _write(c: Connection, key: bytes) -> set[bytes] | None:
    s = c.ks.get_for_write(key)
    if s is not None and type(s) is not set:
        raise CommandError(_WRONGTYPE)
    return s


def _positive(raw: bytes) -> int:
    n = parse_int(raw, POSITIVE)
    if n < 0:
        raise CommandError(POSITIVE)
    return n


def _random_member(s: set[bytes]) -> bytes:
    n = len(s)
    if n == 1:
        return next(iter(s))
    return next(islice(s, random.randrange(n), None))


def _sizeof(members: Iterable[bytes]) -> int:
    total = 0
    for m in members:
        total += len(m) + _OH
    return total


# ---------------------------------------------------------------------- writes
@command("sadd")
def sadd(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    ks = c.ks
    s = ks.get_for_write(key)
    if s is None:
        s = set()
        ks.set(key, s)
    elif type(s) is not set:
        raise CommandError(_WRONGTYPE)
    if len(argv) == 3:
        m = argv[2]
        if m in s:
            return _ZERO
        s.add(m)
        ks.account(len(m) + _OH)
        return _ONE
    added = 0
    delta = 0
    add = s.add
    for m in argv[2:]:
        if m not in s:
            add(m)
            added += 1
            delta += len(m) + _OH
    ks.account(delta)
    return _integer(added)


@command("srem")
def srem(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    s = _write(c, key)
    if s is None:
        return _ZERO
    removed = 0
    freed = 0
    for m in argv[2:]:
        if m in s:
            s.remove(m)
            removed += 1
            freed += len(m) + _OH
    if removed:
        c.ks.account(-freed)
        if not s:
            c.ks.delete(key)
    return _integer(removed)


@command("spop")
def spop(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    ks = c.ks
    if len(argv) == 2:
        s = _write(c, key)
        if s is None:
            return c.null
        if len(s) <= _RANDOM_POP_MAX:
            m = _random_member(s)
            s.remove(m)
        else:
            m = s.pop()
        ks.account(-len(m) - _OH)
        if not s:
            ks.delete(key)
        c.effects = [[b"SREM", key, m]]
        return b"$%d\r\n%b\r\n" % (len(m), m)
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    count = _positive(argv[2])
    s = _write(c, key)
    if s is None or count == 0:
        return empty_set(c.resp3)
    n = len(s)
    if count >= n:
        popped = list(s)
        ks.delete(key)  # accounts the whole value
        c.effects = [[b"DEL", key]]
        return bulk_set(popped, c.resp3)
    if n <= _RANDOM_POP_MAX:
        popped = random.sample(list(s), count)
        s.difference_update(popped)
    else:
        pop = s.pop
        popped = [pop() for _ in range(count)]
    ks.account(-_sizeof(popped))
    c.effects = [[b"SREM", key, *popped]]
    return bulk_set(popped, c.resp3)


@command("smove")
def smove(c: Connection, argv: list[bytes]) -> bytes:
    src_key = argv[1]
    dst_key = argv[2]
    m = argv[3]
    ks = c.ks
    src = ks.get_for_write(src_key)
    dst = ks.get_for_write(dst_key)
    if src is None:
        return _ZERO
    if type(src) is not set or (dst is not None and type(dst) is not set):
        raise CommandError(_WRONGTYPE)
    if src is dst:
        return _ONE if m in src else _ZERO
    if m not in src:
        return _ZERO
    src.remove(m)
    ks.account(-len(m) - _OH)
    if not src:
        ks.delete(src_key)
    if dst is None:
        dst = set()
        ks.set(dst_key, dst)
    if m not in dst:
        dst.add(m)
        ks.account(len(m) + _OH)
    return _ONE


# ---------------------------------------------------------------------- reads
@command("smembers")
def smembers(c: Connection, argv: list[bytes]) -> bytes:
    s = _read(c, argv[1])
    if s is None:
        return empty_set(c.resp3)
    return bulk_set(s, c.resp3)  # type: ignore[arg-type]


@command("sismember")
def sismember(c: Connection, argv: list[bytes]) -> bytes:
    s = c.ks.get(argv[1])
    if s is None:
        return _ZERO
    if type(s) is not set:
        raise CommandError(_WRONGTYPE)
    return _ONE if argv[2] in s else _ZERO


@command("smismember")
def smismember(c: Connection, argv: list[bytes]) -> bytes:
    s = _read(c, argv[1])
    members = argv[2:]
    if s is None:
        return b"*%d\r\n" % len(members) + _ZERO * len(members)
    return b"*%d\r\n" % len(members) + b"".join([_ONE if m in s else _ZERO for m in members])


@command("scard")
def scard(c: Connection, argv: list[bytes]) -> bytes:
    s = _read(c, argv[1])
    return _ZERO if s is None else _integer(len(s))


@command("srandmember")
def srandmember(c: Connection, argv: list[bytes]) -> bytes:
    n_args = len(argv)
    if n_args == 2:
        s = _read(c, argv[1])
        if not s:
            return c.null
        m = _random_member(s)
        return b"$%d\r\n%b\r\n" % (len(m), m)
    if n_args > 3:
        raise CommandError(SYNTAX)
    count = parse_int(argv[2])
    if count == INT64_MIN:
        raise CommandError(_LONG_RANGE)
    s = _read(c, argv[1])
    if not s or count == 0:
        return _EMPTY
    if count < 0 or count == 1:
        members = random.choices(list(s), k=-count if count < 0 else 1)
    elif count >= len(s):
        members = list(s)
    else:
        members = random.sample(list(s), count)
    return bulk_array(members)


# ---------------------------------------------------------------------- algebra
def _gather(c: Connection, keys: list[bytes], write: bool) -> list[set[bytes] | None]:
    """The sets at ``keys`` (None for a missing key); WRONGTYPE if any key is not a set."""
    lookup = c.ks.get_for_write if write else c.ks.get
    out: list[set[bytes] | None] = []
    for key in keys:
        s = lookup(key)
        if s is not None and type(s) is not set:
            raise CommandError(_WRONGTYPE)
        out.append(s)
    return out


def _inter(sets: list[set[bytes] | None]) -> set[bytes]:
    if any(s is None for s in sets):
        return set()
    ordered: list[set[bytes]] = sorted(sets, key=len)  # type: ignore[arg-type]
    return ordered[0].intersection(*ordered[1:])  # a copy even for one set


def _union(sets: list[set[bytes] | None]) -> set[bytes]:
    return set().union(*[s for s in sets if s])


def _diff(sets: list[set[bytes] | None]) -> set[bytes]:
    first = sets[0]
    if not first:
        return set()
    return first.difference(*[s for s in sets[1:] if s])


def _algebra(c: Connection, argv: list[bytes], op) -> bytes:  # type: ignore[no-untyped-def]
    result = op(_gather(c, argv[1:], False))
    return bulk_set(result, c.resp3)


def _store(c: Connection, argv: list[bytes], op) -> bytes:  # type: ignore[no-untyped-def]
    dst = argv[1]
    result = op(_gather(c, argv[2:], True))
    ks = c.ks
    if not result:
        ks.delete(dst)
        return _ZERO
    ks.set(dst, result)
    return _integer(len(result))


@command("sinter")
def sinter(c: Connection, argv: list[bytes]) -> bytes:
    return _algebra(c, argv, _inter)


@command("sunion")
def sunion(c: Connection, argv: list[bytes]) -> bytes:
    return _algebra(c, argv, _union)


@command("sdiff")
def sdiff(c: Connection, argv: list[bytes]) -> bytes:
    return _algebra(c, argv, _diff)


@command("sinterstore")
def sinterstore(c: Connection, argv: list[bytes]) -> bytes:
    return _store(c, argv, _inter)


@command("sunionstore")
def sunionstore(c: Connection, argv: list[bytes]) -> bytes:
    return _store(c, argv, _union)


@command("sdiffstore")
def sdiffstore(c: Connection, argv: list[bytes]) -> bytes:
    return _store(c, argv, _diff)


def sintercard_keys(argv: list[bytes]) -> list[bytes]:
    """The key arguments of a SINTERCARD call (its keys are "movable")."""
    try:
        numkeys = parse_int(argv[1])
    except CommandError:
        return []
    if numkeys < 1:
        return []
    return argv[2 : 2 + numkeys]


@command("sintercard")
def sintercard(c: Connection, argv: list[bytes]) -> bytes:
    numkeys = parse_int(argv[1], NUMKEYS)
    if numkeys < 1:
        raise CommandError(NUMKEYS)
    n_args = len(argv)
    if numkeys > n_args - 2:
        raise CommandError(TOO_MANY_KEYS)
    limit = 0
    j = 2 + numkeys
    while j < n_args:
        if argv[j].upper() == b"LIMIT" and j + 1 < n_args:
            limit = parse_int(argv[j + 1], LIMIT_NEGATIVE)
            if limit < 0:
                raise CommandError(LIMIT_NEGATIVE)
            j += 2
        else:
            raise CommandError(SYNTAX)
    sets = _gather(c, argv[2 : 2 + numkeys], False)
    if any(s is None for s in sets):
        return _ZERO
    ordered: list[set[bytes]] = sorted(sets, key=len)  # type: ignore[arg-type]
    first = ordered[0]
    rest = ordered[1:]
    if limit == 0:
        return _integer(len(first.intersection(*rest)))
    found = 0
    for m in first:
        for other in rest:
            if m not in other:
                break
        else:
            found += 1
            if found >= limit:
                break
    return _integer(found)


@command("sscan")
def sscan(c: Connection, argv: list[bytes]) -> bytes:
    cursor = parse_cursor(argv[2])
    s = _read(c, argv[1])
    if s is None:
        return _EMPTY_SCAN
    count, match, _ = parse_scan_args(argv, 3)
    next_cursor, candidates = scan_collection(s, cursor, count)
    out = [
        b"$%d\r\n%b\r\n" % (len(m), m)
        for m in candidates
        if m in s and (match is None or match(m))
    ]
    return scan_reply(next_cursor, out)


__all__ = ["group", "sintercard_keys"]
