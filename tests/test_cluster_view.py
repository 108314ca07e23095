"""One node's view of the topology (datanode.cluster_view): routing lists and the
byte-exact CLUSTER replies, read back with redis-py's own parsers. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis._parsers.helpers import parse_cluster_info, parse_cluster_nodes
from redis._parsers.resp2 import _RESP2Parser
from redis._parsers.resp3 import _RESP3Parser
from redis.cluster import parse_cluster_shards, parse_cluster_slots

from clusterstate.slots import SLOT_COUNT
from clusterstate.topology import (
    Health,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    Topology,
    slot_owners,
)
from datanode.cluster_view import ClusterView
from datanode.errors import CommandError
from tests.test_topology import topologies

IP = "127.0.0.1"
S1, S2, S3, S4 = "d1" * 20, "d2" * 20, "d3" * 20, "d4" * 20
P1, P2, P3, P4 = "a1" * 20, "a2" * 20, "a3" * 20, "a4" * 20
R1, L1 = "b1" * 20, "c1" * 20  # shard 1: online replica, loading replica
R2, F2 = "b2" * 20, "c2" * 20  # shard 2: online (nofailover) replica, failed replica
H3, R3 = "c3" * 20, "b3" * 20  # shard 3: hidden replica, online replica
X = "e0" * 20  # a spare
PORT = {P1: 7001, P2: 7002, P3: 7003, R1: 7004, L1: 7005, R2: 7006, F2: 7007}
PORT |= {H3: 7008, R3: 7009, P4: 7010, X: 7011}


def node(node_id: str, shard: str, role: Role, **kw: Any) -> NodeRecord:
    port = PORT[node_id]
    state = NodeState.ACTIVE if role is Role.PRIMARY else NodeState.STANDBY
    return NodeRecord(
        node_id,
        IP,
        port,
        port + 10000,
        shard=shard,
        role=role,
        **{"state": state, "health": Health.ONLINE, **kw},
    )


def make_topology(**changes: dict[str, Any]) -> Topology:
    """Three shards (shard 1 split around slot 3300, which shard 2 owns), replicas in
    every health, a hidden replica, a fourth shard owning no slots, and a spare.
    ``changes`` maps a node id to field overrides."""
    nodes = [
        node(P1, S1, Role.PRIMARY),
        node(R1, S1, Role.REPLICA),
        node(L1, S1, Role.REPLICA, health=Health.LOADING, state=NodeState.RECOVERING),
        node(P2, S2, Role.PRIMARY),
        node(R2, S2, Role.REPLICA, nofailover=True),
        node(F2, S2, Role.REPLICA, health=Health.FAIL),
        node(P3, S3, Role.PRIMARY),
        node(H3, S3, Role.REPLICA, hidden=True),
        node(R3, S3, Role.REPLICA),
        node(P4, S4, Role.PRIMARY, state=NodeState.MIGRATING),
        node(X, "", Role.NONE, state=NodeState.ONLINE),
    ]
    nodes = [dataclasses.replace(n, **changes.get(n.id, {})) for n in nodes]
    shards = [
        ShardRecord(S1, ((0, 3299), (3301, 5460)), P1, (R1, L1)),
        ShardRecord(S2, ((5461, 10922), (3300, 3300)), P2, (R2, F2), (R2,)),
        ShardRecord(S3, ((10923, 16383),), P3, (H3, R3)),
        ShardRecord(S4, (), P4),
    ]
    return Topology.build(5, shards, nodes)


TOPO = make_topology()


def view_of(node_id: str, topo: Topology | None = TOPO) -> ClusterView:
    return ClusterView.build(topo, node_id, "0.0.0.0", PORT.get(node_id, 6379), 16379)


# --------------------------------------------------------------------------- decoding


class _Buffer:
    """What redis-py's parsers read from, over a bytes object."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readline(self, timeout: object = None) -> bytes:
        end = self.data.index(b"\r\n", self.pos)
        line, self.pos = self.data[self.pos : end], end + 2
        return line

    def read(self, length: int, timeout: object = None) -> bytes:
        out = self.data[self.pos : self.pos + length]
        assert self.data[self.pos + length : self.pos + length + 2] == b"\r\n"
        self.pos += length + 2
        return out

    def get_pos(self) -> int:
        return self.pos

    def rewind(self, pos: int) -> None:
        self.pos = pos

    def purge(self) -> None:
        pass

    def close(self) -> None:
        pass


