"""The served-view model (clusterstate.topology): JSON codec, validation, helpers. Pure."""

from __future__ import annotations

import copy
import dataclasses
import doctest
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clusterstate.topology as topology_module
from clusterstate.slots import SLOT_COUNT
from clusterstate.topology import (
    Health,
    MigrationRecord,
    MigrationState,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    Topology,
    TopologyError,
    new_id,
    node_by_id,
    parse_ranges,
    shard_by_id,
    slot_owners,
    slot_ranges,
)

S1, S2 = "5a" * 20, "5b" * 20
N1, N2, N3 = "a1" * 20, "a2" * 20, "a3" * 20

# DESIGN.md §1's document, with its placeholders filled in (and a second shard, so
# the migration has somewhere to go).
DESIGN_DOC = f"""
{{"epoch": 7,
 "shards": [{{"id": "{S1}", "slots": [[0, 5460]], "primary": "{N1}",
             "replicas": ["{N2}"], "sync_replicas": []}},
            {{"id": "{S2}", "slots": [[5461, 16383]], "primary": "{N3}",
             "replicas": [], "sync_replicas": []}}],
 "nodes": [{{"id": "{N1}", "addr": "127.0.0.1", "port": 7000, "admin_port": 17000,
            "zone": "", "shard": "{S1}", "role": "primary", "state": "ACTIVE",
            "health": "online", "hidden": false, "nofailover": false, "priority": 0,
            "replica_id": 123}},
           {{"id": "{N2}", "addr": "127.0.0.1", "port": 7001, "admin_port": 17001,
            "zone": "z2", "shard": "{S1}", "role": "replica", "state": "RECOVERING",
            "health": "loading", "hidden": true, "nofailover": true, "priority": 5,
            "replica_id": 18446744073709551615}},
           {{"id": "{N3}", "addr": "127.0.0.1", "port": 7002, "admin_port": 17002,
            "zone": "", "shard": "{S2}", "role": "primary", "state": "ACTIVE",
            "health": "online", "hidden": false, "nofailover": false, "priority": 0,
            "replica_id": 7}}],
 "migrations": [{{"id": "m-1", "slots": [[100, 200]], "from_shard": "{S1}",
                 "to_shard": "{S2}", "state": "RUNNING"}}]}}
"""


def design_dict() -> dict[str, Any]:
    return orjson.loads(DESIGN_DOC)  # type: ignore[no-any-return]


def check_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=re.escape(message)):
        Topology.from_dict(doc)


# --------------------------------------------------------------------------- JSON codec


def test_design_document_round_trips_byte_for_byte() -> None:
    topo = Topology.from_json(DESIGN_DOC)
    assert topo.to_json() == orjson.dumps(design_dict())
    assert Topology.from_json(topo.to_json()) == topo
    assert Topology.from_json(DESIGN_DOC.encode()) == topo


def test_design_document_fields_are_typed() -> None:
    topo = Topology.from_json(DESIGN_DOC)
    assert topo.epoch == 7
    shard = topo.shards[0]
    assert shard == ShardRecord(S1, ((0, 5460),), N1, (N2,), ())
    replica = topo.nodes[1]
    assert replica == NodeRecord(
        N2,
        "127.0.0.1",
        7001,
        17001,
        zone="z2",
        shard=S1,
        role=Role.REPLICA,
        state=NodeState.RECOVERING,
        health=Health.LOADING,
        hidden=True,
        nofailover=True,
        priority=5,
        replica_id=2**64 - 1,
    )
    assert replica.role is Role.REPLICA and replica.health is Health.LOADING
    assert topo.migrations == (
        MigrationRecord("m-1", ((100, 200),), S1, S2, MigrationState.RUNNING),
    )


def test_unknown_fields_are_ignored() -> None:
    doc = design_dict()
    doc["future"] = {"x": 1}
    doc["shards"][0]["epoch"] = 3
    doc["nodes"][0]["labels"] = ["a"]
    doc["migrations"][0]["keys_moved"] = 10
    assert Topology.from_dict(doc) == Topology.from_json(DESIGN_DOC)


