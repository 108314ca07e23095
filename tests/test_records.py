"""Settings, status and the served view assembled from etcd values (pure)."""

from __future__ import annotations

import pytest

from clusterstate.keys import Keys
from clusterstate.layout import balanced_ranges, static_topology
from clusterstate.records import (
    RecordError,
    Settings,
    Status,
    node_to_json,
    served_view,
    shard_to_json,
)


def test_settings_defaults_and_timing_rule() -> None:
    s = Settings()
    assert s.lease_ttl == 2.0 and s.keepalive_interval == pytest.approx(2 / 3)
    assert s.keepalive_interval + 2 * s.retry_timeout <= s.lease_ttl
    assert Settings.from_json(s.to_json()) == s
    with pytest.raises(ValueError, match="timing rule"):
        Settings(lease_ttl=2.0, keepalive_interval=1.5)
    with pytest.raises(RecordError, match="must be a number"):
        Settings.from_json(b'{"lease_ttl": "fast"}')
    with pytest.raises(RecordError, match="true or false"):
        Settings.from_json(b'{"pause": 1}')
    assert Settings.from_json(b'{"future_field": 1}') == Settings()
    assert s.merged({"pause": True}).pause is True
    with pytest.raises(RecordError, match="unknown settings"):
        s.merged({"nope": 1})
    with pytest.raises(RecordError):
        s.merged({"replicas": -1})


def test_status_round_trip() -> None:
    st = Status(addr="127.0.0.1", port=7000, admin_port=17000, health="loading",
                load_progress=0.5, repl_offset=42)
    assert Status.from_json(st.to_json()) == st
    assert st.with_(health="online").health == "online"
    with pytest.raises(RecordError):
        Status.from_json(b"[1, 2]")


def test_served_view_from_values() -> None:
    t = static_topology([("127.0.0.1", 7000 + i, 17000 + i) for i in range(6)], 3, 1, epoch=7)
    k = Keys("demo")
    values = {k.epoch: b"7", k.settings: Settings().to_json()}
    for sh in t.shards:
        values[k.shard(sh.id)] = shard_to_json(sh, 7)
    for n in t.nodes:
        values[k.node(n.id)] = node_to_json(n, 7)
    view = served_view(k, values)
    assert view.epoch == 7
    assert {s.id: s for s in view.shards} == {s.id: s for s in t.shards}
    assert {n.id: n for n in view.nodes} == {n.id: n for n in t.nodes}
    assert [s.slots for s in sorted(view.shards, key=lambda s: s.slots)] == [
        (r,) for r in balanced_ranges(3)
    ]
    broken = dict(values)
    broken[k.shard(t.shards[0].id)] = b"{"
    with pytest.raises(RecordError):
        served_view(k, broken)


def test_served_view_without_finished_migrations() -> None:
    """The sidecars' view (``finished=False``) leaves finished migrations out; the
    coordinator's keeps every record."""
    import orjson

    t = static_topology([("127.0.0.1", 7000 + i, 17000 + i) for i in range(2)], 2, 0, epoch=3)
    k = Keys("demo")
    values = {k.epoch: b"3"}
    for sh in t.shards:
        values[k.shard(sh.id)] = shard_to_json(sh, 3)
    for n in t.nodes:
        values[k.node(n.id)] = node_to_json(n, 3)
    a, b = (sh.id for sh in t.shards)
    for i, state in enumerate(("PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED")):
        values[k.migration(f"m{i}")] = orjson.dumps({
            "id": f"m{i}", "slots": [[i, i]], "from_shard": a, "to_shard": b, "state": state,
            "keys_moved": 5})
    assert len(served_view(k, values).migrations) == 5
    assert sorted(m.state.value for m in served_view(k, values, finished=False).migrations) == [
        "PENDING", "RUNNING"]
