"""*SCAN helpers: cursor and option parsing (shared with SCAN), and collection cursors.

``parse_cursor`` and ``parse_scan_args`` follow Redis's parsing and errors;
``scan_collection`` walks a hash, set or sorted set (its member dict or set).

Collection cursors: a collection of at most :data:`SMALL` members (or one that fits
in COUNT) is returned whole with cursor 0, as Redis does for its compact encodings.
A bigger one is scanned over a *snapshot* of its member order taken when the scan
starts (cursor 0): the cursor carries the snapshot's id and the position in it.
Members are looked up in the live collection again before they are returned, so a
member present for the whole scan is returned exactly once, removed members are not
returned, and members added during the scan are not returned (Redis allows both).
Snapshots are kept in a small bounded cache; a cursor whose snapshot was evicted (or
that comes from elsewhere) falls back to a position in the collection's current
iteration order, which only guarantees the above while the collection is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from itertools import islice
from typing import Any, NamedTuple

from ..errors import SYNTAX, CommandError
from ..glob import compile_glob
from ..numbers import parse_int

__all__ = [
    "SMALL",
    "ScanExtra",
    "parse_cursor",
    "parse_scan_args",
    "scan_collection",
    "scan_reply",
]

INVALID_CURSOR = "ERR invalid cursor"
_ULONG_MAX = 2**64 - 1

# Collections up to this size are returned in one call (Redis: listpack/intset).
SMALL = 128
# Snapshot cache bounds: number of scans in flight, total members referenced.
_MAX_SCANS = 64
_MAX_SNAPSHOT_MEMBERS = 4_000_000
_POS_BITS = 32
_POS_MASK = (1 << _POS_BITS) - 1
_MAX_SCAN_ID = 1 << 30


class ScanExtra(NamedTuple):
    """Options beyond COUNT and MATCH: TYPE (lowercased; SCAN only) and NOVALUES (HSCAN)."""

    type: bytes | None = None
    novalues: bool = False


_NO_EXTRA = ScanExtra()


def parse_cursor(raw: bytes) -> int:
    """A cursor as Redis parses it (``strtoul``): optional sign, digits, no spaces.

    As with ``strtoul``, the empty string is 0 and ``-N`` wraps around 2**64.
    """
    if not raw:
        return 0
    sign = raw[:1]
    digits = raw[1:] if sign in (b"+", b"-") else raw
    if not digits.isdigit() or not digits.isascii():
        raise CommandError(INVALID_CURSOR)
    value = int(digits)
    if value > _ULONG_MAX:
        raise CommandError(INVALID_CURSOR)
    if sign == b"-":
        value = (-value) & _ULONG_MAX
    return value


def parse_scan_args(
    argv: list[bytes],
    start: int,
    allow_type: bool = False,
    allow_novalues: bool = False,
) -> tuple[int, Callable[[bytes], bool] | None, ScanExtra]:
    """``[MATCH pattern] [COUNT n] [TYPE t] [NOVALUES]`` from ``argv[start:]``.

    Returns ``(count, match, extra)``: ``count`` defaults to 10, ``match`` is None
    when there is no pattern or it is ``*``. TYPE is only accepted with
    ``allow_type`` (SCAN), NOVALUES only with ``allow_novalues`` (HSCAN).
    """
    count = 10
    match: Callable[[bytes], bool] | None = None
    type_name: bytes | None = None
    novalues = False
    n = len(argv)
    i = start
    while i < n:
        opt = argv[i].upper()
        more = n - i - 1
        if opt == b"COUNT" and more:
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
            i += 2
        elif opt == b"MATCH" and more:
            pattern = argv[i + 1]
            match = None if pattern == b"*" else compile_glob(pattern)
            i += 2
        elif opt == b"TYPE" and allow_type and more:
            type_name = argv[i + 1].lower()
            i += 2
        elif opt == b"NOVALUES" and allow_novalues:
            novalues = True
            i += 1
        else:
            raise CommandError(SYNTAX)
    if type_name is None and not novalues:
        return count, match, _NO_EXTRA
    return count, match, ScanExtra(type_name, novalues)


# ---------------------------------------------------------------------- collection cursors
class _Snapshot:
    __slots__ = ("source", "members")

    def __init__(self, source: Any, members: list[Any]) -> None:
        self.source = source
        self.members = members


_snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
_snapshot_total = 0
_next_id = 0


def _store(source: Any, members: list[Any]) -> int:
    global _snapshot_total, _next_id
    while _snapshots and (
        len(_snapshots) >= _MAX_SCANS or _snapshot_total + len(members) > _MAX_SNAPSHOT_MEMBERS
    ):
        _, old = _snapshots.popitem(last=False)
        _snapshot_total -= len(old.members)
    _next_id = _next_id % _MAX_SCAN_ID + 1
    stale = _snapshots.pop(_next_id, None)
    if stale is not None:
        _snapshot_total -= len(stale.members)
    _snapshots[_next_id] = _Snapshot(source, members)
    _snapshot_total += len(members)
    return _next_id


def _drop(scan_id: int) -> None:
    global _snapshot_total
    old = _snapshots.pop(scan_id, None)
    if old is not None:
        _snapshot_total -= len(old.members)


def scan_collection(source: Collection[Any], cursor: int, count: int) -> tuple[int, Iterable[Any]]:
    """One step over ``source`` (a dict's keys or a set): ``(next_cursor, candidates)``.

    Candidates may include members removed since the scan started: the caller looks
    each one up in the live collection (it needs the value anyway) and skips misses.
    """
    n = len(source)
    if cursor == 0:
        if n <= SMALL or n <= count:
            return 0, source
        members = list(source)
        scan_id = _store(source, members)
        return (scan_id << _POS_BITS) | count, members[:count]
    scan_id = cursor >> _POS_BITS
    pos = cursor & _POS_MASK
    snap = _snapshots.get(scan_id) if scan_id else None
    if snap is not None and snap.source is source:
        _snapshots.move_to_end(scan_id)
        members = snap.members
        end = pos + count
        if end >= len(members):
            _drop(scan_id)
            return 0, members[pos:]
        return (scan_id << _POS_BITS) | end, members[pos:end]
    # Unknown or evicted snapshot. A small collection is returned whole whatever the
    # cursor (as Redis does for its compact encodings); a big one resumes at a
    # position in its current iteration order.
    if n <= SMALL:
        return 0, source
    if pos >= n:
        return 0, ()
    end = pos + count
    items = list(islice(source, pos, end))
    return (0 if end >= n else end), items


def scan_reply(cursor: int, encoded: list[bytes], n: int = -1) -> bytes:
    """``[cursor, [items…]]`` from encoded items; ``n`` counts the RESP elements in
    ``encoded`` when a part holds more than one (e.g. member and score together)."""
    text = b"%d" % cursor
    return b"*2\r\n$%d\r\n%b\r\n*%d\r\n%b" % (
        len(text),
        text,
        len(encoded) if n < 0 else n,
        b"".join(encoded),
    )
