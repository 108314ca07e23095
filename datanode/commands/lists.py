"""List commands. A list is a ``collections.deque[bytes]`` (left = head).

Memory accounting per element: ``len(element) + ELEMENT_OVERHEAD``.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING

from .. import resp
from ..errors import (
    INDEX_OUT_OF_RANGE,
    NO_SUCH_KEY,
    POSITIVE,
    SYNTAX,
    WRONGTYPE,
    CommandError,
    wrong_args,
)
from ..keyspace import ELEMENT_OVERHEAD
from ..numbers import INT64_MIN, parse_int
from .encode import bulks
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command

_OH = ELEMENT_OVERHEAD
_WRONGTYPE = WRONGTYPE
_integer = resp.integer
_ZERO = resp.ZERO
_EMPTY = resp.EMPTY_ARRAY
_OK = resp.OK
RANK_ZERO = (
    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
    "or use negative to start from the end of the list"
)
COUNT_NEGATIVE = "ERR COUNT can't be negative"
MAXLEN_NEGATIVE = "ERR MAXLEN can't be negative"
_LONG_RANGE = (
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)


def _read(c: Connection, key: bytes) -> deque[bytes] | None:
    d = c.ks.get(key)
    if d is not None and type(d) is not deque:
        raise CommandError(_WRONGTYPE)
    return d


def _write(c: Connection, key: bytes) -> deque[bytes] | None:
    d = c.ks.get_for_write(key)
    if d is not None and type(d) is not deque:
        raise CommandError(_WRONGTYPE)
    return d


def _positive(raw: bytes, message: str = POSITIVE) -> int:
    """Redis's getPositiveLongFromObjectOrReply: a long >= 0, one message for all faults."""
    n = parse_int(raw, message)
    if n < 0:
        raise CommandError(message)
    return n


def _sizeof(items: list[bytes]) -> int:
    return sum(map(len, items)) + _OH * len(items)


# ---------------------------------------------------------------------- push
def _push(c: Connection, argv: list[bytes], left: bool, create: bool) -> bytes:
    key = argv[1]
    ks = c.ks
    d = ks.get_for_write(key)
    if d is None:
        if not create:
            return _ZERO
        d = deque()
        ks.set(key, d)
    elif type(d) is not deque:
        raise CommandError(_WRONGTYPE)
    if len(argv) == 3:
        x = argv[2]
        if left:
            d.appendleft(x)
        else:
            d.append(x)
        ks.account(len(x) + _OH)
    else:
        items = argv[2:]
        if left:
            d.extendleft(items)
        else:
            d.extend(items)
        ks.account(_sizeof(items))
    return _integer(len(d))


@command("lpush")
def lpush(c: Connection, argv: list[bytes]) -> bytes:
    return _push(c, argv, True, True)


@command("rpush")
def rpush(c: Connection, argv: list[bytes]) -> bytes:
    return _push(c, argv, False, True)


@command("lpushx")
def lpushx(c: Connection, argv: list[bytes]) -> bytes:
    return _push(c, argv, True, False)


@command("rpushx")
def rpushx(c: Connection, argv: list[bytes]) -> bytes:
    return _push(c, argv, False, False)


# ---------------------------------------------------------------------- pop
def _pop(c: Connection, argv: list[bytes], left: bool) -> bytes:
    key = argv[1]
    ks = c.ks
    if len(argv) == 2:
        d = ks.get_for_write(key)
        if d is None:
            return c.null
        if type(d) is not deque:
            raise CommandError(_WRONGTYPE)
        x = d.popleft() if left else d.pop()
        ks.account(-len(x) - _OH)
        if not d:
            ks.delete(key)
        return b"$%d\r\n%b\r\n" % (len(x), x)
    if len(argv) > 3:
        raise CommandError(wrong_args("lpop" if left else "rpop"))
    count = _positive(argv[2])
    d = _write(c, key)
    if d is None:
        return resp.null_array(c.resp3)
    if count == 0:
        return _EMPTY
    n = len(d)
    if count >= n:
        items = list(d)
        d.clear()
        if not left:
            items.reverse()
    else:
        pop = d.popleft if left else d.pop
        items = [pop() for _ in range(count)]
    ks.account(-_sizeof(items))
    if not d:
        ks.delete(key)
    return bulks(b"*%d\r\n" % len(items), items)