def decode(raw: bytes, resp3: bool) -> Any:
    """Parse one reply with redis-py's pure-Python parser, check that it is exactly one
    reply, and that hiredis (what redis-py uses when installed) reads the same."""
    parser: Any = _RESP3Parser(65536) if resp3 else _RESP2Parser(65536)
    parser._buffer = buf = _Buffer(raw)
    parser.encoder = Encoder("utf-8", "strict", decode_responses=False)
    value = parser.read_response()
    assert buf.pos == len(raw), "trailing bytes after the reply"
    reader = hiredis.Reader()
    reader.feed(raw)
    assert reader.gets() == value
    assert reader.gets() is False
    return value


# --------------------------------------------------------------------------- expected bytes, by hand


def b(text: str) -> str:
    return f"${len(text.encode())}\r\n{text}\r\n"


def slots_node(node_id: str, resp3: bool) -> str:
    return f"*4\r\n{b(IP)}:{PORT[node_id]}\r\n{b(node_id)}{'%0' if resp3 else '*0'}\r\n"


def slots_entry(start: int, end: int, ids: list[str], resp3: bool) -> str:
    nodes = "".join(slots_node(i, resp3) for i in ids)
    return f"*{2 + len(ids)}\r\n:{start}\r\n:{end}\r\n{nodes}"


def shards_node(node_id: str, role: str, health: str, resp3: bool, offset: int = 0) -> str:
    head = "%7" if resp3 else "*14"
    return (
        f"{head}\r\n{b('id')}{b(node_id)}{b('port')}:{PORT[node_id]}\r\n{b('ip')}{b(IP)}"
        f"{b('endpoint')}{b(IP)}{b('role')}{b(role)}{b('replication-offset')}:{offset}\r\n"
        f"{b('health')}{b(health)}"
    )


def shards_entry(slots: list[int], nodes: list[str], resp3: bool) -> str:
    flat = "".join(f":{s}\r\n" for s in slots)
    return (
        f"{'%2' if resp3 else '*4'}\r\n{b('slots')}*{len(slots)}\r\n{flat}"
        f"{b('nodes')}*{len(nodes)}\r\n{''.join(nodes)}"
    )


def nodes_line(
    node_id: str, flags: str, master: str, link: str = "connected", slots: str = ""
) -> str:
    port = PORT[node_id]
    line = f"{node_id} {IP}:{port}@{port + 10000} {flags} {master} 0 0 5 {link}"
    return line + (f" {slots}" if slots else "")


LINES = {
    P1: nodes_line(P1, "master", "-", slots="0-3299 3301-5460"),
    R1: nodes_line(R1, "slave", P1),
    L1: nodes_line(L1, "slave", P1),
    P2: nodes_line(P2, "master", "-", slots="3300 5461-10922"),
    R2: nodes_line(R2, "slave,nofailover", P2),
    F2: nodes_line(F2, "slave,fail", P2, link="disconnected"),
    P3: nodes_line(P3, "master", "-", slots="10923-16383"),
    H3: nodes_line(H3, "slave", P3),
    R3: nodes_line(R3, "slave", P3),
    P4: nodes_line(P4, "master", "-"),
}
ORDER = [P1, R1, L1, P2, R2, F2, P3, H3, R3, P4]


def myself(line: str) -> str:
    node_id, addr, flags, rest = line.split(" ", 3)
    return f"{node_id} {addr} myself,{flags} {rest.replace('disconnected', 'connected')}"


def nodes_text(me: str, admin: bool) -> str:
    ids = [i for i in ORDER if admin or i != H3]
    return "".join((myself(LINES[i]) if i == me else LINES[i]) + "\n" for i in ids)


# --------------------------------------------------------------------------- routing lists


