"""Replication building blocks without processes: stream encoding and markers, the
backlog, the keyspace digest, the full sync format, canonical effects."""

from __future__ import annotations

import socket
import threading
from collections import deque

import hiredis
import pytest

from datanode.keyspace import Keyspace
from datanode.replication.backlog import SEAL, Backlog
from datanode.replication.digest import keyspace_digest
from datanode.replication.fullsync import SyncError, SyncLoader, write_fullsync
from datanode.replication.stream import canonical, encode, mark
from datanode.zset import ZSet


def parse_all(data: bytes) -> list[list[bytes]]:
    r = hiredis.Reader()
    r.feed(data)
    out = []
    while (item := r.gets()) is not False:
        out.append(item)
    return out


@pytest.mark.parametrize("argv", [
    [b"PING"], [b"DEL", b"k"], [b"SET", b"k", b"v"], [b"HSET", b"h", b"f", b"v"],
    [b"MSET", b"a", b"", b"b", b"\r\n" * 3, b"c", b"x" * 70_000],
])
def test_encode_is_canonical_resp(argv: list[bytes]) -> None:
    data = encode(argv)
    assert parse_all(data) == [argv]
    expected = b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in argv)
    assert data == expected


@pytest.mark.parametrize("offset", [0, 1, 7, 54, 55, 999, 99_950, 10**12 - 60, 10**15])
def test_mark_names_the_offset_after_itself(offset: int) -> None:
    m = mark(offset)
    [argv] = parse_all(m)
    assert argv[:2] == [b"REPLCONF", b"MARK"]
    assert int(argv[2]) == offset + len(m)


def test_backlog_window_and_trimming() -> None:
    b = Backlog(200_000, start=500)
    assert b.holds(500) and b.read_from(500) == b"" and not b.holds(499)
    stream = b""
    for i in range(120):  # 1.2 MB in pieces of several sizes, through a 200 kB window
        piece = bytes([65 + i % 26]) * (1 + (i * 7919) % 20_000)
        b.append(piece)
        stream += piece
        assert b.end == 500 + len(stream)
        assert b.read_from(b.start) == stream[b.start - 500 :]
    assert 200_000 <= b.histlen < 200_000 + SEAL + 20_000  # trimmed, by whole chunks
    assert b.read_from(b.start - 1) is None and b.read_from(b.end + 1) is None
    assert b.read_from(b.end - 10) == stream[-10:] and b.read_from(b.end) == b""
    b.resize(10)
    assert b.histlen < SEAL + 10 and b.read_from(b.start) == stream[b.start - 500 :]
    b.reset(5000)
    assert (b.start, b.end, b.histlen) == (5000, 5000, 0)
    b.append(b"xyz")
    assert b.read_from(5001) == b"yz"


def _fill(ks: Keyspace, order: int) -> None:
    items: list[tuple[bytes, object, int | None]] = [
        (b"s", b"string", None),
        (b"l", deque([b"1", b"2", b"3"]), 2_000_000_000_000),
        (b"set", {b"a", b"b", b"c"}, None),
        (b"h", {b"f1": b"v1", b"f2": b"v2"} if order else {b"f2": b"v2", b"f1": b"v1"}, None),
        (b"z", ZSet(), None),
    ]
    for key, value, at in (items if order else reversed(items)):
        ks.set(key, value)
        if at:
            ks.set_expire(key, at)
    ks.get(b"z").add(b"m", 1.5)


def test_digest_ignores_order_but_sees_values_and_ttls() -> None:
    a, b = Keyspace(), Keyspace()
    _fill(a, 1)
    _fill(b, 0)
    assert keyspace_digest(a) == keyspace_digest(b)
    assert keyspace_digest(Keyspace()) == ("0" * 32, 0)
    b.set_expire(b"s", 3_000_000_000_000)
    assert keyspace_digest(a) != keyspace_digest(b)
    b.persist(b"s")
    assert keyspace_digest(a) == keyspace_digest(b)
    b.get(b"set").add(b"d")
    assert keyspace_digest(a)[0] != keyspace_digest(b)[0]