@command("lpop")
def lpop(c: Connection, argv: list[bytes]) -> bytes:
    return _pop(c, argv, True)


@command("rpop")
def rpop(c: Connection, argv: list[bytes]) -> bytes:
    return _pop(c, argv, False)


# ---------------------------------------------------------------------- reads
@command("llen")
def llen(c: Connection, argv: list[bytes]) -> bytes:
    d = _read(c, argv[1])
    return _ZERO if d is None else _integer(len(d))


@command("lrange")
def lrange(c: Connection, argv: list[bytes]) -> bytes:
    start = parse_int(argv[2])
    stop = parse_int(argv[3])
    d = c.ks.get(argv[1])
    if d is None:
        return _EMPTY
    if type(d) is not deque:
        raise CommandError(_WRONGTYPE)
    n = len(d)
    if start < 0:
        start += n
        if start < 0:
            start = 0
    if stop < 0:
        stop += n
    if start > stop or start >= n:
        return _EMPTY
    if stop >= n:
        stop = n - 1
    count = stop - start + 1
    if count == n:
        return bulks(b"*%d\r\n" % n, d)
    if start <= n - 1 - stop:
        items = list(islice(d, start, stop + 1))
    else:  # nearer the tail: walk from there
        items = list(islice(reversed(d), n - 1 - stop, n - start))
        items.reverse()
    return bulks(b"*%d\r\n" % count, items)


@command("lindex")
def lindex(c: Connection, argv: list[bytes]) -> bytes:
    index = parse_int(argv[2])
    d = _read(c, argv[1])
    if d is None:
        return c.null
    n = len(d)
    if index < 0:
        index += n
    if index < 0 or index >= n:
        return c.null
    x = d[index]
    return b"$%d\r\n%b\r\n" % (len(x), x)


@command("lpos")
def lpos(c: Connection, argv: list[bytes]) -> bytes:
    element = argv[2]
    rank = 1
    count = -1  # -1: COUNT not given
    maxlen = 0
    n_args = len(argv)
    j = 3
    while j < n_args:
        opt = argv[j].upper()
        if j + 1 >= n_args:
            raise CommandError(SYNTAX)
        raw = argv[j + 1]
        if opt == b"RANK":
            rank = parse_int(raw)
            if rank == 0:
                raise CommandError(RANK_ZERO)
            if rank == INT64_MIN:
                raise CommandError(_LONG_RANGE)
        elif opt == b"COUNT":
            count = _positive(raw, COUNT_NEGATIVE)
        elif opt == b"MAXLEN":
            maxlen = _positive(raw, MAXLEN_NEGATIVE)
        else:
            raise CommandError(SYNTAX)
        j += 2
    d = _read(c, argv[1])
    if d is None:
        return _EMPTY if count != -1 else c.null
    n = len(d)
    limit = n if maxlen == 0 or maxlen > n else maxlen
    found: list[int] = []
    want = 1 if count == -1 else count  # 0: all matches
    if rank > 0:
        skip = rank - 1
        index = d.index
        i = 0
        while i < limit:
            try:
                i = index(element, i, limit)
            except ValueError:
                break
            if skip:
                skip -= 1
            else:
                found.append(i)
                if len(found) == want:
                    break
            i += 1
    else:
        skip = -rank - 1
        last = n - 1
        i = 0
        for x in reversed(d):
            if i >= limit:
                break
            if x == element:
                if skip:
                    skip -= 1
                else:
                    found.append(last - i)
                    if len(found) == want:
                        break
            i += 1
    if count == -1:
        return _integer(found[0]) if found else c.null
    return b"*%d\r\n" % len(found) + b"".join([_integer(i) for i in found])


# ---------------------------------------------------------------------- in-place writes
@command("lset")
def lset(c: Connection, argv: list[bytes]) -> bytes:
    d = _write(c, argv[1])
    if d is None:
        raise CommandError(NO_SUCH_KEY)
    index = parse_int(argv[2])
    n = len(d)
    if index < 0:
        index += n
    if index < 0 or index >= n:
        raise CommandError(INDEX_OUT_OF_RANGE)
    x = argv[3]
    old = d[index]
    d[index] = x
    c.ks.account(len(x) - len(old))
    return _OK


