"""The etcd key layout (clusterstate.keys): every path built and parsed in one place. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterstate.keys import (
    SERVED_VIEW_KINDS,
    UINT64_MAX,
    KeyKind,
    KeyLayoutError,
    Keys,
    ParsedKey,
)

NODE = "ab" * 20
SHARD = "cd" * 20
keys = Keys("prod")


def test_every_key_lives_under_the_cluster_root() -> None:
    assert keys.root == "/slotkeeper/prod/"
    assert keys.settings == "/slotkeeper/prod/settings"
    assert keys.epoch == "/slotkeeper/prod/epoch"
    assert keys.coordinator_leader == "/slotkeeper/prod/coordinator/leader"
    assert keys.shard(SHARD) == f"/slotkeeper/prod/shards/{SHARD}"
    assert keys.node(NODE) == f"/slotkeeper/prod/nodes/{NODE}"
    assert keys.status(NODE) == f"/slotkeeper/prod/status/{NODE}"
    assert keys.lease(SHARD) == f"/slotkeeper/prod/leases/{SHARD}"
    assert keys.migration("m-1") == "/slotkeeper/prod/migrations/m-1"
    assert keys.replica_id(123) == "/slotkeeper/prod/replica-ids/00000000000000000123"
    assert keys.history(7) == "/slotkeeper/prod/history/00000000000000000007"


def test_prefixes_end_with_a_slash_and_contain_their_keys() -> None:
    pairs = [
        (keys.shards, keys.shard(SHARD)),
        (keys.nodes, keys.node(NODE)),
        (keys.statuses, keys.status(NODE)),
        (keys.leases, keys.lease(SHARD)),
        (keys.migrations, keys.migration("m")),
        (keys.replica_ids, keys.replica_id(1)),
        (keys.histories, keys.history(1)),
    ]
    for prefix, key in pairs:
        assert prefix.endswith("/") and key.startswith(prefix) and prefix.startswith(keys.root)
    # "nodes/" must not match "nodes-something"; a singleton's "prefix" is the key itself.
    assert keys.prefix(KeyKind.NODE) == "/slotkeeper/prod/nodes/"
    assert keys.prefix(KeyKind.EPOCH) == keys.epoch


def test_clusters_do_not_share_prefixes() -> None:
    a, b = Keys("a"), Keys("a-b")
    assert not b.root.startswith(a.root)
    assert a.parse(b.epoch) is None


def test_numeric_ids_sort_in_byte_order() -> None:
    numbers = [0, 1, 9, 10, 99, 100, 2**32, UINT64_MAX]
    assert sorted(keys.history(n) for n in numbers) == [keys.history(n) for n in numbers]
    assert sorted(keys.replica_id(n) for n in numbers) == [keys.replica_id(n) for n in numbers]
    assert keys.replica_id(UINT64_MAX).endswith("/18446744073709551615")


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        (keys.settings, ParsedKey(KeyKind.SETTINGS)),
        (keys.epoch, ParsedKey(KeyKind.EPOCH)),
        (keys.coordinator_leader, ParsedKey(KeyKind.COORDINATOR_LEADER)),
        (keys.shard(SHARD), ParsedKey(KeyKind.SHARD, SHARD)),
        (keys.node(NODE), ParsedKey(KeyKind.NODE, NODE)),
        (keys.status(NODE), ParsedKey(KeyKind.STATUS, NODE)),
        (keys.lease(SHARD), ParsedKey(KeyKind.LEASE, SHARD)),
        (keys.migration("m-1"), ParsedKey(KeyKind.MIGRATION, "m-1")),
        (keys.replica_id(42), ParsedKey(KeyKind.REPLICA_ID, "42")),
        (keys.history(0), ParsedKey(KeyKind.HISTORY, "0")),
    ],
)
def test_parse_gives_kind_and_id(key: str, parsed: ParsedKey) -> None:
    assert keys.parse(key) == parsed
    assert keys.parse(key.encode()) == parsed


def test_parsed_numbers() -> None:
    parsed = keys.parse(keys.replica_id(UINT64_MAX))
    assert parsed is not None and parsed.number == UINT64_MAX
    node = keys.parse(keys.node(NODE))
    assert node is not None
    with pytest.raises(KeyLayoutError):
        _ = node.number


@pytest.mark.parametrize(
    "key",
    [
        "/slotkeeper/other/epoch",  # another cluster
        "/slotkeeper/prod",  # the root without its slash
        "/slotkeeper/prod/",
        "/slotkeeper/prod/unknown/x",  # a kind this version does not know
        "/slotkeeper/prod/nodes",  # a prefix, not a key
        "/slotkeeper/prod/nodes/",
        f"/slotkeeper/prod/nodes/{NODE}/extra",
        "/slotkeeper/prod/nodes/has space",
        "/slotkeeper/prod/epoch/1",  # a singleton with an id
        "/slotkeeper/prod/coordinator/other",
        "/slotkeeper/prod/history/7",  # not zero-padded
        "/slotkeeper/prod/history/-0000000000000000001",
        "/slotkeeper/prod/replica-ids/99999999999999999999",  # above uint64
        "/slotkeeper/prod/settingsX",
        b"/slotkeeper/prod/nodes/\xff",  # not UTF-8
    ],
)
def test_parse_ignores_keys_outside_the_layout(key: str | bytes) -> None:
    assert keys.parse(key) is None


@pytest.mark.parametrize("cluster", ["", "a/b", "-x", "has space", "é", ".hidden", None])
def test_bad_cluster_names_are_refused(cluster: object) -> None:
    with pytest.raises(KeyLayoutError):
        Keys(cluster)  # type: ignore[arg-type]


@pytest.mark.parametrize("ident", ["", "a/b", "sp ace", "tab\t", "nl\n", 7])
def test_bad_ids_are_refused(ident: object) -> None:
    with pytest.raises(KeyLayoutError):
        keys.node(ident)  # type: ignore[arg-type]


@pytest.mark.parametrize("number", [-1, UINT64_MAX + 1, True, 1.0, "1"])
def test_bad_numbers_are_refused(number: object) -> None:
    with pytest.raises(KeyLayoutError):
        keys.history(number)  # type: ignore[arg-type]
    with pytest.raises(KeyLayoutError):
        keys.replica_id(number)  # type: ignore[arg-type]


def test_keys_compare_by_cluster() -> None:
    assert Keys("prod") == keys and hash(Keys("prod")) == hash(keys)
    assert Keys("staging") != keys
    assert repr(keys) == "Keys('prod')"


def test_served_view_kinds() -> None:
    assert SERVED_VIEW_KINDS == {KeyKind.EPOCH, KeyKind.SHARD, KeyKind.NODE, KeyKind.MIGRATION}


_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=50,
).filter(lambda s: "/" not in s and not any(c.isspace() for c in s) and s.isprintable())


@given(
    ident=_ids,
    kind=st.sampled_from(
        [KeyKind.SHARD, KeyKind.NODE, KeyKind.STATUS, KeyKind.LEASE, KeyKind.MIGRATION]
    ),
)
def test_id_round_trip(ident: str, kind: KeyKind) -> None:
    build = {
        KeyKind.SHARD: keys.shard,
        KeyKind.NODE: keys.node,
        KeyKind.STATUS: keys.status,
        KeyKind.LEASE: keys.lease,
        KeyKind.MIGRATION: keys.migration,
    }[kind]
    assert keys.parse(build(ident)) == ParsedKey(kind, ident)


@given(number=st.integers(min_value=0, max_value=UINT64_MAX))
def test_number_round_trip(number: int) -> None:
    for build, kind in ((keys.history, KeyKind.HISTORY), (keys.replica_id, KeyKind.REPLICA_ID)):
        parsed = keys.parse(build(number))
        assert parsed == ParsedKey(kind, str(number)) and parsed.number == number