def test_missing_optional_fields_get_defaults() -> None:
    doc = {
        "epoch": 0,
        "shards": [{"id": S1, "slots": [], "primary": N1}],
        "nodes": [
            {
                "id": N1,
                "addr": "h",
                "port": 1,
                "admin_port": 2,
                "shard": S1,
                "role": "primary",
                "state": "ONLINE",
                "health": "online",
            },
            {
                "id": N2,
                "addr": "h",
                "port": 3,
                "admin_port": 4,
                "role": "none",
                "state": "ONLINE",
                "health": "online",
            },
        ],
    }
    topo = Topology.from_dict(doc)
    assert topo.migrations == ()
    assert topo.shards[0].replicas == () and topo.shards[0].sync_replicas == ()
    spare = topo.nodes[1]
    assert (spare.zone, spare.shard, spare.hidden, spare.nofailover) == ("", "", False, False)
    assert (spare.priority, spare.replica_id) == (0, 0)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ((), "epoch"),
        ((), "shards"),
        ((), "nodes"),
        (("shards", 0), "id"),
        (("shards", 0), "slots"),
        (("shards", 0), "primary"),
        (("nodes", 1), "id"),
        (("nodes", 1), "addr"),
        (("nodes", 1), "port"),
        (("nodes", 1), "admin_port"),
        (("nodes", 1), "role"),
        (("nodes", 1), "state"),
        (("nodes", 1), "health"),
        (("migrations", 0), "state"),
        (("migrations", 0), "from_shard"),
    ],
)
def test_missing_required_field_is_named(path: tuple[Any, ...], field: str) -> None:
    doc = design_dict()
    target: Any = doc
    for step in path:
        target = target[step]
    del target[field]
    where = "topology" if not path else f"{path[0]}[{path[1]}]"
    check_error(doc, f"{where}: missing required field {field!r}")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(epoch="7"), "topology.epoch: expected int, got str '7'"),
        (lambda d: d.update(epoch=7.0), "topology.epoch: expected int, got float 7.0"),
        (lambda d: d.update(shards={}), "topology.shards: expected list, got dict"),
        (lambda d: d["nodes"][0].update(port=True), "nodes[0].port: expected int, got bool True"),
        (lambda d: d["nodes"][0].update(hidden=0), "nodes[0].hidden: expected bool, got int 0"),
        (lambda d: d["nodes"][0].update(role="master"), "nodes[0].role: 'master' is not one of"),
        (lambda d: d["nodes"][0].update(state="active"), "nodes[0].state: 'active' is not one of"),
        (
            lambda d: d["nodes"][0].update(health="failed"),
            "nodes[0].health: 'failed' is not one of",
        ),
        (
            lambda d: d["shards"][0].update(slots=[[0, 1, 2]]),
            "shards[0].slots[0]: expected a [start, end] pair",
        ),
        (
            lambda d: d["shards"][0].update(slots=[5]),
            "shards[0].slots[0]: expected a [start, end] pair",
        ),
        (
            lambda d: d["shards"][0].update(replicas=[1]),
            "shards[0].replicas[0]: expected a node id string",
        ),
        (lambda d: d["nodes"].append(3), "nodes[3] must be a JSON object, got int"),
        (lambda d: d["migrations"][0].update(state=""), "migrations[0].state: '' is not one of"),
    ],
)
def test_wrong_json_types_are_reported_with_their_path(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = design_dict()
    mutate(doc)
    check_error(doc, message)


def test_not_json_or_not_an_object() -> None:
    with pytest.raises(TopologyError, match="topology is not valid JSON"):
        Topology.from_json(b"{nope")
    with pytest.raises(TopologyError, match="topology must be a JSON object, got list"):
        Topology.from_json(b"[]")


def test_migration_state_is_open_to_new_values() -> None:
    doc = design_dict()
    doc["migrations"][0]["state"] = "COPYING"
    topo = Topology.from_dict(doc)
    state = topo.migrations[0].state
    assert isinstance(state, MigrationState) and state == "COPYING"
    assert MigrationState("RUNNING") is MigrationState.RUNNING
    assert orjson.loads(topo.to_json())["migrations"][0]["state"] == "COPYING"
    assert Topology.from_json(topo.to_json()) == topo


# --------------------------------------------------------------------------- validation rules


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``a.0.b`` style paths in the document."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _extra_node(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = {
            "id": "c0" * 20,
            "addr": "h",
            "port": 9000,
            "admin_port": 19000,
            "role": "none",
            "state": "ONLINE",
            "health": "online",
        }
        node.update(fields)
        doc["nodes"].append(node)

    return mutate