@command("lrem")
def lrem(c: Connection, argv: list[bytes]) -> bytes:
    count = parse_int(argv[2])
    key = argv[1]
    d = _write(c, key)
    if d is None:
        return _ZERO
    element = argv[3]
    total = d.count(element)
    if total == 0:
        return _ZERO
    if count == 0 or abs(count) >= total:
        removed = total
        kept = [x for x in d if x != element]
        d.clear()
        d.extend(kept)
    elif count > 0 and count <= 8:
        removed = count
        for _ in range(count):
            d.remove(element)
    else:
        # Drop the first |count| matches from the chosen end in one pass.
        removed = abs(count)
        left = removed
        src = d if count > 0 else reversed(d)
        kept = []
        ap = kept.append
        for x in src:
            if left and x == element:
                left -= 1
            else:
                ap(x)
        if count < 0:
            kept.reverse()
        d.clear()
        d.extend(kept)
    c.ks.account(-(len(element) + _OH) * removed)
    if not d:
        c.ks.delete(key)
    return _integer(removed)


@command("ltrim")
def ltrim(c: Connection, argv: list[bytes]) -> bytes:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    key = argv[1]
    d = _write(c, key)
    if d is None:
        return _OK
    n = len(d)
    if start < 0:
        start += n
    if end < 0:
        end += n
    if start < 0:
        start = 0
    if start > end or start >= n:
        ltrim_, rtrim = n, 0
    else:
        if end >= n:
            end = n - 1
        ltrim_, rtrim = start, n - end - 1
    if ltrim_ == 0 and rtrim == 0:
        return _OK
    keep = n - ltrim_ - rtrim
    if keep <= 0:
        c.ks.delete(key)  # accounts the whole value
        return _OK
    freed = 0
    if ltrim_ + rtrim <= keep:
        popleft = d.popleft
        pop = d.pop
        for _ in range(ltrim_):
            freed += len(popleft())
        for _ in range(rtrim):
            freed += len(pop())
    else:
        freed = sum(map(len, islice(d, 0, ltrim_))) + sum(map(len, islice(reversed(d), 0, rtrim)))
        kept = list(islice(d, ltrim_, n - rtrim))
        d.clear()
        d.extend(kept)
    c.ks.account(-freed - _OH * (ltrim_ + rtrim))
    return _OK


@command("linsert")
def linsert(c: Connection, argv: list[bytes]) -> bytes:
    where = argv[2].upper()
    if where == b"BEFORE":
        after = False
    elif where == b"AFTER":
        after = True
    else:
        raise CommandError(SYNTAX)
    d = _write(c, argv[1])
    if d is None:
        return _ZERO
    try:
        i = d.index(argv[3])
    except ValueError:
        return resp.MINUS_ONE
    x = argv[4]
    d.insert(i + 1 if after else i, x)
    c.ks.account(len(x) + _OH)
    return _integer(len(d))


# ---------------------------------------------------------------------- moves
def _side(raw: bytes) -> bool:
    """True for LEFT, False for RIGHT."""
    side = raw.upper()
    if side == b"LEFT":
        return True
    if side == b"RIGHT":
        return False
    raise CommandError(SYNTAX)


def _move(c: Connection, src: bytes, dst: bytes, from_left: bool, to_left: bool) -> bytes:
    ks = c.ks
    s = ks.get_for_write(src)
    if s is None:
        return c.null
    if type(s) is not deque:
        raise CommandError(_WRONGTYPE)
    if not s:
        return c.null
    if dst == src:
        t = s
    else:
        t = ks.get_for_write(dst)
        if t is not None and type(t) is not deque:
            raise CommandError(_WRONGTYPE)
    x = s.popleft() if from_left else s.pop()
    if t is None:
        t = deque()
        ks.set(dst, t)
    if to_left:
        t.appendleft(x)
    else:
        t.append(x)
    # The element's bytes just moved between lists: nothing to account, except the
    # source key itself when it is now empty (src != dst then: a rotation keeps it).
    if not s:
        ks.delete(src)
    return b"$%d\r\n%b\r\n" % (len(x), x)


@command("lmove")
def lmove(c: Connection, argv: list[bytes]) -> bytes:
    return _move(c, argv[1], argv[2], _side(argv[3]), _side(argv[4]))


@command("rpoplpush")
def rpoplpush(c: Connection, argv: list[bytes]) -> bytes:
    return _move(c, argv[1], argv[2], False, True)


__all__ = ["group"]
