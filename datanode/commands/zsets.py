"""Sorted set commands over :class:`datanode.zset.ZSet` (``scores`` dict + sorted
``order`` list of ``(score, member)``).

Memory accounting per member: ``len(member) + 2 * ELEMENT_OVERHEAD``.

Scores are formatted by :func:`datanode.resp.format_double` (shortest round-trip
form, as Redis 7.2 does; Redis 7.0 printed ``%.17g``, e.g. ``1.1000000000000001``).
Lex ranges (BYLEX, ZLEXCOUNT, ZREMRANGEBYLEX) assume one score for all members, as
Redis documents; with mixed scores they scan the order like Redis's listpack does.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from .. import resp
from ..errors import POSITIVE, SYNTAX, WRONGTYPE, CommandError
from ..keyspace import ELEMENT_OVERHEAD
from ..numbers import INT64_MAX, INT64_MIN, parse_float, parse_int
from ..zset import ZSet
from .encode import bulk_array
from .scanargs import SMALL, parse_cursor, parse_scan_args, scan_collection, scan_reply
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()
command = group.command

_OH2 = 2 * ELEMENT_OVERHEAD
_WRONGTYPE = WRONGTYPE
_integer = resp.integer
_ZERO = resp.ZERO
_EMPTY = resp.EMPTY_ARRAY
_EMPTY_SCAN = b"*2\r\n$1\r\n0\r\n*0\r\n"
_fmt = resp.format_double
_INF = math.inf

XX_NX = "ERR XX and NX options at the same time are not compatible"
GT_LT_NX = "ERR GT, LT, and/or NX options at the same time are not compatible"
INCR_PAIR = "ERR INCR option supports a single increment-element pair"
NAN_SCORE = "ERR resulting score is not a number (NaN)"
NOT_FLOAT_RANGE = "ERR min or max is not a float"
NOT_LEX_RANGE = "ERR min or max not valid string range item"
LIMIT_RANK = (
    "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
)
WITHSCORES_LEX = "ERR syntax error, WITHSCORES not supported in combination with BYLEX"
_LONG_RANGE = (
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
)

_ADD_OPTS = frozenset((b"NX", b"XX", b"CH", b"INCR", b"GT", b"LT"))


def _read(c: Connection, key: bytes) -> ZSet | None:
    z = c.ks.get(key)
    if z is not None and type(z) is not ZSet:
        raise CommandError(_WRONGTYPE)
    return z


def _write(c: Connection, key: bytes) -> ZSet | None:
    z = c.ks.get_for_write(key)
    if z is not None and type(z) is not ZSet:
        raise CommandError(_WRONGTYPE)
    return z


def _double(value: float, resp3: bool) -> bytes:
    text = _fmt(value)
    if resp3:
        return b",%b\r\n" % text
    return b"$%d\r\n%b\r\n" % (len(text), text)


def _positive(raw: bytes) -> int:
    n = parse_int(raw, POSITIVE)
    if n < 0:
        raise CommandError(POSITIVE)
    return n


# ---------------------------------------------------------------------- range parsing
_SPACE = b" \t\n\v\f\r"


def _strtod(text: bytes) -> float:
    """A whole argument as C's ``strtod`` reads it (leading spaces, hex, inf), or raise."""
    if not text:
        return 0.0  # strtod converts nothing and stops at the terminator: 0, accepted
    if text[-1] in _SPACE or b"_" in text:
        raise ValueError(text)
    body = text.lstrip(_SPACE)
    try:
        value = float(body)
    except ValueError:
        unsigned = body[1:] if body[:1] in (b"+", b"-") else body
        if unsigned[:2].lower() != b"0x":
            raise
        value = float.fromhex(body.decode("ascii"))
    if value != value:
        raise ValueError(text)
    return value


