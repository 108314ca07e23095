"""The replication stream: canonical RESP encoding of write effects, and their sizes.

The stream is a plain sequence of RESP multibulk commands (``*N`` then N ``$len``
bulks), encoded here and nowhere else. The primary writes it in chunks (one per
event-loop iteration) and ends every chunk with a marker, ``REPLCONF MARK <offset>``,
naming the stream offset right after the marker itself (:func:`mark`). A replica
applies a chunk's commands when its marker arrives and then knows its processed
offset exactly, without counting bytes per command; a chunk cut by the network
applies nothing until it is whole, and each chunk applies as one step (so a
MULTI/EXEC block, always inside one chunk, is never seen half applied).

Commands are replicated by their *effects* when replaying them would not give the
same result (DESIGN: SPOP, INCRBYFLOAT, expiry …). Handlers that know set
``conn.effects``; the rest are rewritten here from the keyspace state right after
the command ran (:func:`canonical`): relative TTLs (``SET … EX``, ``SETEX``,
``PSETEX``, ``GETEX … EX``) become absolute deadlines, so a replica expires the key
at the same moment as its primary whatever its own clock said when it applied it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"
PING = b"*1\r\n$4\r\nPING\r\n"
GETACK = b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n"

# Pieces of the encoding, precomputed for the lengths below SMALL (the primary's hot
# path builds the stream from them without formatting anything per write).
SMALL = 1024
CRLF = b"\r\n"
LEN = [b"$%d\r\n" % n for n in range(SMALL)]  # the header of an n-byte argument
NUM = [b"%d\r\n" % n for n in range(SMALL)]  # … without its "$"
MID = [b"\r\n$%d\r\n" % n for n in range(SMALL)]  # the end of one argument, the next's header
COUNT = [b"*%d\r\n" % n for n in range(64)]  # the header of an n-argument command


def head3(name: bytes) -> bytes:
    """The start of a 3-argument command named ``name`` up to its second argument's
    length: ``head3(a) + NUM[len(b)] + b + MID[len(c)] + c + CRLF == encode([a, b, c])``."""
    return b"*3\r\n$%d\r\n%s\r\n$" % (len(name), name)


def encode_into(parts: list[bytes], argv: list[bytes]) -> None:
    """Append the pieces of ``encode(argv)`` to ``parts`` (joined later, with others)."""
    n = len(argv)
    parts.append(COUNT[n] if n < 64 else b"*%d\r\n" % n)
    add = parts.extend
    for a in argv:
        if type(a) is not bytes:
            a = bytes(memoryview(a))  # a TypeError now, not when the pieces are joined
        m = len(a)
        add((LEN[m] if m < SMALL else b"$%d\r\n" % m, a, CRLF))


def encode(argv: list[bytes]) -> bytes:
    """One command as canonical RESP. (``%s`` formats bytes like ``%b``, faster.)"""
    n = len(argv)
    if n == 3:
        a, b, c = argv
        return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(a), a, len(b), b, len(c), c,
        )
    if n == 2:
        a, b = argv
        return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(a), a, len(b), b)
    if n == 4:
        a, b, c, d = argv
        return b"*4\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(a), a, len(b), b, len(c), c, len(d), d,
        )
    parts = [b"*%d\r\n" % n]
    parts.extend(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)
    return b"".join(parts)


_MARK_HEAD = b"*3\r\n$8\r\nREPLCONF\r\n$4\r\nMARK\r\n"


def mark(offset: int) -> bytes:
    """The end-of-chunk marker for a chunk ending at ``offset`` (before the marker):
    ``REPLCONF MARK <e>`` where ``e`` is the offset right after the marker."""
    for digits in range(len(b"%d" % offset), 25):  # ``end`` has at least as many digits
        end = offset + len(_MARK_HEAD) + len(b"$%d\r\n" % digits) + digits + 2
        if len(b"%d" % end) == digits:
            return _MARK_HEAD + b"$%d\r\n%d\r\n" % (digits, end)
    raise ValueError(f"offset {offset} out of range")


# --------------------------------------------------------------------------- rewriting

Rewriter = Callable[[Any, list[bytes]], list[list[bytes]]]


def _set(ks: Any, argv: list[bytes]) -> list[list[bytes]]:
    """``SET k v … EX|PX n …`` → ``… PXAT <deadline> …`` once the deadline is known."""
    if len(argv) == 3:
        return [argv]
    for i in range(3, len(argv) - 1):
        opt = argv[i].upper()
        if opt == b"EX" or opt == b"PX":
            at = ks.expire_at(argv[1])
            if at is None:  # the SET did not happen (NX/XX): replays as a no-op too
                return [argv]
            return [[*argv[:i], b"PXAT", b"%d" % at, *argv[i + 2 :]]]
    return [argv]


def _setex(ks: Any, argv: list[bytes]) -> list[list[bytes]]:
    key = argv[1]
    at = ks.expire_at(key)
    if at is None:
        return [[b"SET", key, argv[3]]]
    return [[b"SET", key, argv[3], b"PXAT", b"%d" % at]]


def _getex(ks: Any, argv: list[bytes]) -> list[list[bytes]]:
    if len(argv) == 2:
        return []  # a plain GETEX changes nothing
    key = argv[1]
    if not ks.exists(key):
        return [[b"DEL", key]]
    at = ks.expire_at(key)
    if at is None:
        return [[b"PERSIST", key]]
    return [[b"PEXPIREAT", key, b"%d" % at]]


def _table(**fns: tuple[Rewriter, int]) -> dict[bytes, tuple[Rewriter, int]]:
    out: dict[bytes, tuple[Rewriter, int]] = {}
    for name, entry in fns.items():
        out[name.encode()] = entry
        out[name.upper().encode()] = entry
    return out


# name -> (rewriter, the argument count from which it applies): a plain SET k v is
# replicated as it came.
REWRITERS = _table(set=(_set, 4), setex=(_setex, 0), psetex=(_setex, 0), getex=(_getex, 0))


def canonical(ks: Any, argv: list[bytes]) -> list[list[bytes]]:
    """What to replicate for a client command that ran with ``argv`` (no effects set)."""
    name = argv[0]
    entry = REWRITERS.get(name)
    if entry is None:
        if name.islower() or name.isupper():
            return [argv]
        entry = REWRITERS.get(name.lower())
        if entry is None:
            return [argv]
    fn, from_len = entry
    return fn(ks, argv) if len(argv) >= from_len else [argv]
