"""The primary's per-write replication path without processes: what the fast path
(plain 3-argument writes) and the general path put in the stream is the canonical
encoding of the effects, in order; offsets read between flushes count what is
pending; a replica fed the stream in one large read or in odd pieces applies it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hiredis

from datanode.config import Settings
from datanode.connection import Connection
from datanode.replication.backlog import Backlog
from datanode.replication.primary import FollowerState
from datanode.replication.replica import FEED, LinkState, ReplicaLink
from datanode.replication.stream import canonical, encode, encode_into
from datanode.server import DataNode


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def parse_all(data: bytes | bytearray) -> list[list[bytes]]:
    r = hiredis.Reader()
    r.feed(bytes(data))
    out = []
    while (item := r.gets()) is not False:
        out.append(item)
    return out


def commands(stream: bytes | bytearray) -> list[list[bytes]]:
    """The stream's commands without its end-of-chunk markers."""
    return [a for a in parse_all(stream) if a[:2] != [b"REPLCONF", b"MARK"]]


def node_with_replica(tmp_path: Path) -> tuple[DataNode, Connection, FakeTransport]:
    node = DataNode(Settings(dir=str(tmp_path / "node"), snapshot_interval=0))
    node.replication.ensure_backlog()
    client = Connection(node)
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    link = Connection(node)
    out = FakeTransport()
    link.connection_made(out)  # type: ignore[arg-type]
    primary = node.repl
    f = primary.follower(link)
    f.state = FollowerState.ONLINE
    primary.online.append(f)
    return node, client, out


WRITES: list[list[bytes]] = [
    [b"SET", b"k1", b"v1"],
    [b"set", b"k2", b""],
    [b"SeT", b"k3", b"mixed case"],
    [b"SET", b"k" * 300, b"long key"],
    [b"SET", b"k4", b"v" * 5000],
    [b"SET", b"k5", b"\r\n$3\r\n*1"],
    [b"SET", b"k6", b"v", b"EX", b"100"],
    [b"HSET", b"h", b"f", b"v"],
    [b"HSET", b"h", b"g", b"w"],
    [b"INCR", b"n"],
    [b"RPUSH", b"l", b"a"],
    [b"SETEX", b"k7", b"100", b"v"],
    [b"GETEX", b"k1", b"PERSIST"],
    [b"DEL", b"k2", b"nope"],
    [b"SET", b"k1", b"again"],
]


async def test_stream_is_the_canonical_effects_in_order(tmp_path: Path) -> None:
    node, client, out = node_with_replica(tmp_path)
    repl = node.replication
    start = repl.offset
    expected: list[list[bytes]] = []
    for rnd in range(2):  # the second round finds the fast path's caches filled
        for argv in WRITES:
            client.data_received(encode(argv))
            expected += canonical(node.ks, argv)  # from the keyspace right after it ran
        # an offset read before the flush counts what is pending
        assert repl.offset - start == sum(len(encode(a)) for a in expected)
        node.repl.flush_now()
        assert commands(out.data) == expected, rnd
        backlog = repl.backlog
        assert backlog is not None
        assert repl.offset == backlog.end == start + len(out.data)
        assert backlog.read_from(start) == bytes(out.data)
        out.data.clear()
        start = repl.offset
        expected = []


async def test_transactions_and_acknowledged_writes_keep_their_shape(tmp_path: Path) -> None:
    node, client, out = node_with_replica(tmp_path)
    primary = node.repl
    client.data_received(b"".join(encode(a) for a in (
        [b"MULTI"], [b"SET", b"a", b"1"], [b"SET", b"b", b"2", b"PX", b"100000"], [b"EXEC"],
        [b"SET", b"c", b"3"],
    )))
    primary.flush_now()
    got = commands(out.data)
    assert got[0] == [b"MULTI"] and got[3] == [b"EXEC"] and got[4] == [b"SET", b"c", b"3"]
    assert got[1] == [b"SET", b"a", b"1"] and got[2][3] == b"PXAT"
    out.data.clear()
    # with min_replicas_to_ack the write waits for the replica's acknowledgement
    primary.set_min_acks(1, 5.0)
    try:
        client.data_received(encode([b"SET", b"d", b"4"]))
        assert client.blocked
        await asyncio.sleep(0)  # the flush (with a GETACK) runs at the end of the iteration
        got = parse_all(out.data)
        assert [b"SET", b"d", b"4"] in got and [b"REPLCONF", b"GETACK", b"*"] in got
        assert primary._holds[0].offset < node.replication.offset  # before its marker
        link = next(iter(primary.followers.values())).conn
        primary.on_ack(link, node.replication.offset)
        assert not client.blocked
    finally:
        primary.set_min_acks(0, None)


async def test_replica_applies_large_reads_and_odd_pieces(tmp_path: Path) -> None:
    source, client, out = node_with_replica(tmp_path / "p")
    for i in range(3000):
        client.data_received(encode([b"SET", b"key:%d" % i, b"v%d" % i]))
        if i % 700 == 0:
            source.repl.flush_now()
    source.repl.flush_now()
    stream = bytes(out.data)
    assert len(stream) > 4 * FEED
    for pieces in ([stream], [stream[i : i + 997] for i in range(0, len(stream), 997)]):
        node = DataNode(Settings(dir=str(tmp_path / f"r{len(pieces)}"), snapshot_interval=0))
        repl = node.replication
        repl.backlog = Backlog(repl.backlog_size, 0)
        link = ReplicaLink(repl, "127.0.0.1", 1)
        link.state = LinkState.CONNECTED
        for piece in pieces:
            link._process(piece)
        assert repl.offset == len(stream) and link.unapplied == 0
        assert node.ks.data == source.ks.data
        assert repl.backlog is not None and repl.backlog.read_from(0) == stream


def test_encode_into_matches_encode() -> None:
    from datanode.replication.stream import MID, NUM, head3

    for argv in ([b"PING"], [b"SET", b"k", b"v"], [b"HSET", b"h", b"f" * 2000, b""],
                 [b"MSET", *([b"a", b"\r\n"] * 40)], [b"SET", b"k" * 1023, b"v" * 1024]):
        parts: list[bytes] = []
        encode_into(parts, argv)
        assert b"".join(parts) == encode(argv)
    a, b, c = b"SET", b"key", b"x" * 1000
    assert head3(a) + NUM[len(b)] + b + MID[len(c)] + c + b"\r\n" == encode([a, b, c])