def _score_bound(raw: bytes) -> tuple[float, bool]:
    """``(value, exclusive)`` of a score bound: ``1.5``, ``(1.5``, ``-inf``, ``+inf``."""
    try:
        if raw[:1] == b"(":
            return _strtod(raw[1:]), True
        return _strtod(raw), False
    except (ValueError, UnicodeDecodeError):
        raise CommandError(NOT_FLOAT_RANGE) from None


# A lex bound: (kind, value, exclusive); kind -1 is "-", +1 is "+", 0 a string.
_LexBound = tuple[int, bytes, bool]


def _lex_bound(raw: bytes) -> _LexBound:
    head = raw[:1]
    if head == b"[":
        return 0, raw[1:], False
    if head == b"(":
        return 0, raw[1:], True
    if raw == b"-":
        return -1, b"", True
    if raw == b"+":
        return 1, b"", True
    raise CommandError(NOT_LEX_RANGE)


def _gte_min(m: bytes, lo: _LexBound) -> bool:
    kind, value, excl = lo
    if kind:
        return kind < 0
    return m > value if excl else m >= value


def _lte_max(m: bytes, hi: _LexBound) -> bool:
    kind, value, excl = hi
    if kind:
        return kind > 0
    return m < value if excl else m <= value


def _lex_span(z: ZSet, lo: _LexBound, hi: _LexBound, reverse: bool = False) -> tuple[int, int]:
    """Half-open index range ``[i, j)`` of ``z.order`` within the lex bounds."""
    order = z.order
    n = len(order)
    if not n:
        return 0, 0
    score = order[0][0]
    if order[-1][0] == score:  # one score: members are sorted, bisect
        kind, value, excl = lo
        if kind:
            i = 0 if kind < 0 else n
        else:
            i = (bisect_right if excl else bisect_left)(order, (score, value))
        kind, value, excl = hi
        if kind:
            j = n if kind > 0 else 0
        else:
            j = (bisect_left if excl else bisect_right)(order, (score, value))
        return i, max(i, j)
    # Mixed scores (results unspecified by Redis): walk the order as its listpack does.
    lo_kind, lo_value, lo_excl = lo
    hi_kind, hi_value, hi_excl = hi
    if lo_kind != hi_kind:
        cmp = -1 if lo_kind < hi_kind else 1
    elif lo_kind:
        cmp = 0
    else:
        cmp = (lo_value > hi_value) - (lo_value < hi_value)
    if cmp > 0 or (cmp == 0 and (lo_excl or hi_excl)):
        return 0, 0
    if not _gte_min(order[-1][1], lo) or not _lte_max(order[0][1], hi):
        return 0, 0
    if not reverse:
        i = 0
        while i < n and not _gte_min(order[i][1], lo):
            i += 1
        j = i
        while j < n and _lte_max(order[j][1], hi):
            j += 1
        return i, j
    j = n
    while j > 0 and not _lte_max(order[j - 1][1], hi):
        j -= 1
    i = j
    while i > 0 and _gte_min(order[i - 1][1], lo):
        i -= 1
    return i, j


def _score_span(z: ZSet, lo: tuple[float, bool], hi: tuple[float, bool]) -> tuple[int, int]:
    low, low_ex = lo
    high, high_ex = hi
    if low > high or (low == high and (low_ex or high_ex)):
        return 0, 0
    return z.index_range_by_score(low, low_ex, high, high_ex)


def _rank_span(n: int, start: int, end: int) -> tuple[int, int]:
    """Redis's index sanitising: ``[start, end)`` half-open, empty as ``(0, 0)``."""
    if start < 0:
        start += n
    if end < 0:
        end += n
    if start < 0:
        start = 0
    if start > end or start >= n:
        return 0, 0
    if end >= n:
        end = n - 1
    return start, end + 1