def test_routing_lists_of_a_primary() -> None:
    v = view_of(P1)
    assert type(v.owner) is list and type(v.moved) is list
    assert len(v.owner) == len(v.moved) == SLOT_COUNT
    s1, s2, s3, _ = TOPO.shards
    assert v.owner[0] is s1 and v.owner[5460] is s1 and v.owner[3301] is s1
    assert v.owner[3300] is s2 and v.owner[10922] is s2 and v.owner[16383] is s3
    assert v.moved[0] == b"127.0.0.1:7001" and v.moved[3300] == b"127.0.0.1:7002"
    assert v.moved[0] is v.moved[5460] is v.moved[3301], "one bytes object per shard"
    assert v.moved[3300] is v.moved[5461]
    assert (v.epoch, v.topology, v.my_id) == (5, TOPO, P1)
    assert v.myself is TOPO.nodes[0] and v.my_shard is s1
    assert v.is_primary and v.ok
    assert v.primary_of_my_shard == b"127.0.0.1:7001"
    assert [i for i, o in enumerate(v.owner) if o is s1] == [
        *range(0, 3300),
        *range(3301, 5461),
    ]


def test_routing_lists_of_a_replica_a_spare_and_no_topology() -> None:
    r = view_of(L1)
    assert not r.is_primary and r.my_shard is TOPO.shards[0] and r.myself is not None
    assert r.primary_of_my_shard == b"127.0.0.1:7001"
    spare = view_of(X)
    assert spare.myself is not None and spare.myself.role is Role.NONE
    assert spare.my_shard is None and not spare.is_primary and spare.primary_of_my_shard is None
    empty = view_of(P2, None)
    assert empty.owner == [None] * SLOT_COUNT and empty.moved == [None] * SLOT_COUNT
    assert (empty.epoch, empty.myself, empty.my_shard, empty.ok, empty.is_primary) == (
        0,
        None,
        None,
        False,
        False,
    )
    assert view_of(P4).is_primary and view_of(P4).ok


def test_routing_lists_are_identical_on_every_node() -> None:
    views = [view_of(i) for i in ORDER + [X]]
    for v in views[1:]:
        assert v.moved == views[0].moved
        assert [o.id if o else None for o in v.owner] == slot_owners(TOPO)


def test_uncovered_slots_make_the_view_not_ok() -> None:
    shards = list(TOPO.shards)
    shards[2] = dataclasses.replace(shards[2], slots=((10923, 16382),))
    v = view_of(P1, Topology.build(5, shards, TOPO.nodes))
    assert not v.ok and v.owner[16383] is None and v.moved[16383] is None


def test_addr_of() -> None:
    v = view_of(P1)
    assert v.addr_of(P4) == b"127.0.0.1:7010"
    assert v.addr_of(H3) == b"127.0.0.1:7008"
    assert v.addr_of(P2) is v.moved[3300]
    assert v.addr_of("f" * 40) is None


# --------------------------------------------------------------------------- CLUSTER SLOTS


@pytest.mark.parametrize("resp3", [False, True])
def test_slots_reply_bytes(resp3: bool) -> None:
    expected = "*5\r\n" + "".join(
        [
            slots_entry(0, 3299, [P1, R1], resp3),  # L1 is loading: not listed
            slots_entry(3300, 3300, [P2, R2], resp3),  # F2 failed: not listed
            slots_entry(3301, 5460, [P1, R1], resp3),
            slots_entry(5461, 10922, [P2, R2], resp3),
            slots_entry(10923, 16383, [P3, R3], resp3),  # H3 hidden: not listed
        ]
    )
    assert view_of(P1).slots_reply(resp3, admin=False) == expected.encode()


def test_slots_reply_admin_shows_hidden_online_replicas_only() -> None:
    raw = view_of(P1).slots_reply(False, admin=True)
    slots = parse_cluster_slots(decode(raw, False))
    assert slots[(10923, 16383)] == {
        "primary": (IP, 7003),
        "replicas": [(IP, 7008), (IP, 7009)],
    }
    assert slots[(0, 3299)]["replicas"] == [(IP, 7004)]
    hidden_loading = make_topology(**{H3: {"health": Health.LOADING}})
    raw = view_of(P1, hidden_loading).slots_reply(False, admin=True)
    assert parse_cluster_slots(decode(raw, False))[(10923, 16383)]["replicas"] == [(IP, 7009)]


