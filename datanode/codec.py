"""Binary serialization of values and of streams of keyspace entries.

Shared by snapshots, DUMP/RESTORE, and (later) replication full sync and slot
transfer. Pure functions: no keyspace, no I/O.

Value encoding (``encode_value``): one type byte, then the body. All integers are
little-endian; element lengths are u32, so one element is at most 4 GiB - 1.

=====  ======  ==============================================================
type   value   body
=====  ======  ==============================================================
0      string  the raw bytes
1      list    u32 n, n x u32 lengths, the elements back to back
2      set     same as list
3      zset    u32 n, n x f64 scores, n x u32 lengths, members (score order)
4      hash    u32 n, n x u32 field lengths, n x u32 value lengths, the n
               fields back to back, then the n values back to back
=====  ======  ==============================================================

Lengths are packed with one ``struct`` call per value (``array`` from 32k elements
on) and elements joined with one ``b"".join``, so the per-element cost stays in C
as much as Python allows.

Entry stream (``encode_entry``, ``encode_stream``, ``encode_dicts`` for whole slot
dicts; :class:`EntryDecoder` decodes it incrementally), a sequence of records,
each starting with an op byte:

* ``0x01`` entry: ``<BIQB`` op, key length u32, body length u64, value type;
  then the key, then the value body.
* ``0x02`` entry with TTL: ``<BIQBq`` as above plus the absolute expiry time
  (unix ms, i64); then the key, then the body.
* ``0xFF`` end of stream. Bytes after it are left to the caller (``rest``).
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import accumulate, pairwise
from typing import Any

from .zset import ZSet

T_STRING = 0
T_LIST = 1
T_SET = 2
T_ZSET = 3
T_HASH = 4

OP_ENTRY = 0x01
OP_ENTRY_TTL = 0x02
OP_END = 0xFF
END = bytes([OP_END])

_HDR = struct.Struct("<BIQB")
_HDR_TTL = struct.Struct("<BIQBq")
_U32 = struct.Struct("<I")
HDR_SIZE = _HDR.size  # 14
HDR_TTL_SIZE = _HDR_TTL.size  # 22

_MAX_U32 = 0xFFFFFFFF
assert array("I").itemsize == 4 and array("d").itemsize == 8

Entry = tuple[bytes, Any, "int | None"]


class CodecError(ValueError):
    """Malformed encoded data (or a value that cannot be encoded)."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} at offset {offset}")
        self.reason = message
        self.offset = offset


class StreamTruncated(CodecError):
    """A record claims more bytes than the stream has (``EntryDecoder`` with a limit)."""


# =========================================================================== encoding


# Collections beyond this many elements get their lengths packed through ``array``
# (4 bytes per element) instead of a ``struct.pack(*lengths)`` call, whose argument
# tuple would cost 8 bytes per element on top.
_ARRAY_FROM = 1 << 15
_BIG_ENDIAN = sys.byteorder == "big"


