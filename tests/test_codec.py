"""Value and entry-stream serialization (datanode.codec): pure round trips."""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datanode.codec import (
    END,
    CodecError,
    EntryDecoder,
    decode_value,
    encode_dicts,
    encode_entry,
    encode_stream,
    encode_value,
)
from datanode.zset import ZSet


def zset(pairs: dict[bytes, float]) -> ZSet:
    z = ZSet()
    for m, s in pairs.items():
        z.add(m, s)
    return z


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (a ZSet compared by scores and order)."""
    if type(a) is not type(b):
        return False
    if type(a) is ZSet:
        return bool(a.scores == b.scores and a.order == b.order)
    return bool(a == b)


BINARY = bytes(range(256))
VALUES: list[Any] = [
    b"",
    b"hello",
    BINARY,
    b"\r\n\0\xff" * 1000,
    {},
    {b"": b""},
    {b"f": b"v", b"g": b"", b"": b"x", BINARY: BINARY},
    deque(),
    deque([b"a", b"", b"a", BINARY]),
    set(),
    {b"", b"x", BINARY},
    ZSet(),
    zset({b"a": 1.5, b"b": -2.0, b"": 0.0}),
    zset({b"lo": float("-inf"), b"hi": float("inf"), b"z": 1e308, b"y": -0.0, b"w": 5e-324}),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_round_trip(value: Any) -> None:
    assert same(decode_value(encode_value(value)), value)


def test_decode_value_accepts_memoryview_and_bytearray() -> None:
    data = encode_value({b"a": b"b"})
    assert decode_value(memoryview(data)) == {b"a": b"b"}
    assert decode_value(bytearray(data)) == {b"a": b"b"}


def test_large_values_round_trip() -> None:
    rnd = random.Random(7)
    big = rnd.randbytes(5 * 1024 * 1024)
    assert decode_value(encode_value(big)) == big
    h = {b"field:%d" % i: rnd.randbytes(i % 50) for i in range(100_000)}
    assert decode_value(encode_value(h)) == h
    lst = deque(rnd.randbytes(i % 20) for i in range(100_000))
    assert decode_value(encode_value(lst)) == lst
    s = {b"m%d" % i for i in range(100_000)}
    assert decode_value(encode_value(s)) == s
    z = ZSet()
    for i in range(50_000):
        z.add(b"m%d" % i, rnd.uniform(-1e6, 1e6))
    assert same(decode_value(encode_value(z)), z)


def test_zset_order_is_rebuilt_sorted() -> None:
    # Ties on score sort by member, as ZSet keeps them.
    z = zset({b"b": 1.0, b"a": 1.0, b"c": float("-inf")})
    out = decode_value(encode_value(z))
    assert out.order == [(float("-inf"), b"c"), (1.0, b"a"), (1.0, b"b")]
    assert out.rank(b"b") == 2


def test_string_encoding_is_type_byte_plus_raw_bytes() -> None:
    assert encode_value(b"abc") == b"\x00abc"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x09",  # unknown type
        b"\x04\x01\x00",  # count cut short
        b"\x01\x02\x00\x00\x00\x01\x00\x00\x00",  # lengths cut short
        b"\x01\x01\x00\x00\x00\x05\x00\x00\x00abc",  # element shorter than its length
        b"\x01\x01\x00\x00\x00\x01\x00\x00\x00abc",  # trailing bytes
        b"\x01\x00\x00\x00\x00x",  # trailing bytes after empty list
        b"\x02\x02\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00aa",  # duplicate set member
        b"\x04\x02\x00\x00\x00" + struct.pack("<4I", 1, 1, 1, 1) + b"ffvw",  # duplicate field
    ],
)
def test_malformed_values_raise(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_value(data)


def test_nan_score_and_duplicate_member_rejected() -> None:
    nan = b"\x03" + struct.pack("<Id", 1, math.nan) + struct.pack("<I", 1) + b"a"
    with pytest.raises(CodecError, match="NaN"):
        decode_value(nan)
    dup = b"\x03" + struct.pack("<I2d2I", 2, 1.0, 2.0, 1, 1) + b"aa"
    with pytest.raises(CodecError, match="duplicate"):
        decode_value(dup)


def test_unencodable_type() -> None:
    with pytest.raises(CodecError):
        encode_value([b"a list is not a value type"])


# --------------------------------------------------------------------------- entry stream


ENTRIES: list[tuple[bytes, Any, int | None]] = [
    (b"k%d" % i, v, None if i % 2 else 1_700_000_000_000 + i) for i, v in enumerate(VALUES)
] + [(b"", b"empty key", None), (BINARY, b"binary key", 2**62)]


def decode_all(blob: bytes, step: int) -> tuple[list[Any], EntryDecoder]:
    dec = EntryDecoder()
    out: list[Any] = []
    for i in range(0, len(blob), step):
        out += dec.feed(blob[i : i + step])
    return out, dec


def assert_entries(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for (k1, v1, a1), (k2, v2, a2) in zip(got, want, strict=True):
        assert k1 == k2 and a1 == a2 and same(v1, v2), k2


@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
def test_entry_stream_any_split(step: int) -> None:
    blob = b"".join(encode_entry(k, v, at) for k, v, at in ENTRIES) + END + b"trailer"
    got, dec = decode_all(blob, step)
    assert_entries(got, ENTRIES)
    assert dec.done and bytes(dec.rest) == b"trailer"
    assert dec.count == len(ENTRIES)


def test_encode_stream_matches_encode_entry_and_chunks() -> None:
    blob = b"".join(encode_entry(k, v, at) for k, v, at in ENTRIES) + END
    chunks = list(encode_stream(ENTRIES, chunk_size=100))
    assert len(chunks) > 1
    assert b"".join(chunks) == blob
    assert b"".join(encode_stream(ENTRIES, end=False)) == blob[:-1]


def test_encode_dicts_skips_expired_and_counts() -> None:
    d1 = {b"a": b"1", b"b": deque([b"x"])}
    d2 = {b"c": b"3", b"gone": b"4"}
    expires = {b"b": 2000, b"gone": 500}
    tally = [0]
    blob = b"".join(encode_dicts([d1, {}, d2], expires, now=1000, chunk_size=8, tally=tally))
    got, dec = decode_all(blob, 5)
    assert tally == [3] and dec.done
    assert [(k, at) for k, _, at in got] == [(b"a", None), (b"b", 2000), (b"c", None)]
    assert got[1][1] == deque([b"x"])


def test_decoder_waits_for_a_big_record() -> None:
    big = b"v" * (3 << 20)
    entry = encode_entry(b"big", big)
    dec = EntryDecoder()
    for i in range(0, len(entry) - 1, 65536):
        assert dec.feed(entry[i : min(i + 65536, len(entry) - 1)]) == []
    assert dec.pending == len(entry) - 1 and dec.offset == 0
    assert dec.feed(entry[-1:] + END) == [(b"big", big, None)]
    assert dec.done and dec.offset == len(entry) + 1  # just past the end marker


def test_decoder_errors_carry_offsets() -> None:
    good = encode_entry(b"a", b"1")
    dec = EntryDecoder(offset=100)
    with pytest.raises(CodecError) as err:
        dec.feed(good + b"\x07junk")
    assert err.value.offset == 100 + len(good)
    assert "unknown record type 0x07" in str(err.value)

    bad_value = encode_entry(b"h", {b"f": b"v"})[:-3] + b"\xff\xff\xff"
    with pytest.raises(CodecError, match="bad value for key b'h'"):
        EntryDecoder().feed(bad_value)


def test_decoder_limit_reports_overlong_records_at_once() -> None:
    blob = encode_entry(b"key", b"x" * 1000)
    dec = EntryDecoder(offset=10, limit=10 + 500)
    with pytest.raises(CodecError, match="runs past the end of the stream") as err:
        dec.feed(blob[:100])
    assert err.value.offset == 10


# --------------------------------------------------------------------------- properties

blobs = st.binary(max_size=64)
scores = st.floats(allow_nan=False)
values = st.one_of(
    blobs,
    st.dictionaries(blobs, blobs, max_size=20),
    st.lists(blobs, max_size=20).map(deque),
    st.sets(blobs, max_size=20),
    st.dictionaries(blobs, scores, max_size=20).map(zset),
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_value_round_trip(value: Any) -> None:
    assert same(decode_value(encode_value(value)), value)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(blobs, values, st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        max_size=15,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_property_stream_round_trip(entries: list[Any], step: int) -> None:
    blob = b"".join(encode_stream(entries, chunk_size=64))
    got, dec = decode_all(blob, step)
    assert dec.done and not dec.rest
    assert_entries(got, entries)


def test_big_bodies_are_yielded_uncopied_and_streams_agree() -> None:
    big = b"B" * 5000
    d = {b"a": b"small", b"big": big, b"h": {b"f": b"v" * 6000}, b"z": b"tail"}
    chunks = list(encode_dicts([d], chunk_size=1000))
    assert any(c is big for c in chunks)
    items = [(k, v, None) for k, v in d.items()]
    assert b"".join(chunks) == b"".join(encode_stream(items, chunk_size=1000))
    assert any(c is big for c in encode_stream(items, chunk_size=1000))
    got, dec = decode_all(b"".join(chunks), 333)
    assert_entries(got, items)


def test_array_and_struct_length_packing_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    import datanode.codec as codec

    values = [
        {b"f%d" % i: b"v" * (i % 7) for i in range(300)},
        {b"m%d" % i for i in range(300)},
        deque(b"x" * (i % 5) for i in range(300)),
        zset({b"m%d" % i: float(i % 10) - 4.5 for i in range(300)}),
    ]
    by_struct = [encode_value(v) for v in values]
    monkeypatch.setattr(codec, "_ARRAY_FROM", 1)
    by_array = [encode_value(v) for v in values]
    assert by_array == by_struct
    for v, data in zip(values, by_array, strict=True):
        assert same(decode_value(data), v)
