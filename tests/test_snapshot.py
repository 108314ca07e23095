"""Snapshots: the file format and Snapshotter on a real Keyspace (unit), then a real
data node process: restart keeps data, BGSAVE while serving, kills mid-write,
refusal to start on a corrupt file, DUMP/RESTORE, periodic snapshots."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from datanode.commands.persistence import dump_payload, load_payload
from datanode.keyspace import Keyspace
from datanode.snapshot import (
    HEADER_SIZE,
    SnapshotError,
    Snapshotter,
    read_snapshot,
)
from datanode.zset import ZSet
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.support import wait_until

NOW = 1_800_000_000_000  # fake wall clock, ms


class FakeClock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class FakeNode:
    """What Snapshotter uses of a DataNode: ``ks`` and ``dirty``."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.ks = Keyspace(clock or FakeClock())
        self.dirty = 0


def zset(pairs: dict[bytes, float]) -> ZSet:
    z = ZSet()
    for m, s in pairs.items():
        z.add(m, s)
    return z


def sample_values() -> dict[bytes, Any]:
    return {
        b"str": b"hello",
        b"empty": b"",
        b"bin": bytes(range(256)) * 10,
        b"big": os.urandom(3 << 20),  # spans several write chunks
        b"hash": {b"f1": b"v1", b"": b"", b"bin\x00": b"\xff" * 100},
        b"list": deque([b"a", b"", b"a", b"z" * 1000]),
        b"set": {b"m1", b"m2", b""},
        b"zset": zset({b"a": 1.5, b"b": float("-inf"), b"c": float("inf"), b"d": -0.0}),
        "{tag}ключ".encode(): b"utf-8 key",
    }


def fill(ks: Keyspace, values: dict[bytes, Any]) -> None:
    for k, v in values.items():
        ks.set(k, v)


def state(ks: Keyspace) -> dict[bytes, tuple[Any, int | None]]:
    """Comparable view of a keyspace: key -> (value, expire_at); zsets as their order."""
    out = {}
    for k, v, at in ks.iter_items():
        out[k] = (v.order if type(v) is ZSet else v, at)
    return out


@pytest.fixture
def snap_path(tmp_path: Path) -> Path:
    return tmp_path / "dump.skdb"


def saved(path: Path, node: FakeNode | None = None) -> FakeNode:
    node = node or FakeNode()
    if not node.ks.count:
        fill(node.ks, sample_values())
    Snapshotter(node, path).save()
    return node


def load_into_new(path: Path, clock: FakeClock | None = None) -> tuple[FakeNode, int | None]:
    node = FakeNode(clock)
    return node, Snapshotter(node, path).load()


# =========================================================================== unit: format


def test_round_trip_all_types_and_ttls(snap_path: Path) -> None:
    src = FakeNode()
    fill(src.ks, sample_values())
    src.ks.set_expire(b"str", NOW + 60_000)
    src.ks.set_expire(b"zset", NOW + 1)
    src.dirty = 42
    snap = Snapshotter(src, snap_path)
    snap.save()
    assert src.dirty == 0 and snap.last_status == "ok"
    assert snap.last_keys == len(sample_values())
    assert not list(snap_path.parent.glob("*.tmp-*"))

    dst, loaded = load_into_new(snap_path)
    assert loaded == len(sample_values())
    assert state(dst.ks) == state(src.ks)
    assert dst.ks.expire_at(b"str") == NOW + 60_000
    assert dst.ks.expire_at(b"hash") is None
    assert dst.ks.count == src.ks.count
    assert dst.ks.mem == src.ks.mem  # memory estimate rebuilt on load
    z = dst.ks.get(b"zset")
    assert z.rank(b"a") == 2 and z.score(b"b") == float("-inf")


def test_empty_keyspace_round_trip(snap_path: Path) -> None:
    Snapshotter(FakeNode(), snap_path).save()
    dst, loaded = load_into_new(snap_path)
    assert loaded == 0 and dst.ks.count == 0


def test_missing_file_is_an_empty_start(snap_path: Path) -> None:
    node, loaded = load_into_new(snap_path)
    assert loaded is None and node.ks.count == 0


