"""Home slots: the keyspace counts the keys held outside the slots a cluster-mode
node serves without routing, and the connection's fast path takes a key's presence
as proof of its slot only while that count is 0. Keys kept in a slot that is
migrating, importing or given away must still be routed (MOVED, TRYAGAIN, ASK)."""

from __future__ import annotations

import asyncio
from binascii import crc_hqx
from pathlib import Path
from typing import Any

import hiredis
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterstate.slots import SLOT_COUNT, key_slot
from clusterstate.topology import Topology
from datanode.config import Settings
from datanode.connection import Connection
from datanode.keyspace import Keyspace
from datanode.server import DataNode
from datanode.transfer import transfers_of

SPLIT = 8192  # shard A (this node) owns [0, SPLIT), shard B [SPLIT, 16384)
SHARD_A = "a1" * 20
SHARD_B = "b2" * 20
PEER = "cc" * 20


# ---------------------------------------------------------------- the keyspace count

KEYS = [b"k%d" % i for i in range(12)] + [b"{t}a", b"{t}b", b"x{t}y"]
SLOTS = sorted({key_slot(k) for k in KEYS})


def away(ks: Keyspace) -> int:
    """The keys outside the home slots, counted the slow way."""
    return sum(1 for k in ks.data if not ks.home[key_slot(k)])


def check(ks: Keyspace) -> None:
    assert ks.away == away(ks)
    if ks.away:
        assert not ks.home_keys
    else:
        assert ks.home_keys is ks.data


def flags(home: set[int]) -> list[bool]:
    return [s in home for s in range(SLOT_COUNT)]


op = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("pop"), st.sampled_from(KEYS)),
    st.tuples(st.just("expire"), st.sampled_from(KEYS)),
    st.tuples(st.just("tick"), st.just(b"")),
    st.tuples(st.just("drop"), st.sampled_from(KEYS)),
    st.tuples(st.just("flush"), st.just(b"")),
    st.tuples(st.just("adopt"), st.just(b"")),
    st.tuples(st.just("home"), st.sets(st.sampled_from(SLOTS)).map(lambda s: tuple(sorted(s)))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=40))
def test_away_count_follows_every_change(ops: list[tuple[str, Any]]) -> None:
    now = [1000]
    ks = Keyspace(clock=lambda: now[0])
    ks.set_home(flags(set(SLOTS[::2])))
    check(ks)
    for name, arg in ops:
        if name == "set":
            ks.set(arg, b"v")
        elif name == "delete":
            ks.delete(arg)
        elif name == "pop":
            ks.pop(arg)
        elif name == "expire":
            if ks.exists(arg):
                ks.set_expire(arg, now[0] + 5)
        elif name == "tick":
            now[0] += 10
            ks.active_expire_cycle()
        elif name == "drop":
            ks.drop_slot_batch(key_slot(arg), 2)
        elif name == "flush":
            ks.flush()
        elif name == "adopt":
            other = Keyspace(clock=lambda: now[0])
            for k in KEYS[::3]:
                other.set(k, b"w")
            ks.adopt(other)
        else:
            ks.set_home(flags(set(arg)))
        check(ks)


# ---------------------------------------------------------------- the fast path


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


def topology(epoch: int, b_extra: tuple[int, ...], me: str) -> Topology:
    """A owns [0, SPLIT) but ``b_extra``; B owns [SPLIT, 16384) and ``b_extra``."""
    a_slots, start = [], 0
    for s in sorted(b_extra):
        if start < s:
            a_slots.append([start, s - 1])
        start = s + 1
    a_slots.append([start, SPLIT - 1])

    def rec(nid: str, port: int, shard: str) -> dict[str, Any]:
        return {"id": nid, "addr": "127.0.0.1", "port": port, "admin_port": port + 1,
                "shard": shard, "role": "primary", "state": "ACTIVE", "health": "online"}

    return Topology.from_dict({
        "epoch": epoch,
        "shards": [
            {"id": SHARD_A, "slots": a_slots, "primary": me},
            {"id": SHARD_B, "slots": [[s, s] for s in b_extra] + [[SPLIT, 16383]],
             "primary": PEER},
        ],
        "nodes": [rec(me, 7000, SHARD_A), rec(PEER, 7002, SHARD_B)],
    })