def _seq(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


BAD = "ab" * 19 + "AB"  # 40 chars, not lowercase

RULES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("negative epoch", _set("epoch", -1), "epoch must be an integer >= 0, got -1"),
    (
        "short node id",
        _set("nodes.2.id", "abc"),
        "node id 'abc' is not 40 lowercase hex characters",
    ),
    ("upper-case node id", _set("nodes.2.id", BAD), f"node id '{BAD}' is not 40 lowercase hex"),
    (
        "bad shard id",
        _set("shards.1.id", "x" * 40),
        f"shard id '{'x' * 40}' is not 40 lowercase hex",
    ),
    (
        "slot above range",
        _set("shards.1.slots", [[5461, 16384]]),
        f"shard {S2}: slot range 5461-16384 is invalid (need 0 <= start <= end <= 16383)",
    ),
    (
        "negative slot",
        _set("shards.0.slots", [[-1, 5460]]),
        f"shard {S1}: slot range -1-5460 is invalid",
    ),
    (
        "start after end",
        _set("shards.0.slots", [[10, 5]]),
        f"shard {S1}: slot range 10-5 is invalid",
    ),
    (
        "slot owned by two shards",
        _set("shards.1.slots", [[5460, 16383]]),
        f"slot 5460 is owned by both shard {S1} and shard {S2}",
    ),
    (
        "slot listed twice in one shard",
        _set("shards.0.slots", [[0, 100], [50, 5460]]),
        f"slot 50 is listed twice in shard {S1}",
    ),
    (
        "primary unknown",
        _set("shards.1.primary", "c0" * 20),
        f"shard {S2}: primary '{'c0' * 20}' is not a known node",
    ),
    (
        "primary with role replica",
        _set("nodes.2.role", "replica"),
        f"shard {S2}: primary {N3} has role replica, expected primary",
    ),
    (
        "primary recording another shard",
        _set("nodes.2.shard", S1),
        f"shard {S2}: primary {N3} records shard '{S1}', expected {S2}",
    ),
    (
        "replica unknown",
        _set("shards.1.replicas", ["c0" * 20]),
        f"shard {S2}: replica '{'c0' * 20}' is not a known node",
    ),
    (
        "replica with role primary",
        _set("nodes.1.role", "primary"),
        f"shard {S1}: replica {N2} has role primary, expected replica",
    ),
    (
        "replica recording another shard",
        _set("nodes.1.shard", S2),
        f"shard {S1}: replica {N2} records shard '{S2}', expected {S1}",
    ),
    (
        "node in two shards",
        _set("shards.1.replicas", [N2]),
        f"node {N2} is listed in shard {S1} and again in shard {S2}",
    ),
    (
        "replica listed twice",
        _set("shards.0.replicas", [N2, N2]),
        f"node {N2} is listed twice in shard {S1}",
    ),
    (
        "member nobody lists",
        _extra_node(role="replica", shard=S2),
        f"node {'c0' * 20} has role replica but no shard lists it (shard '{S2}')",
    ),
    (
        "spare recording a shard",
        _extra_node(shard=S2),
        f"node {'c0' * 20} has role none but records shard '{S2}'",
    ),
    (
        "sync replica not a replica",
        _set("shards.1.sync_replicas", [N2]),
        f"shard {S2}: sync replica '{N2}' is not one of its replicas",
    ),
    ("port zero", _set("nodes.0.port", 0), f"node {N1}: port 0 is out of range 1..65535"),
    (
        "admin port too big",
        _set("nodes.0.admin_port", 65536),
        f"node {N1}: admin_port 65536 is out of range 1..65535",
    ),
    ("empty addr", _set("nodes.0.addr", ""), f"node {N1}: addr must be a non-empty string"),
    ("addr with space", _set("nodes.0.addr", "a b"), f"node {N1}: addr must be a non-empty string"),
    (
        "negative replica_id",
        _set("nodes.0.replica_id", -1),
        f"node {N1}: replica_id -1 is not a uint64",
    ),
    ("duplicate node id", _extra_node(id=N1), f"duplicate node id {N1}"),
    (
        "duplicate shard id",
        _seq(_set("shards.1.id", S1), _set("nodes.2.shard", S1)),
        f"duplicate shard id {S1}",
    ),
    (
        "duplicate migration id",
        lambda d: d["migrations"].append(dict(d["migrations"][0])),
        "duplicate migration id m-1",
    ),
    (
        "migration to unknown shard",
        _set("migrations.0.to_shard", "c0" * 20),
        f"migration m-1: to_shard '{'c0' * 20}' is not a known shard",
    ),
    (
        "migration from unknown shard",
        _set("migrations.0.from_shard", "nope"),
        "migration m-1: from_shard 'nope' is not a known shard",
    ),
    (
        "migration to itself",
        _set("migrations.0.to_shard", S1),
        f"migration m-1: from_shard and to_shard are the same shard {S1}",
    ),
    (
        "migration slot out of range",
        _set("migrations.0.slots", [[16000, 17000]]),
        "migration m-1: slot range 16000-17000 is invalid",
    ),
    ("empty migration id", _set("migrations.0.id", ""), "migration id must be a non-empty string"),
    (
        "hidden slot-owning primary",
        _set("nodes.0.hidden", True),
        f"node {N1} is hidden but is the primary of shard {S1}, which owns slots",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_validation_rule(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = design_dict()
    mutate(doc)
    check_error(doc, message)


def test_hidden_primary_without_slots_and_hidden_replica_are_accepted() -> None:
    doc = design_dict()
    doc["shards"][1]["slots"] = []
    doc["shards"][0]["slots"] = [[0, 16383]]
    doc["nodes"][2]["hidden"] = True
    topo = Topology.from_dict(doc)
    assert topo.nodes[2].hidden and topo.nodes[1].hidden


def test_error_is_a_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


def test_constructor_validates() -> None:
    topo = Topology.from_json(DESIGN_DOC)
    with pytest.raises(TopologyError, match="epoch must be an integer >= 0"):
        dataclasses.replace(topo, epoch=-1)
    with pytest.raises(TopologyError, match="slot 5000 is owned by both shard"):
        Topology.build(
            topo.epoch,
            [topo.shards[0], dataclasses.replace(topo.shards[1], slots=((5000, 5000),))],
            topo.nodes,
        )
    with pytest.raises(TopologyError, match="role must be a Role, got 'primary'"):
        Topology.build(1, [topo.shards[1]], [dataclasses.replace(topo.nodes[2], role="primary")])  # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="slots must be a tuple of"):
        Topology.build(1, [dataclasses.replace(topo.shards[1], slots=[(0, 1)])], [topo.nodes[2]])  # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="topology nodes must be a tuple"):
        Topology(1, (), [])  # type: ignore[arg-type]


def test_build_takes_iterables_and_records_are_frozen() -> None:
    topo = Topology.from_json(DESIGN_DOC)
    again = Topology.build(topo.epoch, list(topo.shards), iter(topo.nodes), list(topo.migrations))
    assert again == topo and hash(again) == hash(topo)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.epoch = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.nodes[0].port = 1  # type: ignore[misc]


def test_empty_topology_is_valid() -> None:
    topo = Topology.build(0, [], [])
    assert Topology.from_json(topo.to_json()) == topo
    assert slot_owners(topo) == [None] * SLOT_COUNT


# --------------------------------------------------------------------------- helpers


def test_slot_owners() -> None:
    owners = slot_owners(Topology.from_json(DESIGN_DOC))
    assert len(owners) == SLOT_COUNT
    assert owners[0] == owners[5460] == S1
    assert owners[5461] == owners[16383] == S2


def test_slot_owners_with_gaps() -> None:
    doc = design_dict()
    doc["shards"][0]["slots"] = [[10, 10], [0, 2]]
    doc["shards"][1]["slots"] = [[16383, 16383]]
    owners = slot_owners(Topology.from_dict(doc))
    assert [i for i, o in enumerate(owners) if o == S1] == [0, 1, 2, 10]
    assert [i for i, o in enumerate(owners) if o == S2] == [16383]
    assert owners.count(None) == SLOT_COUNT - 5


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("0-5460,5461", [(0, 5460), (5461, 5461)]),
        ("", []),
        (" 1 - 3 , 7 ,", [(1, 3), (7, 7)]),
        ("16383", [(16383, 16383)]),
        ("5,1-2", [(5, 5), (1, 2)]),
    ],
)
def test_parse_ranges(text: str, ranges: list[tuple[int, int]]) -> None:
    assert parse_ranges(text) == ranges


@pytest.mark.parametrize("text", ["a", "1-", "-1", "1-2-3", "16384", "5-4", "0-16384", "1;2"])
def test_parse_ranges_rejects(text: str) -> None:
    with pytest.raises(TopologyError, match="bad slot range"):
        parse_ranges(text)


def test_slot_ranges() -> None:
    assert slot_ranges([]) == []
    assert slot_ranges([5]) == [(5, 5)]
    assert slot_ranges([3, 1, 2, 7, 7, 8, 10]) == [(1, 3), (7, 8), (10, 10)]
    assert slot_ranges(range(SLOT_COUNT)) == [(0, SLOT_COUNT - 1)]


@given(st.sets(st.integers(0, SLOT_COUNT - 1), max_size=200))
def test_slot_ranges_are_maximal_runs(slots: set[int]) -> None:
    ranges = slot_ranges(slots)
    assert {s for a, b in ranges for s in range(a, b + 1)} == slots
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start > end + 1
    text = ",".join(f"{a}-{b}" for a, b in ranges)
    assert parse_ranges(text) == ranges


def test_lookups_and_new_id() -> None:
    topo = Topology.from_json(DESIGN_DOC)
    node = node_by_id(topo, N2)
    assert node is not None and node.role is Role.REPLICA
    assert node_by_id(topo, "c0" * 20) is None
    shard = shard_by_id(topo, S2)
    assert shard is not None and shard.primary == N3
    assert shard_by_id(topo, N1) is None
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"[0-9a-f]{40}", i) for i in ids)