def test_expired_keys_are_neither_written_nor_loaded(snap_path: Path) -> None:
    clock = FakeClock()
    src = FakeNode(clock)
    fill(src.ks, {b"dead": b"1", b"soon": b"2", b"later": b"3", b"forever": b"4"})
    src.ks.set_expire(b"dead", NOW - 1)  # already expired when saved
    src.ks.set_expire(b"soon", NOW + 1_000)
    src.ks.set_expire(b"later", NOW + 100_000)
    Snapshotter(src, snap_path).save()
    info = read_snapshot(snap_path, Keyspace(FakeClock()), NOW)
    assert info.keys == 3  # "dead" not written

    dst, loaded = load_into_new(snap_path, FakeClock(NOW + 5_000))
    assert loaded == 2
    assert sorted(dst.ks.iter_keys()) == [b"forever", b"later"]
    assert dst.ks.expire_at(b"later") == NOW + 100_000


def test_meta_round_trip(snap_path: Path) -> None:
    src = FakeNode()
    fill(src.ks, {b"k": b"v"})
    snap = Snapshotter(src, snap_path)
    snap.meta_source = lambda: {"replid": "ab" * 20, "offset": 1234}
    snap.save()
    dst = FakeNode()
    reader = Snapshotter(dst, snap_path)
    assert reader.load() == 1
    assert reader.meta == {"replid": "ab" * 20, "offset": 1234}