@pytest.mark.parametrize("resp3", [False, True])
def test_slots_reply_as_redis_py_reads_it(resp3: bool) -> None:
    raw = view_of(R3).slots_reply(resp3, admin=False)
    slots = parse_cluster_slots(decode(raw, resp3))
    assert list(slots) == [(0, 3299), (3300, 3300), (3301, 5460), (5461, 10922), (10923, 16383)]
    assert slots[(3300, 3300)] == {"primary": (IP, 7002), "replicas": [(IP, 7006)]}
    entry = decode(raw, resp3)[0]
    assert entry[2] == [IP.encode(), 7001, P1.encode(), {} if resp3 else []]


def test_failed_primary_is_still_listed_in_slots() -> None:
    topo = make_topology(**{P2: {"health": Health.FAIL}})
    slots = parse_cluster_slots(decode(view_of(P1, topo).slots_reply(False, False), False))
    assert slots[(5461, 10922)]["primary"] == (IP, 7002)


# --------------------------------------------------------------------------- CLUSTER SHARDS


def expected_shards(resp3: bool, admin: bool, offsets: dict[str, int] | None = None) -> bytes:
    off = offsets or {}

    def n(i: str, role: str, health: str = "online") -> str:
        return shards_node(i, role, health, resp3, off.get(i, 0))

    shard3 = [n(P3, "master")] + ([n(H3, "replica")] if admin else []) + [n(R3, "replica")]
    entries = [
        shards_entry(
            [0, 3299, 3301, 5460],
            [n(P1, "master"), n(R1, "replica"), n(L1, "replica", "loading")],
            resp3,
        ),
        shards_entry(
            [3300, 3300, 5461, 10922],
            [n(P2, "master"), n(R2, "replica"), n(F2, "replica", "fail")],
            resp3,
        ),
        shards_entry([10923, 16383], shard3, resp3),
        shards_entry([], [n(P4, "master")], resp3),
    ]
    return f"*4\r\n{''.join(entries)}".encode()


@pytest.mark.parametrize("resp3", [False, True])
@pytest.mark.parametrize("admin", [False, True])
def test_shards_reply_bytes(resp3: bool, admin: bool) -> None:
    assert view_of(P2).shards_reply(resp3, admin) == expected_shards(resp3, admin)


def test_shards_reply_takes_replication_offsets() -> None:
    v = view_of(P1)
    offsets = {P1: 14, R1: 12, "f" * 40: 3}
    assert v.shards_reply(False, False, offsets) == expected_shards(False, False, offsets)
    assert v.shards_reply(False, False) == expected_shards(False, False), "offsets not cached"


@pytest.mark.parametrize("resp3", [False, True])
def test_shards_reply_as_redis_py_reads_it(resp3: bool) -> None:
    raw = view_of(P1).shards_reply(resp3, False, {R2: 99})
    shards = parse_cluster_shards(decode(raw, resp3))
    assert len(shards) == 4
    if resp3:  # dicts pass through: slots stay flat
        assert shards[1][b"slots"] == [3300, 3300, 5461, 10922]
        nodes = shards[1][b"nodes"]
    else:  # read positionally: x[1] slots, x[3] nodes
        assert shards[1]["slots"] == [(3300, 3300), (5461, 10922)]
        nodes = shards[1]["nodes"]
    assert [list(n) for n in nodes] == [
        [b"id", b"port", b"ip", b"endpoint", b"role", b"replication-offset", b"health"]
    ] * 3
    assert [(n[b"id"], n[b"role"], n[b"health"], n[b"replication-offset"]) for n in nodes] == [
        (P2.encode(), b"master", b"online", 0),
        (R2.encode(), b"replica", b"online", 99),
        (F2.encode(), b"replica", b"fail", 0),
    ]


# --------------------------------------------------------------------------- CLUSTER NODES


@pytest.mark.parametrize("admin", [False, True])
def test_nodes_reply_bytes(admin: bool) -> None:
    text = nodes_text(P1, admin).encode()
    v = view_of(P1)
    assert v.nodes_reply(False, admin) == b"$%d\r\n%b\r\n" % (len(text), text)
    assert v.nodes_reply(True, admin) == b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)