def test_module_docstring_example() -> None:
    result = doctest.testmod(topology_module)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- random topologies

hex_ids = st.text("0123456789abcdef", min_size=40, max_size=40)
addrs = st.sampled_from(["127.0.0.1", "10.1.2.3", "::1", "node-a.example"])
healths = st.sampled_from(list(Health))


@st.composite
def topologies(draw: st.DrawFn, full: bool = False) -> Topology:
    """Random valid topologies: 0-4 shards of 0-3 replicas, spares, slot gaps,
    migrations. With ``full``, every slot is owned (at least one shard)."""
    n_shards = draw(st.integers(1 if full else 0, 4))
    n_replicas = [draw(st.integers(0, 3)) for _ in range(n_shards)]
    n_spares = draw(st.integers(0, 2))
    ids = draw(
        st.lists(hex_ids, min_size=2 * n_shards + sum(n_replicas) + n_spares, unique=True).map(iter)
    )
    shard_ids = [next(ids) for _ in range(n_shards)]
    cuts = sorted(draw(st.sets(st.integers(1, SLOT_COUNT - 1), max_size=8)))
    bounds = [0, *cuts, SLOT_COUNT]
    owned: list[list[tuple[int, int]]] = [[] for _ in range(n_shards)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        lo = 0 if full else -1
        who = draw(st.integers(lo, n_shards - 1)) if n_shards else -1
        if who >= 0:
            owned[who].append((start, stop - 1))
    ports = iter(range(1, 60000, 7))

    def node(node_id: str, shard: str, role: Role, may_hide: bool) -> NodeRecord:
        port = next(ports)
        return NodeRecord(
            node_id,
            draw(addrs),
            port,
            port + 1,
            zone=draw(st.sampled_from(["", "z1", "z2"])),
            shard=shard,
            role=role,
            state=draw(st.sampled_from(list(NodeState))),
            health=draw(healths),
            hidden=draw(st.booleans()) if may_hide else False,
            nofailover=draw(st.booleans()),
            priority=draw(st.integers(-5, 5)),
            replica_id=draw(st.integers(0, 2**64 - 1)),
        )

    shards, nodes = [], []
    for i, sid in enumerate(shard_ids):
        slots = tuple(draw(st.permutations(owned[i])))
        primary = node(next(ids), sid, Role.PRIMARY, may_hide=not slots)
        replicas = [node(next(ids), sid, Role.REPLICA, may_hide=True) for _ in range(n_replicas[i])]
        sync = (
            draw(st.lists(st.sampled_from([r.id for r in replicas]), unique=True))
            if replicas
            else []
        )
        shards.append(
            ShardRecord(sid, slots, primary.id, tuple(r.id for r in replicas), tuple(sync))
        )
        nodes += [primary, *replicas]
    nodes += [node(next(ids), "", Role.NONE, may_hide=True) for _ in range(n_spares)]
    migrations = []
    if n_shards >= 2:
        for k in range(draw(st.integers(0, 2))):
            a, b = draw(st.permutations(shard_ids))[:2]
            lo = draw(st.integers(0, SLOT_COUNT - 1))
            hi = draw(st.integers(lo, SLOT_COUNT - 1))
            state = draw(st.sampled_from([*MigrationState, "COPYING"]))
            migrations.append(MigrationRecord(f"m{k}", ((lo, hi),), a, b, MigrationState(state)))
    return Topology.build(
        draw(st.integers(0, 2**40)), shards, draw(st.permutations(nodes)), migrations
    )


@settings(max_examples=150, deadline=None)
@given(topologies())
def test_random_topologies_round_trip(topo: Topology) -> None:
    data = topo.to_json()
    again = Topology.from_json(data)
    assert again == topo
    assert again.to_json() == data
    assert Topology.from_dict(copy.deepcopy(orjson.loads(data))) == topo
    owners = slot_owners(topo)
    for shard in topo.shards:
        for start, end in shard.slots:
            assert owners[start : end + 1] == [shard.id] * (end - start + 1)
    assert sum(o is not None for o in owners) == sum(
        b - a + 1 for s in topo.shards for a, b in s.slots
    )