def _corrupt(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.mark.parametrize("keep", ["0", "10", "header", "half", "-1", "-4", "-5", "-100"])
def test_truncated_file_is_refused_naming_the_file(snap_path: Path, keep: str) -> None:
    saved(snap_path)
    data = snap_path.read_bytes()
    n = {"header": HEADER_SIZE, "half": len(data) // 2}.get(keep)
    if n is None:
        n = int(keep) if int(keep) >= 0 else len(data) + int(keep)
    _corrupt(snap_path, data[:n])
    node = FakeNode()
    with pytest.raises(SnapshotError) as err:
        Snapshotter(node, snap_path).load()
    assert str(snap_path) in str(err.value)
    assert node.ks.count == 0  # nothing half-loaded left behind


def test_truncation_message_says_truncated(snap_path: Path) -> None:
    saved(snap_path)
    data = snap_path.read_bytes()
    _corrupt(snap_path, data[: len(data) // 2])
    with pytest.raises(SnapshotError, match=r"truncated|runs past the end"):
        load_into_new(snap_path)


def test_every_flipped_byte_is_detected(snap_path: Path) -> None:
    node = FakeNode()
    fill(node.ks, {b"s": b"value", b"h": {b"f": b"v"}, b"z": zset({b"m": 2.0})})
    node.ks.set_expire(b"s", NOW + 10_000)
    saved(snap_path, node)
    data = snap_path.read_bytes()
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x55
        _corrupt(snap_path, bytes(flipped))
        with pytest.raises(SnapshotError) as err:
            load_into_new(snap_path)
        assert str(snap_path) in str(err.value), i


def test_flipped_value_byte_reports_checksum(snap_path: Path) -> None:
    saved(snap_path)
    data = bytearray(snap_path.read_bytes())
    i = data.index(b"hello")
    data[i] ^= 1
    _corrupt(snap_path, bytes(data))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        load_into_new(snap_path)


def test_wrong_version_and_magic(snap_path: Path) -> None:
    saved(snap_path)
    data = bytearray(snap_path.read_bytes())
    data[15] = 99
    _corrupt(snap_path, bytes(data))
    with pytest.raises(SnapshotError, match="unsupported format version 99"):
        load_into_new(snap_path)
    _corrupt(snap_path, b"REDIS0011" + b"\0" * 100)
    with pytest.raises(SnapshotError, match="bad magic"):
        load_into_new(snap_path)


def test_trailing_garbage_is_refused(snap_path: Path) -> None:
    saved(snap_path)
    _corrupt(snap_path, snap_path.read_bytes() + b"x")
    with pytest.raises(SnapshotError):
        load_into_new(snap_path)


def test_failed_save_leaves_previous_snapshot_and_no_temp_file(snap_path: Path) -> None:
    node = saved(snap_path)
    before = snap_path.read_bytes()
    node.ks.data[b"broken"] = ["not a value type"]  # the encoder refuses it mid-file
    node.dirty = 5
    snap = Snapshotter(node, snap_path)
    with pytest.raises(SnapshotError, match=str(snap_path)):
        snap.save()
    assert snap.last_status == "err" and node.dirty == 5
    assert snap_path.read_bytes() == before
    assert not list(snap_path.parent.glob("*.tmp-*"))


def test_stale_temp_files_are_removed_at_load(snap_path: Path) -> None:
    saved(snap_path)
    stale = snap_path.parent / f"{snap_path.name}.tmp-12345"
    stale.write_bytes(b"partial")
    other = snap_path.parent / "unrelated.tmp-1"
    other.write_bytes(b"x")
    load_into_new(snap_path)
    assert not stale.exists() and other.exists()


# =========================================================================== unit: BGSAVE


def wait_child(snap: Snapshotter, timeout: float = 30.0) -> None:
    def done() -> bool:
        snap.poll()
        return not snap.in_progress

    wait_until(done, timeout=timeout, interval=0.01, what="the snapshot child to finish")


def test_bgsave_writes_the_keyspace_as_of_fork(snap_path: Path) -> None:
    node = FakeNode()
    fill(node.ks, sample_values())
    node.dirty = 10
    snap = Snapshotter(node, snap_path)
    assert snap.bgsave()
    assert snap.in_progress and snap.child_pid
    assert not snap.bgsave()  # one at a time
    # Changes after the fork are not in this snapshot and stay counted as dirty.
    node.ks.set(b"str", b"changed after fork")
    node.ks.set(b"new", b"x")
    node.dirty += 2
    wait_child(snap)
    assert snap.last_status == "ok" and snap.last_keys == len(sample_values())
    assert node.dirty == 2
    assert snap.last_duration >= 0 and snap.last_fork_ms > 0
    dst, loaded = load_into_new(snap_path)
    assert loaded == len(sample_values())
    assert dst.ks.get(b"str") == b"hello" and dst.ks.get(b"new") is None
    assert not list(snap_path.parent.glob("*.tmp-*"))


def test_bgsave_failure_is_reported(tmp_path: Path) -> None:
    node = FakeNode()
    fill(node.ks, {b"k": b"v"})
    node.dirty = 3
    snap = Snapshotter(node, tmp_path / "missing-dir" / "dump.skdb")
    assert snap.bgsave()
    wait_child(snap)
    assert snap.last_status == "err" and node.dirty == 3
    assert snap.info()["rdb_last_bgsave_status"] == "err"


def test_abort_child_keeps_previous_snapshot(snap_path: Path) -> None:
    node = FakeNode()
    for i in range(100):
        node.ks.set(b"big:%d" % i, os.urandom(1 << 20))
    snap = Snapshotter(node, snap_path)
    snap.save()
    before = snap_path.read_bytes()
    node.ks.set(b"big:0", b"new")
    assert snap.bgsave()
    pid = snap.child_pid
    assert pid is not None
    tmp = snap_path.parent / f"{snap_path.name}.tmp-{pid}"
    wait_until(tmp.exists, timeout=10, interval=0.002, what="the child's temp file")
    snap.abort_child()
    assert not snap.in_progress and snap.child_pid is None
    assert not tmp.exists()
    assert snap_path.read_bytes() == before
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped


def test_bgsave_schedule_runs_after_the_current_one(snap_path: Path) -> None:
    node = FakeNode()
    fill(node.ks, {b"k": b"1"})
    snap = Snapshotter(node, snap_path)
    assert snap.bgsave()
    first = snap.child_pid
    node.ks.set(b"k", b"2")
    snap.scheduled = True

    def second_started() -> bool:
        snap.poll()
        return snap.child_pid not in (None, first) or snap.saves >= 2

    wait_until(second_started, timeout=30, interval=0.01)
    wait_child(snap)
    assert snap.saves == 2 and not snap.scheduled
    dst, _ = load_into_new(snap_path)
    assert dst.ks.get(b"k") == b"2"


def test_save_supersedes_a_running_child(snap_path: Path) -> None:
    node = FakeNode()
    fill(node.ks, {b"k": b"1"})
    snap = Snapshotter(node, snap_path)
    assert snap.bgsave()
    node.ks.set(b"k", b"2")
    snap.save()
    assert not snap.in_progress
    dst, _ = load_into_new(snap_path)
    assert dst.ks.get(b"k") == b"2"


# =========================================================================== processes


def tmp_files(d: Path) -> list[Path]:
    return list(d.glob("dump.skdb.tmp-*"))


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != b"Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DataNodeProcess]:
    n = start_datanode(tmp_path / "data")
    try:
        yield n
    finally:
        n.kill()


COLLECTIONS: dict[bytes, Any] = {
    b"h": {b"f": b"v", b"": b"\x00\xff"},
    b"l": deque([b"x", b"", b"x"]),
    b"s": {b"a", b"b"},
    b"z": zset({b"lo": float("-inf"), b"m": 2.5, b"hi": float("inf")}),
}


def shutdown(node: DataNodeProcess, *args: str) -> None:
    """SHUTDOWN over a client that does not retry, then wait for the exit."""
    r = node.client(retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        r.execute_command("SHUTDOWN", *args)
    assert node.exit_code() == 0


def dump(r: redis.Redis, key: str | bytes) -> bytes:
    payload = r.dump(key)
    assert isinstance(payload, bytes), f"DUMP {key!r} gave {payload!r}"
    return payload


def write_sample(r: redis.Redis) -> None:
    r.set("str", "hello")
    r.set("bin", bytes(range(256)))
    r.set("ttl", "v", px=600_000)
    for k, v in COLLECTIONS.items():
        r.restore(k, 0, dump_payload(v))
    r.pexpire("h", 900_000)


def check_sample(r: redis.Redis) -> None:
    assert r.get("str") == b"hello"
    assert r.get("bin") == bytes(range(256))
    assert 590_000 < r.pttl("ttl") <= 600_000
    assert 890_000 < r.pttl("h") <= 900_000
    assert r.pttl("l") == -1
    for k, v in COLLECTIONS.items():
        got = load_payload(dump(r, k))
        if type(v) is ZSet:
            assert got.order == v.order
        else:
            assert got == v


def test_shutdown_save_and_restart_keeps_data(node: DataNodeProcess) -> None:
    write_sample(node.client())
    shutdown(node, "SAVE")
    node.start()
    check_sample(node.client())
    assert "snapshot" in node.log_tail(50)


def test_sigterm_saves_and_restart_keeps_data(node: DataNodeProcess) -> None:
    write_sample(node.client())
    node.stop()  # SIGTERM
    assert (node.dir / "dump.skdb").exists()
    node.start()
    check_sample(node.client())
    assert not tmp_files(node.dir)


def test_shutdown_nosave_loses_unsaved_writes(node: DataNodeProcess) -> None:
    r = node.client()
    r.set("a", "1")
    assert r.save()
    r.set("b", "2")
    shutdown(node, "NOSAVE")
    node.start()
    r = node.client()
    assert r.get("a") == b"1" and r.get("b") is None


def test_bgsave_while_serving_and_lastsave_advances(node: DataNodeProcess) -> None:
    r = node.client()
    pipe = r.pipeline(transaction=False)
    for i in range(100_000):
        pipe.set(f"key:{i}", f"value:{i}")
    pipe.execute()
    first = r.lastsave()
    wait_until(lambda: time.time() >= first.timestamp() + 1.05, timeout=5, interval=0.05)
    assert r.execute_command("BGSAVE") in (
        b"Background saving started",
        "Background saving started",
        True,
    )
    # The node keeps answering while the child writes.
    for i in range(0, 100_000, 997):
        assert r.get(f"key:{i}") == f"value:{i}".encode()
    wait_until(lambda: r.lastsave() > first, timeout=30, what="LASTSAVE to advance")
    info = r.info("persistence")
    assert info["rdb_last_bgsave_status"] == "ok"
    assert info["rdb_changes_since_last_save"] == 0
    assert not tmp_files(node.dir)
    node.kill()
    node.start()
    assert node.client().dbsize() == 100_000


def test_bgsave_replies(node: DataNodeProcess) -> None:
    r = node.client()
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("BGSAVE", "NOW")
    _big_dataset(r)
    assert r.execute_command("BGSAVE")
    # Hold the child mid-write to see the in-progress replies deterministically.
    wait_until(lambda: tmp_files(node.dir), timeout=10, interval=0.002, what="the temp file")
    (child,) = children_of(node.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        for cmd in (("BGSAVE",), ("SAVE",)):
            with pytest.raises(redis.ResponseError, match="^Background save already in progress$"):
                r.execute_command(*cmd)
        assert r.execute_command("BGSAVE", "SCHEDULE") in (
            b"Background saving scheduled",
            "Background saving scheduled",
            True,
        )
        assert r.info("persistence")["rdb_bgsave_in_progress"] == 1
        assert r.get("small:1") == b"x"  # still serving
    finally:
        os.kill(child, signal.SIGCONT)
    # The scheduled one starts when the first ends.
    wait_until(
        lambda: node.log_tail(50).count("background snapshot done") == 2,
        timeout=60,
        what="the scheduled snapshot",
    )


def _big_dataset(r: redis.Redis, n: int = 150) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"big:{i}", os.urandom(1 << 20))
    for i in range(50_000):
        pipe.set(f"small:{i}", "x")
    pipe.execute()


def test_killed_child_keeps_previous_snapshot(node: DataNodeProcess) -> None:
    r = node.client()
    _big_dataset(r)
    r.set("marker", "v1")
    assert r.save()
    r.set("marker", "v2")
    r.bgsave()
    wait_until(lambda: tmp_files(node.dir), timeout=10, interval=0.002, what="the temp file")
    kids = children_of(node.pid)
    assert len(kids) == 1
    os.kill(kids[0], signal.SIGKILL)
    wait_until(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0, timeout=10)
    assert r.info("persistence")["rdb_last_bgsave_status"] == "err"
    assert not tmp_files(node.dir)
    assert "killed by signal 9" in node.log_tail(20)
    assert r.get("marker") == b"v2"  # the node itself is unaffected
    node.kill()
    node.start()
    assert node.client().get("marker") == b"v1"


def test_node_killed_during_bgsave_restarts_from_previous_snapshot(
    node: DataNodeProcess,
) -> None:
    r = node.client()
    _big_dataset(r)
    r.set("marker", "v1")
    assert r.save()
    r.set("marker", "v2")
    r.bgsave()
    wait_until(lambda: tmp_files(node.dir), timeout=10, interval=0.002, what="the temp file")
    kids = children_of(node.pid)
    assert len(kids) == 1
    node.kill()  # SIGKILL the node while its child writes
    # The child dies with its parent: it must not rename an old snapshot into place later.
    wait_until(lambda: not alive(kids[0]), timeout=10, what="the orphaned child to die")
    node.start()
    r = node.client()
    assert r.get("marker") == b"v1"
    assert r.dbsize() == 150 + 50_000 + 1
    assert not tmp_files(node.dir)


def test_corrupt_snapshot_refuses_to_start(tmp_path: Path) -> None:
    node = start_datanode(tmp_path / "data")
    try:
        r = node.client()
        r.set("k", "v" * 1000)
        assert r.save()
    finally:
        node.kill()
    path = node.dir / "dump.skdb"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = start_datanode(node.dir, wait=False)
    try:
        assert bad.exit_code() != 0
        log = bad.log_tail(20)
        assert str(path) in log and "refusing to start" in log
    finally:
        bad.kill()
    path.write_bytes(bytes(data[:100]))  # truncated
    bad = start_datanode(node.dir, wait=False)
    try:
        assert bad.exit_code() != 0
        assert "truncated" in bad.log_tail(20)
    finally:
        bad.kill()


def test_periodic_snapshot_after_writes(tmp_path: Path) -> None:
    node = start_datanode(tmp_path / "data", "--snapshot-interval", "1")
    try:
        r = node.client()
        path = node.dir / "dump.skdb"
        assert not path.exists()  # no writes, no snapshot
        first = r.lastsave()
        r.set("periodic", "yes")
        wait_until(path.exists, timeout=10, what="the periodic snapshot")
        wait_until(lambda: r.lastsave() > first, timeout=10)
        wait_until(lambda: r.info("persistence")["rdb_changes_since_last_save"] == 0, timeout=10)
        info = read_snapshot(path, Keyspace(), 0)
        assert info.keys == 1
        node.kill()
        node.start()
        assert node.client().get("periodic") == b"yes"
    finally:
        node.kill()


# --------------------------------------------------------------------------- DUMP / RESTORE


def test_dump_restore_round_trip_every_type(node: DataNodeProcess) -> None:
    r = node.client()
    write_sample(r)
    for key in [b"str", b"bin", *COLLECTIONS]:
        payload = dump(r, key)
        assert r.restore(key + b":copy", 0, payload)
        assert r.dump(key + b":copy") == payload
        assert r.type(key + b":copy") == r.type(key)
    assert r.dump("missing") is None
    assert load_payload(dump(r, "str")) == b"hello"


def test_restore_options_and_errors(node: DataNodeProcess) -> None:
    r = node.client()
    r.set("src", "value")
    payload = dump(r, "src")

    with pytest.raises(redis.ResponseError, match="^BUSYKEY Target key name already exists.$"):
        r.restore("src", 0, payload)
    r.set("src", "other")
    assert r.restore("src", 0, payload, replace=True)
    assert r.get("src") == b"value" and r.pttl("src") == -1

    # TTLs: relative ms, ABSTTL as absolute unix ms, 0 = none.
    assert r.restore("rel", 5_000, payload)
    assert 4_000 < r.pttl("rel") <= 5_000
    at = int(time.time() * 1000) + 60_000
    assert r.restore("abs", at, payload, absttl=True)
    assert r.execute_command("PEXPIRETIME", "abs") == at
    # An absolute TTL in the past: OK, but no key (and REPLACE removes the old one).
    assert r.restore("past", 1000, payload, absttl=True)
    assert r.exists("past") == 0
    r.set("old", "x")
    assert r.restore("old", 1000, payload, absttl=True, replace=True)
    assert r.exists("old") == 0

    with pytest.raises(redis.ResponseError, match="^Invalid TTL value, must be >= 0$"):
        r.restore("neg", -1, payload)
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.execute_command("RESTORE", "nan", "abc", payload)
    bad = bytearray(payload)
    bad[1] ^= 1
    with pytest.raises(redis.ResponseError, match="^DUMP payload version or checksum are wrong$"):
        r.restore("bad", 0, bytes(bad))
    with pytest.raises(redis.ResponseError, match="checksum are wrong"):
        r.restore("bad", 0, b"x")
    # A payload of another version (checksum recomputed) is refused as well.
    with pytest.raises(redis.ResponseError, match="checksum are wrong"):
        r.restore("bad", 0, b"\x00abc\x07\x00" + b"\x00" * 8)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("RESTORE", "k", "0", payload, "BOGUS")
    with pytest.raises(redis.ResponseError, match="Invalid IDLETIME"):
        r.execute_command("RESTORE", "k", "0", payload, "IDLETIME", "-1")
    with pytest.raises(redis.ResponseError, match="Invalid FREQ"):
        r.execute_command("RESTORE", "k", "0", payload, "FREQ", "256")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("RESTORE", "k", "0", payload, "IDLETIME", "1", "FREQ", "1")
    assert r.execute_command("RESTORE", "k", "0", payload, "IDLETIME", "10")
    assert r.exists("bad", "neg") == 0
    # BUSYKEY is checked before the payload, as in Redis.
    with pytest.raises(redis.ResponseError, match="BUSYKEY"):
        r.restore("src", 0, b"garbage")


def test_lastsave_and_save(node: DataNodeProcess) -> None:
    r = node.client()
    assert abs(r.lastsave().timestamp() - time.time()) < 60
    r.set("k", "v")
    assert r.save()
    assert (node.dir / "dump.skdb").exists()
    assert r.info("persistence")["rdb_changes_since_last_save"] == 0