def test_nodes_lines_are_identical_on_every_node_apart_from_myself() -> None:
    for me in ORDER:
        if me == H3:
            continue  # hidden: not a line others show (see the next test)
        raw = view_of(me).nodes_reply(True, admin=False)
        assert decode(raw, True) == nodes_text(me, admin=False).encode(), me


def test_failed_myself_is_connected_and_keeps_its_fail_flag() -> None:
    text = decode(view_of(F2).nodes_reply(False, False), False).decode()
    mine = [line for line in text.splitlines() if "myself" in line]
    assert mine == [f"{F2} {IP}:7007@17007 myself,slave,fail {P2} 0 0 5 connected"]


def test_hidden_and_spare_nodes_show_only_their_own_myself_line() -> None:
    hidden = decode(view_of(H3).nodes_reply(False, False), False).decode()
    assert hidden == nodes_text("", admin=False) + myself(LINES[H3]) + "\n"
    assert decode(view_of(H3).nodes_reply(False, True), False).decode() == nodes_text(H3, True)
    spare = decode(view_of(X).nodes_reply(False, False), False).decode()
    x_line = f"{X} {IP}:7011@17011 myself,master - 0 0 5 connected"
    assert spare == nodes_text("", admin=False) + x_line + "\n"
    assert X not in decode(view_of(P1).nodes_reply(False, True), False).decode()


def test_nodes_reply_as_redis_py_reads_it() -> None:
    nodes = parse_cluster_nodes(decode(view_of(R1).nodes_reply(True, False), True))
    assert len(nodes) == 9
    p1 = nodes[f"{IP}:7001"]
    assert (p1["node_id"], p1["flags"], p1["master_id"], p1["epoch"]) == (P1, "master", "-", "5")
    assert p1["slots"] == [["0", "3299"], ["3301", "5460"]] and p1["connected"]
    assert nodes[f"{IP}:7002"]["slots"] == [["3300"], ["5461", "10922"]]
    assert nodes[f"{IP}:7004"]["flags"] == "myself,slave"
    assert nodes[f"{IP}:7007"]["flags"] == "slave,fail" and not nodes[f"{IP}:7007"]["connected"]
    assert nodes[f"{IP}:7006"]["flags"] == "slave,nofailover"
    assert nodes[f"{IP}:7010"]["slots"] == []


def test_open_slot_markers_only_on_the_myself_line() -> None:
    v = view_of(P1)
    cached = v.nodes_reply(False, False)
    raw = v.nodes_reply(False, False, migrating={100: P2, 7: P4}, importing={3300: P2, 100: P3})
    text = decode(raw, False).decode()
    marks = f"[7->-{P4}] [100->-{P2}] [3300-<-{P2}]"  # slot order; migrating wins
    assert text == nodes_text(P1, False).replace("3301-5460\n", f"3301-5460 {marks}\n", 1)
    parsed = parse_cluster_nodes(text)
    assert parsed[f"{IP}:7001"]["migrations"] == [
        {"slot": "7", "node_id": P4, "state": "migrating"},
        {"slot": "100", "node_id": P2, "state": "migrating"},
        {"slot": "3300", "node_id": P2, "state": "importing"},
    ]
    assert parsed[f"{IP}:7001"]["slots"] == [["0", "3299"], ["3301", "5460"]]
    assert all(not n["migrations"] for a, n in parsed.items() if a != f"{IP}:7001")
    assert v.nodes_reply(False, False) is cached, "markers are not cached"
    importing_only = decode(view_of(P4).nodes_reply(False, False, importing={5: P1}), False)
    assert myself(LINES[P4]) + f" [5-<-{P1}]\n" in importing_only.decode()


def test_redis_cli_agreement_signature_is_the_same_on_every_node() -> None:
    """redis-cli --cluster check: sorted ``id:slot-tokens`` of lines with slots."""

    def signature(raw: bytes) -> list[str]:
        sig = []
        for line in decode(raw, False).decode().splitlines():
            fields = line.split(" ")
            if len(fields) > 8:
                sig.append(f"{fields[0]}:{','.join(fields[8:])}")
        return sorted(sig)

    sigs = {me: signature(view_of(me).nodes_reply(False, False)) for me in ORDER + [X]}
    assert len({tuple(s) for s in sigs.values()}) == 1