def test_full_sync_stream_round_trip_and_checks() -> None:
    src = Keyspace()
    _fill(src, 1)
    for i in range(5000):
        src.set(b"key:%d" % i, b"v" * (i % 50))
    src.set(b"gone", b"x")
    src.set_expire(b"gone", 1)  # expired at sync time: not sent
    left, right = socket.socketpair()
    left.setblocking(False)
    result: dict[str, object] = {}

    def writer() -> None:
        result["sent"] = write_fullsync(left.fileno(), src, src.clock(), b"+FULLRESYNC x 0\r\n", 10)
        left.close()

    t = threading.Thread(target=writer)
    t.start()
    data = b""
    while chunk := right.recv(1 << 16):
        data += chunk
    t.join()
    right.close()
    keys, size = result["sent"]  # type: ignore[misc]
    assert keys == 5005 and size == len(data)
    head, _, body = data.partition(b"\r\n")
    header, _, body = body.partition(b"\r\n")
    assert head == b"+FULLRESYNC x 0" and header == b"SKSYNC1 5005"
    loader = SyncLoader(5005, src.clock, 0, "noeviction")
    rest = None
    for i in range(0, len(body), 777):  # arbitrary cuts, records split across feeds
        assert rest is None
        rest = loader.feed(body[i : i + 777])
    assert rest == b""
    assert loader.loaded == 5005 and loader.progress() == 1.0
    src.delete(b"gone")
    assert keyspace_digest(loader.ks) == keyspace_digest(src)
    # Stream bytes after the trailer come back; a corrupt body is caught by the checksum.
    loader = SyncLoader(5005, src.clock, 0, "noeviction")
    assert loader.feed(body + b"*1\r\n$4\r\nPING\r\n") == b"*1\r\n$4\r\nPING\r\n"
    bad = bytearray(body)
    bad[-10] ^= 0xFF
    with pytest.raises(SyncError):
        loader = SyncLoader(5005, src.clock, 0, "noeviction")
        loader.feed(bytes(bad))


def test_canonical_effects_use_absolute_deadlines() -> None:
    ks = Keyspace(clock=lambda: 1_000_000)
    ks.set(b"k", b"v")
    ks.set_expire(b"k", 1_010_000)
    assert canonical(ks, [b"SET", b"k", b"v", b"EX", b"10"]) == [
        [b"SET", b"k", b"v", b"PXAT", b"1010000"]
    ]
    assert canonical(ks, [b"set", b"k", b"v", b"px", b"10000", b"GET"]) == [
        [b"set", b"k", b"v", b"PXAT", b"1010000", b"GET"]
    ]
    assert canonical(ks, [b"SetEx", b"k", b"10", b"v"]) == [[b"SET", b"k", b"v", b"PXAT", b"1010000"]]
    assert canonical(ks, [b"GETEX", b"k", b"EX", b"10"]) == [[b"PEXPIREAT", b"k", b"1010000"]]
    assert canonical(ks, [b"GETEX", b"k"]) == []
    assert canonical(ks, [b"GETEX", b"nokey", b"PERSIST"]) == [[b"DEL", b"nokey"]]
    ks.persist(b"k")
    assert canonical(ks, [b"GETEX", b"k", b"PERSIST"]) == [[b"PERSIST", b"k"]]
    assert canonical(ks, [b"SET", b"k", b"v"]) == [[b"SET", b"k", b"v"]]
    assert canonical(ks, [b"INCR", b"n"]) == [[b"INCR", b"n"]]


def test_full_sync_writer_fails_when_the_replica_is_gone() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    right.close()
    ks = Keyspace()
    ks.set(b"k", b"v" * 100_000)
    with pytest.raises(OSError):
        write_fullsync(left.fileno(), ks, ks.clock(), b"", 1)
    left.close()