# ---------------------------------------------------------------------- replies
def _emit(items: list[tuple[float, bytes]], withscores: bool, resp3: bool) -> bytes:
    """Entries as a reply: members, or members with scores (RESP3: pairs)."""
    out = [b"*%d\r\n" % len(items)]
    ap = out.append
    fmt = _fmt
    if not withscores:
        for _, m in items:
            ap(b"$%d\r\n%b\r\n" % (len(m), m))
    elif resp3:
        for s, m in items:
            ap(b"*2\r\n$%d\r\n%b\r\n,%b\r\n" % (len(m), m, fmt(s)))
    else:
        out[0] = b"*%d\r\n" % (2 * len(items))
        for s, m in items:
            t = fmt(s)
            ap(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(m), m, len(t), t))
    return b"".join(out)


def _remove_span(c: Connection, key: bytes, z: ZSet, i: int, j: int) -> int:
    """Delete entries ``order[i:j]``; the key too when it empties. Returns how many."""
    if j <= i:
        return 0
    order = z.order
    gone = order[i:j]
    del order[i:j]
    scores = z.scores
    freed = 0
    for _, m in gone:
        del scores[m]
        freed += len(m) + _OH2
    c.ks.account(-freed)
    if not scores:
        c.ks.delete(key)
    return len(gone)


# ---------------------------------------------------------------------- ZADD / ZINCRBY
def _zadd(
    c: Connection,
    key: bytes,
    pairs: list[bytes],
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
) -> bytes:
    scores_in = [parse_float(pairs[k]) for k in range(0, len(pairs), 2)]
    ks = c.ks
    z = ks.get_for_write(key)
    if z is None:
        if xx:
            return c.null if incr else _ZERO
        z = ZSet()
        ks.set(key, z)
    elif type(z) is not ZSet:
        raise CommandError(_WRONGTYPE)
    current = z.scores
    add = z.add
    added = updated = processed = 0
    delta = 0
    score = 0.0
    for k, score in enumerate(scores_in):
        m = pairs[2 * k + 1]
        old = current.get(m)
        if old is not None:
            if nx:
                continue
            if incr:
                score += old
                if score != score:
                    raise CommandError(NAN_SCORE)
            if (lt and score >= old) or (gt and score <= old):
                continue
            processed += 1
            if score != old:
                add(m, score)
                updated += 1
        elif not xx:
            add(m, score)
            added += 1
            processed += 1
            delta += len(m) + _OH2
    if delta:
        ks.account(delta)
    if incr:
        return _double(score, c.resp3) if processed else c.null
    return _integer(added + updated if ch else added)


@command("zadd")
def zadd(c: Connection, argv: list[bytes]) -> bytes:
    n = len(argv)
    if n == 4 and argv[2].upper() not in _ADD_OPTS:  # the common single pair
        score = parse_float(argv[2])
        key = argv[1]
        ks = c.ks
        z = ks.get_for_write(key)
        if z is None:
            z = ZSet()
            ks.set(key, z)
        elif type(z) is not ZSet:
            raise CommandError(_WRONGTYPE)
        m = argv[3]
        if z.add(m, score):
            ks.account(len(m) + _OH2)
            return resp.ONE
        return _ZERO
    nx = xx = gt = lt = ch = incr = False
    i = 2
    while i < n:
        opt = argv[i].upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"CH":
            ch = True
        elif opt == b"INCR":
            incr = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        else:
            break
        i += 1
    pairs = argv[i:]
    if not pairs or len(pairs) % 2:
        raise CommandError(SYNTAX)
    if nx and xx:
        raise CommandError(XX_NX)
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise CommandError(GT_LT_NX)
    if incr and len(pairs) > 2:
        raise CommandError(INCR_PAIR)
    return _zadd(c, argv[1], pairs, nx, xx, gt, lt, ch, incr)


@command("zincrby")
def zincrby(c: Connection, argv: list[bytes]) -> bytes:
    return _zadd(c, argv[1], [argv[2], argv[3]], False, False, False, False, False, True)