def _u32_array(seqs: Iterable[Any]) -> bytes:
    """The lengths of every element of ``seqs`` as little-endian u32s."""
    a = array("I")
    try:
        for seq in seqs:
            a.extend(map(len, seq))
    except OverflowError as exc:
        raise CodecError("collection element larger than 4 GiB") from exc
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _f64_array(values: list[float]) -> bytes:
    a = array("d", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _seq_body(items: Any) -> bytes:
    """u32 n, n lengths, elements: for lists and sets."""
    n = len(items)
    if n == 0:
        return b"\0\0\0\0"
    if n >= _ARRAY_FROM:
        return b"".join((_U32.pack(n), _u32_array((items,)), b"".join(items)))
    try:
        lens = struct.pack(f"<I{n}I", n, *map(len, items))
    except struct.error as exc:
        raise CodecError("collection element larger than 4 GiB") from exc
    return lens + b"".join(items)


def _hash_body(d: dict[bytes, bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return b"\0\0\0\0"
    fields = list(d)
    values = list(d.values())
    if n >= _ARRAY_FROM:
        lens = _U32.pack(n) + _u32_array((fields, values))
    else:
        try:
            lens = struct.pack(f"<I{2 * n}I", n, *map(len, fields), *map(len, values))
        except struct.error as exc:
            raise CodecError("hash field or value larger than 4 GiB") from exc
    return b"".join((lens, b"".join(fields), b"".join(values)))


def _zset_body(z: ZSet) -> bytes:
    order = z.order
    n = len(order)
    if n == 0:
        return b"\0\0\0\0"
    scores = [s for s, _ in order]
    members = [m for _, m in order]
    if n >= _ARRAY_FROM:
        head = b"".join((_U32.pack(n), _f64_array(scores), _u32_array((members,))))
    else:
        try:
            head = struct.pack(f"<I{n}d{n}I", n, *scores, *map(len, members))
        except struct.error as exc:
            raise CodecError("sorted set member larger than 4 GiB") from exc
    return head + b"".join(members)


def encode_body(value: Any) -> tuple[int, bytes]:
    """``(type byte, body)`` of a value."""
    t = type(value)
    if t is bytes:
        return T_STRING, value
    if t is dict:
        return T_HASH, _hash_body(value)
    if t is deque:
        return T_LIST, _seq_body(value)
    if t is set:
        return T_SET, _seq_body(list(value))
    if t is ZSet:
        return T_ZSET, _zset_body(value)
    raise CodecError(f"cannot encode a value of type {t.__name__}")


def encode_value(value: Any) -> bytes:
    """One value as type byte + body (the DUMP payload's core)."""
    if type(value) is bytes:
        return b"\0" + value
    t, body = encode_body(value)
    return bytes((t,)) + body


def encode_entry(key: bytes, value: Any, expire_at: int | None = None) -> bytes:
    """One stream record for ``key`` (``expire_at``: absolute unix ms, or None)."""
    if type(value) is bytes:
        t, body = T_STRING, value
    else:
        t, body = encode_body(value)
    if len(key) > _MAX_U32:
        raise CodecError("key larger than 4 GiB")
    if expire_at is None:
        return b"".join((_HDR.pack(OP_ENTRY, len(key), len(body), t), key, body))
    return b"".join((_HDR_TTL.pack(OP_ENTRY_TTL, len(key), len(body), t, expire_at), key, body))


def encode_stream(
    items: Iterable[Entry], chunk_size: int = 1 << 20, end: bool = True
) -> Iterator[bytes]:
    """Encode ``(key, value, expire_at)`` records into chunks of about ``chunk_size`` bytes.

    With ``end`` the last chunk carries the end marker. Holds about one chunk in
    memory; a value body of ``chunk_size`` or more is yielded on its own, uncopied.
    """
    pack = _HDR.pack
    pack_ttl = _HDR_TTL.pack
    parts: list[bytes] = []
    extend = parts.extend
    size = 0
    for key, value, at in items:
        if type(value) is bytes:
            t, body = T_STRING, value
        else:
            t, body = encode_body(value)
        if at is None:
            head = pack(OP_ENTRY, len(key), len(body), t)
        else:
            head = pack_ttl(OP_ENTRY_TTL, len(key), len(body), t, at)
        if len(body) >= chunk_size:
            extend((head, key))
            yield b"".join(parts)
            parts.clear()
            size = 0
            yield body
            continue
        extend((head, key, body))
        size += len(key) + len(body) + 22
        if size >= chunk_size:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if end:
        parts.append(END)
    if parts:
        yield b"".join(parts)


def encode_dicts(
    dicts: Iterable[dict[bytes, Any]],
    expires: dict[bytes, int] | None = None,
    now: int = 0,
    chunk_size: int = 1 << 20,
    end: bool = True,
    tally: list[int] | None = None,
) -> Iterator[bytes]:
    """Encode every entry of ``dicts`` (key -> value maps, e.g. the keyspace's slots):
    the same stream as :func:`encode_stream`, without a tuple per entry.

    TTLs come from ``expires``; entries whose TTL is ``<= now`` are skipped. If
    ``tally`` is given, ``tally[0]`` is increased by the number of entries written.
    The dicts must not change while the generator runs.
    """
    pack = _HDR.pack
    pack_ttl = _HDR_TTL.pack
    get = expires.get if expires else None
    parts: list[bytes] = []
    extend = parts.extend
    size = 0  # bytes of values in parts (headers and keys are estimated from len(parts))
    n = 0
    at = None
    for d in dicts:
        if not d:
            continue
        n += len(d)
        for key, value in d.items():
            if get is not None:
                at = get(key)
                if at is not None and at <= now:
                    n -= 1
                    continue
            if type(value) is bytes and len(value) < chunk_size:  # the common case
                if at is None:
                    extend((pack(OP_ENTRY, len(key), len(value), T_STRING), key, value))
                else:
                    extend((pack_ttl(OP_ENTRY_TTL, len(key), len(value), T_STRING, at), key, value))
                size += len(value)
            else:
                t, body = (T_STRING, value) if type(value) is bytes else encode_body(value)
                if at is None:
                    head = pack(OP_ENTRY, len(key), len(body), t)
                else:
                    head = pack_ttl(OP_ENTRY_TTL, len(key), len(body), t, at)
                if len(body) >= chunk_size:
                    extend((head, key))
                    yield b"".join(parts)
                    parts.clear()
                    size = 0
                    yield body
                    continue
                extend((head, key, body))
                size += len(body)
            if size >= chunk_size:
                yield b"".join(parts)
                parts.clear()
                size = 0
        if size + 16 * len(parts) >= chunk_size:
            yield b"".join(parts)
            parts.clear()
            size = 0
    if tally is not None:
        tally[0] += n
    if end:
        parts.append(END)
    if parts:
        yield b"".join(parts)


# =========================================================================== decoding


def _slices(data: bytes, lens: Any, start: int) -> list[bytes]:
    offs = list(accumulate(lens, initial=start))
    return [data[a:b] for a, b in pairwise(offs)]


def _count(data: bytes, start: int, end: int) -> int:
    if end - start < 4:
        raise CodecError("collection body too short")
    return _U32.unpack_from(data, start)[0]


def _decode_seq(data: bytes, start: int, end: int) -> list[bytes]:
    n = _count(data, start, end)
    pos = start + 4
    if n == 0:
        if pos != end:
            raise CodecError("trailing bytes after empty collection")
        return []
    if pos + 4 * n > end:
        raise CodecError("collection lengths run past the value")
    lens = struct.unpack_from(f"<{n}I", data, pos)
    pos += 4 * n
    if pos + sum(lens) != end:
        raise CodecError("collection lengths do not match the value size")
    return _slices(data, lens, pos)


def _decode_hash(data: bytes, start: int, end: int) -> dict[bytes, bytes]:
    n = _count(data, start, end)
    pos = start + 4
    if n == 0:
        if pos != end:
            raise CodecError("trailing bytes after empty hash")
        return {}
    if pos + 8 * n > end:
        raise CodecError("hash lengths run past the value")
    lens = struct.unpack_from(f"<{2 * n}I", data, pos)
    pos += 8 * n
    if pos + sum(lens) != end:
        raise CodecError("hash lengths do not match the value size")
    items = _slices(data, lens, pos)
    d = dict(zip(items[:n], items[n:], strict=True))
    if len(d) != n:
        raise CodecError("duplicate hash fields")
    return d


def _decode_zset(data: bytes, start: int, end: int) -> ZSet:
    n = _count(data, start, end)
    pos = start + 4
    z = ZSet()
    if n == 0:
        if pos != end:
            raise CodecError("trailing bytes after empty sorted set")
        return z
    if pos + 12 * n > end:
        raise CodecError("sorted set header runs past the value")
    scores = struct.unpack_from(f"<{n}d", data, pos)
    pos += 8 * n
    lens = struct.unpack_from(f"<{n}I", data, pos)
    pos += 4 * n
    if pos + sum(lens) != end:
        raise CodecError("sorted set lengths do not match the value size")
    if any(map(math.isnan, scores)):
        raise CodecError("NaN score in sorted set")
    members = _slices(data, lens, pos)
    z.scores = dict(zip(members, scores, strict=True))
    if len(z.scores) != n:
        raise CodecError("duplicate sorted set members")
    order = list(zip(scores, members, strict=True))
    order.sort()  # already sorted when written by us: one linear pass
    z.order = order
    return z


def decode_body(t: int, data: bytes, start: int = 0, end: int | None = None) -> Any:
    """Decode the body of type ``t`` found in ``data[start:end]``."""
    if end is None:
        end = len(data)
    try:
        if t == T_STRING:
            return data[start:end]
        if t == T_HASH:
            return _decode_hash(data, start, end)
        if t == T_LIST:
            return deque(_decode_seq(data, start, end))
        if t == T_SET:
            items = _decode_seq(data, start, end)
            s = set(items)
            if len(s) != len(items):
                raise CodecError("duplicate set members")
            return s
        if t == T_ZSET:
            return _decode_zset(data, start, end)
    except struct.error as exc:
        raise CodecError(f"malformed value: {exc}") from exc
    raise CodecError(f"unknown value type {t}")


def decode_value(data: bytes | bytearray | memoryview) -> Any:
    """Inverse of :func:`encode_value`; raises :class:`CodecError` on malformed data."""
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise CodecError("empty value encoding")
    return decode_body(data[0], data, 1, len(data))


class EntryDecoder:
    """Incremental decoder of an entry stream: feed bytes, get complete entries.

    ``offset`` is the stream position of the first byte fed (used in error
    messages). ``limit``, if given, is the total stream length: a record claiming
    to extend past it is reported at once instead of waiting for bytes that will
    never come. After the end marker ``done`` is True and any further bytes
    (those after the marker, and later feeds) collect in ``rest``.
    """

    def __init__(self, offset: int = 0, limit: int | None = None) -> None:
        self._buf = bytearray()
        self._base = offset  # stream offset of _buf[0]
        self._need = 0  # don't parse until the buffer holds this many bytes
        self.limit = limit
        self.done = False
        self.rest = bytearray()
        self.count = 0  # entries decoded so far

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet decoded."""
        return self._base

    @property
    def pending(self) -> int:
        """Bytes buffered in an incomplete record."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Entry]:
        if self.done:
            self.rest += data
            return []
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        b = bytes(buf)
        n = len(b)
        out: list[Entry] = []
        append = out.append
        unpack = _HDR.unpack_from
        unpack_ttl = _HDR_TTL.unpack_from
        base = self._base
        limit = self.limit
        pos = 0
        need = 0
        while pos < n:
            op = b[pos]
            if op == OP_ENTRY:
                if n - pos < HDR_SIZE:
                    need = pos + HDR_SIZE
                    break
                _, klen, blen, t = unpack(b, pos)
                at = None
                kstart = pos + HDR_SIZE
            elif op == OP_ENTRY_TTL:
                if n - pos < HDR_TTL_SIZE:
                    need = pos + HDR_TTL_SIZE
                    break
                _, klen, blen, t, at = unpack_ttl(b, pos)
                kstart = pos + HDR_TTL_SIZE
            elif op == OP_END:
                self.done = True
                self.rest += b[pos + 1 :]
                pos += 1
                break
            else:
                raise CodecError(f"unknown record type 0x{op:02x}", base + pos)
            vstart = kstart + klen
            end = vstart + blen
            if limit is not None and base + end > limit:
                raise StreamTruncated(
                    f"record of {end - pos} bytes runs past the end of the stream ({limit} bytes)",
                    base + pos,
                )
            if end > n:
                need = end
                break
            key = b[kstart:vstart]
            if t == T_STRING:
                value = b[vstart:end]
            else:
                try:
                    value = decode_body(t, b, vstart, end)
                except CodecError as exc:
                    raise CodecError(
                        f"bad value for key {key[:64]!r}: {exc.reason}", base + pos
                    ) from None
            append((key, value, at))
            pos = end
        self.count += len(out)
        if self.done:
            buf.clear()
        else:
            del buf[:pos]
        self._base = base + pos
        self._need = need - pos if need else 0
        return out