def run(conn: Connection, *cmds: list[bytes]) -> list[Any]:
    """Run ``cmds`` as one read batch; the parsed replies."""
    out = conn.transport.data  # type: ignore[union-attr]
    out.clear()
    conn.data_received(b"".join(
        b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%b\r\n" % (len(x), x) for x in a) for a in cmds
    ))
    reader = hiredis.Reader()
    reader.feed(bytes(out))
    replies = []
    while (r := reader.gets()) is not False:
        replies.append(str(r) if isinstance(r, hiredis.ReplyError) else r)
    return replies


def first_key(want: Any) -> bytes:
    i = 0
    while not want(b"key:%d" % i):
        i += 1
    return b"key:%d" % i


async def test_present_keys_outside_the_home_slots_are_still_routed(tmp_path: Path) -> None:
    node = DataNode(Settings(dir=str(tmp_path / "node"), cluster_enabled=True))
    node.set_topology(topology(1, (), node.node_id))
    conn = Connection(node)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    ks = node.ks

    key = first_key(lambda k: key_slot(k) < SPLIT)
    other = first_key(lambda k: key_slot(k) < SPLIT and key_slot(k) != key_slot(key))
    slot = key_slot(key)
    # A hash-tagged key: its tag's slot is ``slot``, its raw CRC16 slot is B's.
    tagged = first_key(lambda k: crc_hqx(b"%s{%s}" % (k, key), 0) & 16383 >= SPLIT)
    tagged = b"%s{%s}" % (tagged, key)
    assert key_slot(tagged) == slot
    missing = b"gone{%s}" % key

    assert run(conn, [b"SET", key, b"1"], [b"SET", other, b"2"], [b"SET", tagged, b"3"]) == [
        b"OK", b"OK", b"OK"]
    assert ks.away == 0 and ks.home_keys is ks.data
    assert run(conn, [b"GET", key], [b"GET", tagged]) == [b"1", b"3"]

    # Migrating away: reads of present keys are served, absent keys ASK, writes wait.
    node.migrating[slot] = PEER
    node.update_gates()
    assert ks.away == 2 and not ks.home_keys
    assert run(conn, [b"GET", key], [b"GET", tagged], [b"GET", missing],
               [b"SET", other, b"y"]) == [b"1", b"3", f"ASK {slot} 127.0.0.1:7002", b"OK"]
    assert run(conn, [b"SET", tagged, b"x"], [b"GET", other]) == [] and conn.blocked  # held
    del node.migrating[slot]
    transfers_of(node).window_end([slot])  # writes resume here (the move was aborted)
    node.update_gates()
    await asyncio.sleep(0)
    assert not conn.blocked and conn.transport.data == b"+OK\r\n$1\r\ny\r\n"  # type: ignore[union-attr]
    assert ks.away == 0 and ks.home_keys is ks.data
    assert run(conn, [b"GET", tagged]) == [b"x"]

    # Given away while its keys are still held (dropped in the background): MOVED.
    node.set_topology(topology(2, (slot,), node.node_id))
    assert ks.away == 2
    moved = f"MOVED {slot} 127.0.0.1:7002"
    assert run(conn, [b"GET", key], [b"GET", tagged], [b"SET", tagged, b"z"],
               [b"GET", other]) == [moved, moved, moved, b"y"]
    for _ in range(100):
        if not ks.slots[slot]:
            break
        await asyncio.sleep(0)
    assert ks.away == 0 and ks.home_keys is ks.data
    assert run(conn, [b"GET", key], [b"GET", other]) == [moved, b"y"]