# ---------------------------------------------------------------------- removal
@command("zrem")
def zrem(c: Connection, argv: list[bytes]) -> bytes:
    key = argv[1]
    z = _write(c, key)
    if z is None:
        return _ZERO
    remove = z.remove
    removed = 0
    freed = 0
    for m in argv[2:]:
        if remove(m):
            removed += 1
            freed += len(m) + _OH2
    if removed:
        c.ks.account(-freed)
        if not z.scores:
            c.ks.delete(key)
    return _integer(removed)


@command("zremrangebyrank")
def zremrangebyrank(c: Connection, argv: list[bytes]) -> bytes:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    z = _write(c, argv[1])
    if z is None:
        return _ZERO
    i, j = _rank_span(len(z.order), start, end)
    return _integer(_remove_span(c, argv[1], z, i, j))


@command("zremrangebyscore")
def zremrangebyscore(c: Connection, argv: list[bytes]) -> bytes:
    lo = _score_bound(argv[2])
    hi = _score_bound(argv[3])
    z = _write(c, argv[1])
    if z is None:
        return _ZERO
    i, j = _score_span(z, lo, hi)
    return _integer(_remove_span(c, argv[1], z, i, j))


@command("zremrangebylex")
def zremrangebylex(c: Connection, argv: list[bytes]) -> bytes:
    lo = _lex_bound(argv[2])
    hi = _lex_bound(argv[3])
    z = _write(c, argv[1])
    if z is None:
        return _ZERO
    i, j = _lex_span(z, lo, hi)
    return _integer(_remove_span(c, argv[1], z, i, j))


def _zpop(c: Connection, argv: list[bytes], maximum: bool) -> bytes:
    n_args = len(argv)
    if n_args > 3:
        raise CommandError(SYNTAX)
    count = _positive(argv[2]) if n_args == 3 else -1
    key = argv[1]
    z = _write(c, key)
    if z is None or count == 0:
        return _EMPTY
    order = z.order
    k = 1 if count < 0 else min(count, len(order))
    if maximum:
        items = order[-k:]
        del order[-k:]
        items.reverse()
    else:
        items = order[:k]
        del order[:k]
    scores = z.scores
    freed = 0
    for _, m in items:
        del scores[m]
        freed += len(m) + _OH2
    c.ks.account(-freed)
    if not scores:
        c.ks.delete(key)
    resp3 = c.resp3
    if count < 0 or not resp3:  # flat [member, score, …]
        out = [b"*%d\r\n" % (2 * len(items))]
        for s, m in items:
            t = _fmt(s)
            if resp3:
                out.append(b"$%d\r\n%b\r\n,%b\r\n" % (len(m), m, t))
            else:
                out.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(m), m, len(t), t))
        return b"".join(out)
    return _emit(items, True, True)


@command("zpopmin")
def zpopmin(c: Connection, argv: list[bytes]) -> bytes:
    return _zpop(c, argv, False)


@command("zpopmax")
def zpopmax(c: Connection, argv: list[bytes]) -> bytes:
    return _zpop(c, argv, True)


# ---------------------------------------------------------------------- point reads
@command("zscore")
def zscore(c: Connection, argv: list[bytes]) -> bytes:
    z = _read(c, argv[1])
    if z is None:
        return c.null
    s = z.scores.get(argv[2])
    return c.null if s is None else _double(s, c.resp3)


@command("zmscore")
def zmscore(c: Connection, argv: list[bytes]) -> bytes:
    z = _read(c, argv[1])
    members = argv[2:]
    nul = c.null
    if z is None:
        return b"*%d\r\n" % len(members) + nul * len(members)
    get = z.scores.get
    resp3 = c.resp3
    out = [b"*%d\r\n" % len(members)]
    for m in members:
        s = get(m)
        out.append(nul if s is None else _double(s, resp3))
    return b"".join(out)


@command("zcard")
def zcard(c: Connection, argv: list[bytes]) -> bytes:
    z = _read(c, argv[1])
    return _ZERO if z is None else _integer(len(z.scores))


@command("zcount")
def zcount(c: Connection, argv: list[bytes]) -> bytes:
    lo = _score_bound(argv[2])
    hi = _score_bound(argv[3])
    z = _read(c, argv[1])
    if z is None:
        return _ZERO
    i, j = _score_span(z, lo, hi)
    return _integer(j - i)