# --------------------------------------------------------------------------- CLUSTER REPLICAS


def test_replicas_reply() -> None:
    v = view_of(R2)
    raw = v.replicas_reply(P2, False, False)
    assert raw == f"*2\r\n{b(myself(LINES[R2]))}{b(LINES[F2])}".encode()
    assert v.replicas_reply(P2.encode(), True, False) == raw, "an array in RESP3 too"
    assert decode(v.replicas_reply(P3, False, False), False) == [LINES[R3].encode()]
    assert decode(v.replicas_reply(P3, False, True), False) == [
        LINES[H3].encode(),
        LINES[R3].encode(),
    ]
    assert v.replicas_reply(P4, False, False) == b"*0\r\n"
    parsed = parse_cluster_nodes(decode(raw, False))
    assert set(parsed) == {f"{IP}:7006", f"{IP}:7007"}


@pytest.mark.parametrize(
    ("me", "target", "admin", "message"),
    [
        (P1, R1, False, "ERR The specified node is not a master"),
        (P1, "zzz", False, "ERR Unknown node zzz"),
        (P1, H3, False, f"ERR Unknown node {H3}"),
        (P1, X, True, f"ERR Unknown node {X}"),
        (P1, H3, True, "ERR The specified node is not a master"),
    ],
)
def test_replicas_reply_errors(me: str, target: str, admin: bool, message: str) -> None:
    with pytest.raises(CommandError) as err:
        view_of(me).replicas_reply(target, False, admin)
    assert err.value.message == message


def test_replicas_of_myself_as_a_spare_or_without_topology() -> None:
    assert view_of(X).replicas_reply(X, False, False) == b"*0\r\n"
    assert view_of(P1, None).replicas_reply(P1, False, False) == b"*0\r\n"


# --------------------------------------------------------------------------- CLUSTER INFO, MYID


def info_text(state: str, assigned: int, fail: int, known: int, size: int, epoch: int) -> str:
    fields = [
        ("cluster_state", state),
        ("cluster_slots_assigned", assigned),
        ("cluster_slots_ok", assigned - fail),
        ("cluster_slots_pfail", 0),
        ("cluster_slots_fail", fail),
        ("cluster_known_nodes", known),
        ("cluster_size", size),
        ("cluster_current_epoch", epoch),
        ("cluster_my_epoch", epoch),
        ("cluster_stats_messages_sent", 0),
        ("cluster_stats_messages_received", 0),
        ("total_cluster_links_buffer_limit_exceeded", 0),
    ]
    return "".join(f"{k}:{v}\r\n" for k, v in fields)


def test_info_reply() -> None:
    v = view_of(P1)
    text = info_text("ok", 16384, 0, 9, 3, 5).encode()
    assert v.info_reply(False) == b"$%d\r\n%b\r\n" % (len(text), text)
    assert v.info_reply(True) == b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
    assert (
        decode(v.info_reply(False, admin=True), False)
        == info_text("ok", 16384, 0, 10, 3, 5).encode()
    )
    info = parse_cluster_info(decode(v.info_reply(True), True))
    assert info["cluster_state"] == "ok" and info["cluster_known_nodes"] == "9"


def test_info_reply_counts_failed_and_unassigned_slots() -> None:
    topo = make_topology(**{P2: {"health": Health.FAIL}})
    assert (
        decode(view_of(P1, topo).info_reply(False), False)
        == info_text("ok", 16384, 5463, 9, 3, 5).encode()
    )
    shards = list(TOPO.shards)
    shards[2] = dataclasses.replace(shards[2], slots=())
    partial = Topology.build(6, shards, TOPO.nodes)
    assert (
        decode(view_of(P1, partial).info_reply(False), False)
        == info_text("fail", 10923, 0, 9, 2, 6).encode()
    )


def test_myid_and_myshardid() -> None:
    assert view_of(R1).myid_reply() == f"$40\r\n{R1}\r\n".encode()
    assert view_of(R1).myshardid_reply() == f"$40\r\n{S1}\r\n".encode()
    assert view_of(X).myshardid_reply() == f"$40\r\n{X}\r\n".encode()


# --------------------------------------------------------------------------- edge views