@command("zlexcount")
def zlexcount(c: Connection, argv: list[bytes]) -> bytes:
    lo = _lex_bound(argv[2])
    hi = _lex_bound(argv[3])
    z = _read(c, argv[1])
    if z is None:
        return _ZERO
    i, j = _lex_span(z, lo, hi)
    return _integer(j - i)


def _zrank(c: Connection, argv: list[bytes], reverse: bool) -> bytes:
    z = _read(c, argv[1])
    if z is None:
        return c.null
    r = z.rank(argv[2])
    if r is None:
        return c.null
    return _integer(len(z.order) - 1 - r if reverse else r)


@command("zrank")
def zrank(c: Connection, argv: list[bytes]) -> bytes:
    return _zrank(c, argv, False)


@command("zrevrank")
def zrevrank(c: Connection, argv: list[bytes]) -> bytes:
    return _zrank(c, argv, True)


# ---------------------------------------------------------------------- ranges
_AUTO, _RANK, _SCORE, _LEX = 0, 1, 2, 3


def _zrange(
    c: Connection,
    argv: list[bytes],
    first: int,
    store: bool,
    rangetype: int,
    reverse: bool | None,
) -> bytes:
    """Redis's zrangeGenericCommand: ``argv[first]`` is the source key, then min max.

    ``rangetype`` _AUTO and ``reverse`` None let the options (BYSCORE/BYLEX, REV) decide.
    """
    n = len(argv)
    withscores = False
    offset = 0
    limit = -1
    j = first + 3
    while j < n:
        opt = argv[j].upper()
        if not store and opt == b"WITHSCORES":
            withscores = True
        elif opt == b"LIMIT" and n - j - 1 >= 2:
            offset = parse_int(argv[j + 1])
            limit = parse_int(argv[j + 2])
            j += 2
        elif reverse is None and opt == b"REV":
            reverse = True
        elif rangetype == _AUTO and opt == b"BYLEX":
            rangetype = _LEX
        elif rangetype == _AUTO and opt == b"BYSCORE":
            rangetype = _SCORE
        else:
            raise CommandError(SYNTAX)
        j += 1
    rev = bool(reverse)
    if rangetype == _AUTO:
        rangetype = _RANK
    if limit != -1 and rangetype == _RANK:
        raise CommandError(LIMIT_RANK)
    if withscores and rangetype == _LEX:
        raise CommandError(WITHSCORES_LEX)
    lo_raw = argv[first + 1]
    hi_raw = argv[first + 2]
    if rev and rangetype != _RANK:  # given as max, min
        lo_raw, hi_raw = hi_raw, lo_raw
    if rangetype == _RANK:
        start = parse_int(lo_raw)
        end = parse_int(hi_raw)
    elif rangetype == _SCORE:
        score_lo = _score_bound(lo_raw)
        score_hi = _score_bound(hi_raw)
    else:
        lex_lo = _lex_bound(lo_raw)
        lex_hi = _lex_bound(hi_raw)
    z = c.ks.get(argv[first])
    if z is None:
        if store:
            c.ks.delete(argv[1])
            return _ZERO
        return _EMPTY
    if type(z) is not ZSet:
        raise CommandError(_WRONGTYPE)
    order = z.order
    size = len(order)
    if rangetype == _RANK:
        if rev:
            i, k = _rank_span(size, start, end)
            items = order[size - k : size - i][::-1] if k > i else []
        else:
            i, k = _rank_span(size, start, end)
            items = order[i:k]
    else:
        if rangetype == _SCORE:
            i, k = _score_span(z, score_lo, score_hi)
        else:
            i, k = _lex_span(z, lex_lo, lex_hi, rev)
            if 0 < offset < size and k > i and order[0][0] != order[-1][0]:
                # Mixed scores: Redis skips the offset without range checks, then
                # emits while the far bound holds.
                if not rev:
                    i += offset
                    k = i
                    while k < size and _lte_max(order[k][1], lex_hi):
                        k += 1
                else:
                    k -= offset
                    i = k
                    while i > 0 and _gte_min(order[i - 1][1], lex_lo):
                        i -= 1
                offset = 0
        if offset < 0 or (offset > 0 and offset >= size) or k <= i:
            items = []
        elif not rev:
            a = i + offset
            b = k if limit < 0 else min(k, a + limit)
            items = order[a:b] if b > a else []
        else:
            b = k - offset
            a = i if limit < 0 else max(i, b - limit)
            items = order[a:b][::-1] if b > a else []
    if store:
        dst = argv[1]
        if not items:
            c.ks.delete(dst)
            return _ZERO
        out = ZSet()
        out_scores = out.scores
        for s, m in items:
            out_scores[m] = s
        out.order = sorted(items)
        c.ks.set(dst, out)
        return _integer(len(items))
    return _emit(items, withscores, c.resp3)


@command("zrange")
def zrange(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _AUTO, None)


@command("zrangestore")
def zrangestore(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 2, True, _AUTO, None)


@command("zrevrange")
def zrevrange(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _RANK, True)


@command("zrangebyscore")
def zrangebyscore(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _SCORE, False)


@command("zrevrangebyscore")
def zrevrangebyscore(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _SCORE, True)


@command("zrangebylex")
def zrangebylex(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _LEX, False)


@command("zrevrangebylex")
def zrevrangebylex(c: Connection, argv: list[bytes]) -> bytes:
    return _zrange(c, argv, 1, False, _LEX, True)


# ---------------------------------------------------------------------- random, scan
@command("zrandmember")
def zrandmember(c: Connection, argv: list[bytes]) -> bytes:
    n_args = len(argv)
    if n_args == 2:
        z = _read(c, argv[1])
        if not z:
            return c.null
        order = z.order
        m = order[random.randrange(len(order))][1]
        return b"$%d\r\n%b\r\n" % (len(m), m)
    count = parse_int(argv[2])
    if count == INT64_MIN:
        raise CommandError(_LONG_RANGE)
    withscores = False
    if n_args == 4:
        if argv[3].upper() != b"WITHSCORES":
            raise CommandError(SYNTAX)
        withscores = True
        if count < -(INT64_MAX // 2) or count > INT64_MAX // 2:
            raise CommandError("ERR value is out of range")
    elif n_args > 4:
        raise CommandError(SYNTAX)
    z = _read(c, argv[1])
    if not z or count == 0:
        return _EMPTY
    order = z.order
    size = len(order)
    if count < 0 or count == 1:
        picks = random.choices(order, k=-count if count < 0 else 1)
    elif count >= size:
        picks = list(order)
    else:
        picks = random.sample(order, count)
    if not withscores:
        return bulk_array([m for _, m in picks])
    return _emit(picks, True, c.resp3)


@command("zscan")
def zscan(c: Connection, argv: list[bytes]) -> bytes:
    cursor = parse_cursor(argv[2])
    z = _read(c, argv[1])
    if z is None:
        return _EMPTY_SCAN
    count, match, _ = parse_scan_args(argv, 3)
    scores = z.scores
    out: list[bytes] = []
    ap = out.append
    if len(scores) <= SMALL:  # whole, in score order (as Redis's listpack encoding)
        for s, m in z.order:
            if match is None or match(m):
                t = _fmt(s)
                ap(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(m), m, len(t), t))
        return scan_reply(0, out, 2 * len(out))
    next_cursor, candidates = scan_collection(scores, cursor, count)
    get = scores.get
    for m in candidates:
        score = get(m)
        if score is None or (match is not None and not match(m)):
            continue
        t = _fmt(score)
        ap(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(m), m, len(t), t))
    return scan_reply(next_cursor, out, 2 * len(out))


__all__ = ["group"]