def test_view_without_topology() -> None:
    v = ClusterView.build(None, P1, "10.0.0.1", 7001, 17001)
    line = f"{P1} 10.0.0.1:7001@17001 myself,master - 0 0 0 connected\n"
    assert v.nodes_reply(False, False) == b(line).encode()
    assert v.nodes_reply(True, True) == f"={len(line) + 4}\r\ntxt:{line}\r\n".encode()
    assert v.slots_reply(False, False) == v.shards_reply(True, True) == b"*0\r\n"
    assert decode(v.info_reply(False), False) == info_text("fail", 0, 0, 1, 0, 0).encode()
    assert v.myid_reply() == v.myshardid_reply() == f"$40\r\n{P1}\r\n".encode()


def test_hidden_slotless_primary_hides_its_shard() -> None:
    topo = make_topology(**{P4: {"hidden": True}})
    v = view_of(P1, topo)
    assert len(decode(v.shards_reply(False, False), False)) == 3
    assert len(decode(v.shards_reply(False, True), False)) == 4
    assert P4 not in v.nodes_reply(False, False).decode()
    assert P4 in v.nodes_reply(False, True).decode()
    with pytest.raises(CommandError, match="Unknown node"):
        v.replicas_reply(P4, False, False)


def test_replies_are_cached_per_protocol_and_admin() -> None:
    v = view_of(P1)
    for render in (v.slots_reply, v.shards_reply, v.nodes_reply):
        assert render(False, False) is render(False, False)
        assert render(True, False) is not render(False, False)
        assert render(False, True) is not render(False, False)
    assert v.info_reply(True) is v.info_reply(True)
    assert v.replicas_reply(P2, False, False) is v.replicas_reply(P2, True, False)


def test_view_is_immutable() -> None:
    v = view_of(P1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.ok = False  # type: ignore[misc]


# --------------------------------------------------------------------------- random topologies


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies(), st.booleans(), st.booleans())
def test_random_topologies_render_consistently(topo: Topology, resp3: bool, admin: bool) -> None:
    members = [n for n in topo.nodes if n.role is not Role.NONE]
    views = [ClusterView.build(topo, n.id, n.addr, n.port, n.admin_port) for n in members]
    views.append(ClusterView.build(topo, "f" * 40, "10.9.9.9", 1, 2))  # a stranger
    owners = slot_owners(topo)
    primaries = {s.id: s.primary for s in topo.shards}
    nodes = {n.id: n for n in topo.nodes}
    lines_seen: dict[str, str] = {}
    for v in views:
        # SLOTS: sorted maximal runs covering exactly the owned slots.
        slots = decode(v.slots_reply(resp3, admin), resp3)
        covered: list[int] = []
        for i, entry in enumerate(slots):
            start, end, primary, *replicas = entry
            owner = primaries[owners[start]]  # type: ignore[index]
            assert primary[2] == owner.encode()
            assert {owners[s] for s in range(start, end + 1)} == {owners[start]}
            if i:
                assert start > slots[i - 1][1]
                assert start > slots[i - 1][1] + 1 or slots[i - 1][2] != primary
            for r in replicas:
                rec = nodes[r[2].decode()]
                assert rec.health is Health.ONLINE and (admin or not rec.hidden)
            covered.extend(range(start, end + 1))
        assert covered == [s for s, o in enumerate(owners) if o is not None]
        assert v.ok == (len(covered) == SLOT_COUNT)
        # SHARDS: readable by redis-py, one entry per shown shard.
        shown = [s for s in topo.shards if admin or not nodes[s.primary].hidden]
        raw_shards = decode(v.shards_reply(resp3, admin), resp3)
        # (redis-py's parser cannot read an empty SHARDS reply: every shard hidden.)
        shards = parse_cluster_shards(raw_shards) if shown else raw_shards
        assert len(shards) == len(shown)
        # NODES: each node's line is the same on every view where it is not myself.
        text = decode(v.nodes_reply(resp3, admin), resp3).decode()
        assert text.endswith("\n")
        parse_cluster_nodes(text)
        for line in text.splitlines():
            if " myself," in line:
                assert line.split(" ")[0] == v.my_id
                continue
            node_id = line.split(" ")[0]
            assert lines_seen.setdefault(node_id, line) == line
