"""Slot transfer between two real data nodes (datanode/transfer.py).

Two nodes run with ``--cluster-enabled yes`` and a two-shard topology: node A's
shard owns slots 0-8191, node B's shard 8192-16383. Tests move slots of A's shard
to B the way the sidecar will: ``SLOTKEEPER IMPORT`` on B, poll
``IMPORT-STATUS`` until done, then the next epoch's topology on B, then on A.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from clusterstate.slots import key_slot
from datanode.codec import EntryDecoder, encode_entry
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.support import LOOPBACK, wait_until

SHARD_A = "a1" * 20
SHARD_B = "b2" * 20
SPLIT = 8192  # A owns [0, SPLIT), B owns [SPLIT, 16384)


# --------------------------------------------------------------------------- helpers


def tag_for(lo: int, hi: int, skip: int = 0) -> str:
    """A hash tag whose slot is in [lo, hi] (the ``skip``-th one found)."""
    i = 0
    while True:
        tag = f"t{i}"
        if lo <= key_slot(tag.encode()) <= hi:
            if skip == 0:
                return tag
            skip -= 1
        i += 1


def slot_of(tag: str) -> int:
    return key_slot(tag.encode())


def _runs(slots: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in sorted(slots):
        if runs and runs[-1][1] == s - 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs


def as_dict(flat: list[Any]) -> dict[str, Any]:
    out = {}
    for k, v in zip(flat[::2], flat[1::2], strict=True):
        out[k.decode() if isinstance(k, bytes) else str(k)] = v.decode() if isinstance(v, bytes) else v
    return out


@dataclass
class Pair:
    a: DataNodeProcess  # source
    b: DataNodeProcess  # target
    a_id: str
    b_id: str
    epoch: int = 0
    moved: frozenset[int] = frozenset()
    replica: tuple[DataNodeProcess, str] | None = None  # a replica of B's shard, if any

    def doc(self, epoch: int, moved: set[int] | frozenset[int]) -> str:
        a_slots = [s for s in range(SPLIT) if s not in moved]
        b_slots = sorted(set(range(SPLIT, 16384)) | set(moved))

        def node(n: DataNodeProcess, nid: str, shard: str) -> dict[str, Any]:
            return {"id": nid, "addr": LOOPBACK, "port": n.port, "admin_port": n.admin_port,
                    "shard": shard, "role": "primary", "state": "ACTIVE", "health": "online"}

        doc: dict[str, Any] = {
            "epoch": epoch,
            "shards": [{"id": SHARD_A, "slots": _runs(a_slots), "primary": self.a_id},
                       {"id": SHARD_B, "slots": _runs(b_slots), "primary": self.b_id}],
            "nodes": [node(self.a, self.a_id, SHARD_A), node(self.b, self.b_id, SHARD_B)],
        }
        if self.replica is not None:
            r, r_id = self.replica
            doc["shards"][1]["replicas"] = [r_id]
            doc["nodes"].append({**node(r, r_id, SHARD_B), "role": "replica", "state": "STANDBY",
                                 "replica_id": 1})
        return json.dumps(doc)

    def apply(self, moved: set[int] | frozenset[int]) -> None:
        """Next epoch with ``moved`` slots in B's shard: target first, then source."""
        self.epoch += 1
        doc = self.doc(self.epoch, moved)
        for n in (self.b, self.a) + ((self.replica[0],) if self.replica else ()):
            with n.admin() as adm:
                assert adm.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", doc) in (b"OK", "OK", True)
        self.moved = frozenset(moved)

    def import_(self, slots: str, *opts: Any, port: int | None = None) -> Any:
        with self.b.admin() as adm:
            return adm.execute_command(
                "SLOTKEEPER", "IMPORT", LOOPBACK, port or self.a.admin_port, self.a_id, slots, *opts
            )

    def status(self, slots: str | None = None) -> dict[str, Any]:
        with self.b.admin() as adm:
            args = ("SLOTKEEPER", "IMPORT-STATUS") + ((slots,) if slots else ())
            return as_dict(adm.execute_command(*args))

    def wait_state(self, state: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            st = self.status()
            if st["state"] == state:
                return st
            assert st["state"] == "running", st
            return {}

        return wait_until(check, timeout=timeout, interval=0.01, what=f"import {state}")

    def marks(self, node: DataNodeProcess, which: str) -> dict[int, str]:
        with node.admin() as adm:
            flat = adm.execute_command("SLOTKEEPER", which)
        return {int(k): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}

    def count(self, node: DataNodeProcess, slot: int) -> int:
        with node.admin() as adm:
            return int(adm.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def fill(node: DataNodeProcess, tag: str, n: int, value_size: int = 16, prefix: str = "k") -> None:
    """``n`` string keys ``{tag}:<prefix><i>`` on the node's client port, MSET-pipelined."""
    r = hiredis.Reader()
    with socket.create_connection((LOOPBACK, node.port), timeout=30) as s:
        sent = 0
        for start in range(0, n, 500):
            args: list[bytes] = [b"MSET"]
            for i in range(start, min(n, start + 500)):
                args += [f"{{{tag}}}:{prefix}{i}".encode(), str(i).encode().rjust(value_size, b"0")]
            s.sendall(b"".join([b"*%d\r\n" % len(args)]
                               + [b"$%d\r\n%b\r\n" % (len(a), a) for a in args]))
            sent += 1
        got = 0
        while got < sent:
            reply = r.gets()
            if reply is False:
                r.feed(s.recv(1 << 16))
                continue
            assert reply == b"OK", reply
            got += 1


def start_pair(tmp_path: Path) -> Pair:
    a = start_datanode(tmp_path / "a", "--cluster-enabled", "yes", wait=False)
    b = start_datanode(tmp_path / "b", "--cluster-enabled", "yes", wait=False)
    for n in (a, b):
        n.wait_ready(n.answers, 20, f"data node on port {n.port}")
    ids = []
    for n in (a, b):
        with n.admin() as adm:
            ids.append(adm.execute_command("SLOTKEEPER", "NODEID").decode())
    pair = Pair(a, b, ids[0], ids[1])
    pair.apply(frozenset())
    return pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = start_pair(tmp_path)
    try:
        yield p
    finally:
        for n in (p.a, p.b):
            n.kill()


def expect_error(fn: Any, *words: str) -> str:
    with pytest.raises(redis.ResponseError) as info:
        fn()
    exc = info.value
    word = {"AskError": "ASK ", "MovedError": "MOVED "}.get(type(exc).__name__, "")
    text = word + str(exc)
    for w in words:
        assert w in text, text
    return text


# --------------------------------------------------------------------------- full move


def test_move_one_slot_all_types_with_ttls(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    k = lambda name: f"{{{tag}}}:{name}"  # noqa: E731
    src = pair.a.client()
    other = f"{{{tag_for(0, SPLIT - 1, skip=1)}}}:other"
    far = int(time.time() * 1000) + 3_600_000
    p = src.pipeline(transaction=False)
    p.set(k("str"), b"v\x00\xffbinary")
    p.set(k("ttl"), b"with ttl", px=3_600_000)
    p.hset(k("hash"), mapping={b"f1": b"v1", b"f2": b"v2", b"": b"empty"})
    p.rpush(k("list"), b"a", b"b", b"c", b"a")
    p.sadd(k("set"), b"x", b"y", b"z")
    p.zadd(k("zset"), {b"m1": 1.5, b"m2": -2.0, b"m3": float("inf")})
    p.hset(k("hash-ttl"), mapping={b"f": b"v"})
    p.pexpireat(k("hash-ttl"), far)
    p.set(other, b"not moved")
    p.execute()
    fill(pair.a, tag, 3000)
    # One key whose TTL has passed but that is still in the keyspace (active expiry off).
    assert src.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    src.set(k("expired"), b"gone", px=1)
    time.sleep(0.02)
    live = 7 + 3000
    assert pair.count(pair.a, slot) == live + 1
    dumps = {key: src.dump(key) for key in [k(n) for n in ("str", "ttl", "hash", "list", "set", "zset", "hash-ttl")]}
    ttl_before = src.pttl(k("ttl"))

    assert pair.import_(str(slot)) == b"OK"
    st = pair.wait_state("done")
    assert st["keys"] == live
    assert st["skipped"] == 0
    assert st["slots"] == str(slot)
    assert st["source"] == pair.a_id
    assert st["bytes"] > 3000 * 16 and st["error"] == ""
    assert isinstance(st["elapsed_ms"], int)

    # Copied, not yet moved: the source refuses writes to the slot and serves reads.
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}
    assert pair.marks(pair.b, "IMPORTING") == {slot: pair.a_id}
    with pytest.raises(redis.exceptions.TryAgainError):
        src.set(k("str"), b"new")
    with pytest.raises(redis.exceptions.TryAgainError):
        src.set(k("brand-new"), b"new")
    assert src.get(k("str")) == b"v\x00\xffbinary"
    assert src.hgetall(k("hash"))[b"f1"] == b"v1"
    expect_error(lambda: src.get(k("missing")), "ASK", str(slot), f"{LOOPBACK}:{pair.b.port}")
    src.set(other, b"other slots take writes")
    # The target serves the importing slot only after ASKING.
    dst = pair.b.client(single_connection_client=True)
    expect_error(lambda: dst.get(k("str")), "MOVED", str(slot), f"{LOOPBACK}:{pair.a.port}")
    dst.execute_command("ASKING")
    assert dst.get(k("str")) == b"v\x00\xffbinary"

    pair.apply({slot})
    assert pair.marks(pair.a, "MIGRATING") == {}
    assert pair.marks(pair.b, "IMPORTING") == {}
    for key, payload in dumps.items():
        if key != k("set"):  # a set's DUMP follows its (per-process) iteration order
            assert dst.dump(key) == payload, key
    assert dst.smembers(k("set")) == {b"x", b"y", b"z"}
    assert dst.zrange(k("zset"), 0, -1, withscores=True) == [
        (b"m2", -2.0), (b"m1", 1.5), (b"m3", float("inf"))]
    assert 0 < dst.pttl(k("ttl")) <= ttl_before
    assert dst.pexpiretime(k("hash-ttl")) == far
    assert dst.exists(k("expired")) == 0
    assert dst.get(k("k2999")) == b"2999".rjust(16, b"0")
    assert dst.set(k("str"), b"written on the new owner")
    expect_error(lambda: src.get(k("str")), "MOVED", str(slot), f"{LOOPBACK}:{pair.b.port}")
    wait_until(lambda: pair.count(pair.a, slot) == 0, timeout=10, what="source drops the slot")
    assert src.get(other) == b"other slots take writes"
    assert pair.count(pair.b, slot) == live


def test_status_counts_keys_and_exact_bytes_while_running(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    n = 20_000
    fill(pair.a, tag, n)
    # Every record is a string entry without TTL: 14-byte header, key, value; 1 end byte.
    expected_bytes = sum(14 + len(f"{{{tag}}}:k{i}") + 16 for i in range(n)) + 1
    assert pair.import_(str(slot), "BATCH", 5) == b"OK"
    seen: list[dict[str, Any]] = []

    def progressed() -> bool:
        st = pair.status()
        seen.append(st)
        return 0 < st["keys"] < n and st["state"] == "running"

    wait_until(progressed, timeout=20, interval=0.005, what="a running import with progress")
    st = pair.wait_state("done", timeout=60)
    assert st["keys"] == n and st["bytes"] == expected_bytes
    assert st["elapsed_ms"] >= seen[-1]["elapsed_ms"]
    keys = [s["keys"] for s in seen]
    assert keys == sorted(keys)
    assert pair.status(str(slot))["state"] == "done"
    assert pair.status(str(slot + 1))["state"] == "none"


def test_range_of_slots(pair: Pair) -> None:
    tags = [tag_for(100, 400, skip=i) for i in range(12)]
    slots = {slot_of(t) for t in tags}
    for i, t in enumerate(tags):
        fill(pair.a, t, 50 + i)
    total = sum(50 + i for i in range(12))
    lo, hi = min(slots), max(slots)
    spec = f"{lo}-{hi}"  # also covers empty slots in between
    assert pair.import_(spec) == b"OK"
    st = pair.wait_state("done")
    assert st["keys"] == total
    assert set(pair.marks(pair.a, "MIGRATING")) == set(range(lo, hi + 1))
    pair.apply(set(range(lo, hi + 1)))
    dst = pair.b.client()
    for i, t in enumerate(tags):
        assert dst.get(f"{{{t}}}:k{49 + i}") == str(49 + i).encode().rjust(16, b"0")
    wait_until(lambda: all(pair.count(pair.a, s) == 0 for s in slots), timeout=10,
               what="source drops the moved slots")


# --------------------------------------------------------------------------- aborts


def test_cancel_mid_transfer(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50_000)
    assert pair.import_(str(slot), "BATCH", 2) == b"OK"
    wait_until(lambda: pair.status()["keys"] > 100, timeout=20, interval=0.005,
               what="import under way")
    with pair.b.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL") == 1
        assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL") == 0  # idempotent
    st = pair.status()
    assert st["state"] == "cancelled" and 0 < st["keys"] < 50_000
    assert pair.marks(pair.b, "IMPORTING") == {}
    wait_until(lambda: pair.count(pair.b, slot) == 0, timeout=10, what="target drops the keys")
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10,
               what="source unmarks the slot")
    src = pair.a.client()
    assert src.set(f"{{{tag}}}:k1", b"writable again")
    assert pair.count(pair.a, slot) == 50_000


def test_cancel_after_done_reopens_the_source(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 500)
    pair.import_(str(slot))
    pair.wait_state("done")
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}
    with pair.b.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL", str(slot)) == 1
    assert pair.status()["state"] == "cancelled"
    # The pull connection is gone after DONE: the source learns it from MIGRATE-ABORT.
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10,
               what="source unmarks after MIGRATE-ABORT")
    wait_until(lambda: pair.count(pair.b, slot) == 0, timeout=10, what="target drops the keys")
    assert pair.a.client().set(f"{{{tag}}}:k1", b"ok")


def test_source_killed_mid_transfer(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50_000)
    assert pair.import_(str(slot), "BATCH", 2) == b"OK"
    wait_until(lambda: pair.status()["keys"] > 100, timeout=20, interval=0.005,
               what="import under way")
    pair.a.kill()
    st = pair.wait_state("failed", timeout=15)
    assert st["error"], st
    assert pair.marks(pair.b, "IMPORTING") == {}
    wait_until(lambda: pair.count(pair.b, slot) == 0, timeout=10, what="target drops the keys")


def test_target_killed_mid_transfer_source_resumes_writes(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50_000)
    assert pair.import_(str(slot), "BATCH", 2) == b"OK"
    wait_until(lambda: pair.status()["keys"] > 100, timeout=20, interval=0.005,
               what="import under way")
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}
    pair.b.kill()
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10,
               what="source unmarks the slot")
    src = pair.a.client()
    assert src.set(f"{{{tag}}}:k1", b"writable again")
    assert pair.count(pair.a, slot) == 50_000


def _pull_connection_ids(node: DataNodeProcess) -> list[int]:
    with node.admin() as adm:
        text = adm.execute_command("CLIENT", "LIST").decode()
    return [int(line.split("id=")[1].split()[0]) for line in text.splitlines()
            if " name=slotkeeper-pull " in line]


def test_pull_connection_killed_then_retry_is_idempotent(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    n = 30_000
    fill(pair.a, tag, n)
    assert pair.import_(str(slot), "BATCH", 2) == b"OK"
    # The same import again while it runs: accepted, nothing restarts.
    assert pair.import_(str(slot), "BATCH", 2) == b"OK"
    # A different import overlapping it is refused.
    other = tag_for(0, SPLIT - 1, skip=1)
    expect_error(lambda: pair.import_(f"{slot},{slot_of(other)}"), "being imported")
    wait_until(lambda: pair.status()["keys"] > 100, timeout=20, interval=0.005,
               what="import under way")
    ids = wait_until(lambda: _pull_connection_ids(pair.a), timeout=5, what="pull connection")
    assert len(ids) == 1
    with pair.a.admin() as adm:
        assert adm.execute_command("CLIENT", "KILL", "ID", ids[0]) == 1
    # Source: the slot is unmarked and takes writes again.
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10,
               what="source unmarks the slot")
    src = pair.a.client()
    assert src.set(f"{{{tag}}}:k0", b"changed")
    # Target: failed, nothing kept.
    st = pair.wait_state("failed", timeout=10)
    assert st["error"]
    wait_until(lambda: pair.count(pair.b, slot) == 0, timeout=10, what="target drops the keys")

    # Retry: from scratch, and the copy has the write made in between.
    assert pair.import_(str(slot)) == b"OK"
    st = pair.wait_state("done", timeout=30)
    assert st["keys"] == n
    pair.apply({slot})
    dst = pair.b.client()
    assert dst.get(f"{{{tag}}}:k0") == b"changed"
    assert pair.count(pair.b, slot) == n


def test_retry_after_connect_failure_and_reimport_starts_clean(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 1000)
    closed = socket.socket()
    closed.bind((LOOPBACK, 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    assert pair.import_(str(slot), port=dead_port) == b"OK"
    st = pair.wait_state("failed")
    assert "cannot connect" in st["error"]
    assert pair.marks(pair.b, "IMPORTING") == {}
    pair.import_(str(slot))
    assert pair.wait_state("done")["keys"] == 1000
    # A finished import re-issued runs again and ends with the same keys (no doubles,
    # nothing left over from the first copy).
    pair.import_(str(slot))
    assert pair.wait_state("done")["keys"] == 1000
    assert pair.count(pair.b, slot) == 1000
    with pair.b.admin() as adm:  # the superseded first copy is not cancelled twice
        assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL") == 1


# --------------------------------------------------------------------------- source side


def _export(node: DataNodeProcess, slots: str, target: str, *extra: bytes,
            rcvbuf: int = 0) -> socket.socket:
    s = socket.socket()
    if rcvbuf:  # before connecting, so the receive window stays small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((LOOPBACK, node.admin_port))
    args = [b"SLOTKEEPER", b"EXPORT", slots.encode(), target.encode(), *extra]
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args))
    return s


def test_export_stream_format(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 2500)
    src = pair.a.client()
    src.hset(f"{{{tag}}}:h", mapping={b"a": b"1"})
    src.pexpireat(f"{{{tag}}}:h", 4_000_000_000_000)
    s = _export(pair.a, str(slot), pair.b_id, b"BATCH", b"1000")
    reader = hiredis.Reader()
    decoder = EntryDecoder()
    bulks: list[bytes] = []
    entries = []
    while True:
        reply = reader.gets()
        if reply is False:
            data = s.recv(1 << 16)
            assert data
            reader.feed(data)
            continue
        if decoder.done:
            done = reply
            break
        bulks.append(reply)
        entries += decoder.feed(reply)
    s.close()
    assert len(entries) == 2501 and len(bulks) == 3  # 1000 + 1000 + 501 keys, END in the last
    assert all(b[0] in (1, 2) for b in bulks)  # each bulk starts with a whole record
    assert bulks[-1].endswith(b"\xff") and decoder.pending == 0
    assert done == b"DONE 2501 %d" % sum(map(len, bulks))
    got = {k: (v, at) for k, v, at in entries}
    assert got[f"{{{tag}}}:h".encode()] == ({b"a": b"1"}, 4_000_000_000_000)
    assert got[f"{{{tag}}}:k7".encode()] == (b"7".rjust(16, b"0"), None)
    assert b"".join(bulks) == b"".join(encode_entry(*e) for e in entries) + b"\xff"
    # After DONE the slot stays migrating although the connection closed.
    time.sleep(0.1)
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}
    with pair.a.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "MIGRATE-ABORT", str(slot), "cc" * 20) == 0
        assert adm.execute_command("SLOTKEEPER", "MIGRATE-ABORT", str(slot), pair.b_id) == 1
    assert pair.marks(pair.a, "MIGRATING") == {}
    assert src.set(f"{{{tag}}}:k1", b"x")


def test_export_connection_closed_early_unmarks(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 200_000)  # ~8 MB: more than the socket buffers hold
    s = _export(pair.a, str(slot), pair.b_id, b"BATCH", b"1", rcvbuf=4096)
    assert s.recv(100)  # streaming, and we stop reading: the source waits on flow control
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}
    src = pair.a.client()
    # A write waits while the slot is being copied (its connection held) ...
    key = f"{{{tag}}}:k1".encode()
    held = socket.create_connection((LOOPBACK, pair.a.port), timeout=0.3)
    held.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$1\r\nx\r\n" % (len(key), key))
    with pytest.raises(TimeoutError):
        held.recv(100)
    assert src.get(key) == b"1".rjust(16, b"0")  # reads are served
    # Other clients are served while the exporter waits.
    t0 = time.monotonic()
    assert src.ping()
    assert time.monotonic() - t0 < 0.5
    s.close()
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10,
               what="source unmarks after the connection closed")
    held.settimeout(5)
    assert held.recv(100) == b"+OK\r\n"  # the held write ran the moment writes resumed
    held.close()
    assert src.get(key) == b"x"
    assert src.set(key, b"z")


def test_export_retry_supersedes_a_stalled_export(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50_000)
    stalled = _export(pair.a, str(slot), pair.b_id, b"BATCH", b"1", rcvbuf=4096)
    assert stalled.recv(100)
    retry = _export(pair.a, str(slot), pair.b_id)
    reader = hiredis.Reader()
    decoder = EntryDecoder()
    entries = 0
    while True:
        reply = reader.gets()
        if reply is False:
            reader.feed(retry.recv(1 << 16))
            continue
        assert not isinstance(reply, hiredis.ReplyError), reply
        if decoder.done:
            assert reply.startswith(b"DONE 50000 ")
            break
        entries += len(decoder.feed(reply))
    assert entries == 50_000
    # The stalled stream was cut (its socket is closed by the source) ...
    stalled.settimeout(10)
    try:
        while stalled.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass  # aborted rather than closed: it was not reading
    stalled.close()
    retry.close()
    # ... without unmarking the slot the retry holds.
    time.sleep(0.1)
    assert pair.marks(pair.a, "MIGRATING") == {slot: pair.b_id}


def test_migrate_abort_stops_a_running_export(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50_000)
    pair.import_(str(slot), "BATCH", 2)
    wait_until(lambda: pair.status()["keys"] > 100, timeout=20, interval=0.005,
               what="import under way")
    with pair.a.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "MIGRATE-ABORT", str(slot)) == 1
    st = pair.wait_state("failed", timeout=10)
    assert "abort" in st["error"]
    wait_until(lambda: pair.count(pair.b, slot) == 0, timeout=10, what="target drops the keys")
    assert pair.marks(pair.b, "IMPORTING") == {}


def test_refusals(pair: Pair) -> None:
    mine_a = tag_for(0, SPLIT - 1)
    mine_b = tag_for(SPLIT, 16383)
    with pair.a.admin() as adm:
        # EXPORT of a slot the node does not serve; to itself; bad ranges; bad id.
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", str(slot_of(mine_b)), pair.b_id),
                     "not served by this node")
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", "1", pair.a_id), "itself")
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", "1-x", pair.b_id), "ranges")
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", "9-3", pair.b_id), "ranges")
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", "1", "nope"), "node id")
        # DROPSLOTS of an owned slot.
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "DROPSLOTS", str(slot_of(mine_a))),
                     "served by this node")
    # IMPORT of a slot the target's shard owns.
    expect_error(lambda: pair.import_(str(slot_of(mine_b))), "already served")
    # Only on the admin port.
    with pair.b.client() as c:
        expect_error(lambda: c.execute_command("SLOTKEEPER", "IMPORTING"), "admin port")
        expect_error(lambda: c.execute_command("SLOTKEEPER", "EXPORT", "1", pair.b_id), "admin port")
    # Exporting to another node while the slot is migrating to B.
    slot = slot_of(mine_a)
    pair.import_(str(slot))
    pair.wait_state("done")
    with pair.a.admin() as adm:
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", str(slot), "dd" * 20),
                     "migrating to")
    with pair.b.admin() as adm:
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "DROPSLOTS", str(slot)),
                     "being imported")
    assert pair.status()["state"] == "done"


def test_dropslots_deletes_foreign_keys_in_background(tmp_path: Path, pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 5000)
    with pair.a.client() as c:
        assert c.save()
    # A third node boots from A's snapshot: it holds keys of a slot it does not serve.
    (tmp_path / "c").mkdir()
    shutil.copy(pair.a.dir / "dump.skdb", tmp_path / "c" / "dump.skdb")
    c_node = start_datanode(tmp_path / "c", "--cluster-enabled", "yes")
    try:
        with c_node.admin() as adm:
            adm.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", pair.doc(pair.epoch, pair.moved))
            assert adm.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 5000
            assert adm.execute_command("SLOTKEEPER", "DROPSLOTS", f"{slot},{slot + 1}") == 5000
            wait_until(lambda: adm.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0,
                       timeout=10, what="slot dropped")
            assert adm.execute_command("DBSIZE") == 0
    finally:
        c_node.kill()


def test_targets_replica_gets_the_imported_keys_and_the_drops(tmp_path: Path, pair: Pair) -> None:
    r = start_datanode(tmp_path / "r", "--cluster-enabled", "yes")
    try:
        with r.admin() as adm:
            r_id = adm.execute_command("SLOTKEEPER", "NODEID").decode()
        pair.replica = (r, r_id)
        pair.apply(pair.moved)
        with r.admin() as adm:
            adm.execute_command("SLOTKEEPER", "REPLICATE", LOOPBACK, pair.b.admin_port,
                                pair.epoch, 1)

        def digest(n: DataNodeProcess) -> list[Any]:
            with n.admin() as adm:
                return list(adm.execute_command("SLOTKEEPER", "DIGEST")[:2])

        def in_sync() -> bool:
            return digest(pair.b) == digest(r)

        pair.b.client().set(f"{{{tag_for(SPLIT, 16383)}}}:own", b"b's own key")
        wait_until(lambda: in_sync() and digest(r)[1] == 1, timeout=20, what="replica in sync")
        tag = tag_for(0, SPLIT - 1)
        slot = slot_of(tag)
        fill(pair.a, tag, 3000)
        with pair.a.client() as c:
            c.hset(f"{{{tag}}}:h", mapping={b"f": b"v"})
            c.pexpire(f"{{{tag}}}:h", 600_000)
        pair.import_(str(slot))
        assert pair.wait_state("done")["keys"] == 3001
        wait_until(lambda: in_sync() and pair.count(r, slot) == 3001, timeout=20,
                   what="replica holds the imported keys")
        with pair.b.admin() as adm:
            assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL") == 1
        wait_until(lambda: pair.count(pair.b, slot) == 0 and in_sync() and pair.count(r, slot) == 0,
                   timeout=20, what="replica drops them with its primary")
        assert digest(r)[1] == 1
    finally:
        r.kill()


# --------------------------------------------------------------------------- a real client


def test_redis_cluster_client_during_move(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 1000, prefix="seed")
    rc = RedisCluster(startup_nodes=[ClusterNode(LOOPBACK, pair.a.port)], socket_timeout=5)
    acked: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                key = f"{{{tag}}}:w{i}"
                assert rc.set(key, i)
                acked[key] = i
                probe = f"{{{tag}}}:w{i // 2}"
                assert rc.get(probe) == str(acked[probe]).encode()
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until(lambda: len(acked) > 200 or errors, timeout=10, what="writes before the move")
        pair.import_(str(slot))
        pair.wait_state("done")
        pair.apply({slot})
        n_at_move = len(acked)
        wait_until(lambda: len(acked) > n_at_move + 200 or errors, timeout=10,
                   what="writes after the move")
    finally:
        stop.set()
        t.join(10)
        rc.close()
    assert not errors, errors
    dst = pair.b.client()
    keys = list(acked)
    values = dst.mget(keys)
    assert all(v == str(acked[k]).encode() for k, v in zip(keys, values, strict=True))
    wait_until(lambda: pair.count(pair.a, slot) == 0, timeout=10, what="source drops the slot")
    assert pair.count(pair.b, slot) == 1000 + len(acked)


def test_handoff_sends_writes_to_the_target_before_the_new_topology(pair: Pair) -> None:
    """IMPORT-HANDOFF on the target then HANDOFF on the source (copy complete and
    recorded): the source answers MOVED to the target, reads and writes, the
    target serves the slot, and a cluster client's writes land on the target while
    the old topology still stands; the topology then takes over."""
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 300)
    src, dst = pair.a.client(), pair.b.client()
    # not before the copy is complete
    expect_error(lambda: pair.a.admin().execute_command(
        "SLOTKEEPER", "HANDOFF", str(slot), pair.b_id), "not migrating")
    expect_error(lambda: pair.b.admin().execute_command(
        "SLOTKEEPER", "IMPORT-HANDOFF", str(slot)), "no completed import")
    pair.import_(str(slot))
    # IMPORT-STATUS … WAIT answers when the import ends (the copy is short)
    with pair.b.admin() as adm:
        st = as_dict(adm.execute_command("SLOTKEEPER", "IMPORT-STATUS", str(slot), "WAIT", 10000))
    assert st["state"] == "done", st
    t0 = time.monotonic()  # a write is held (1 s), then answered TRYAGAIN
    expect_error(lambda: src.set(f"{{{tag}}}:k1", "x"), "being migrated")
    assert 0.8 < time.monotonic() - t0 < 5
    expect_error(lambda: dst.get(f"{{{tag}}}:k1"), "MOVED", str(slot))  # not yet taken over
    with pair.b.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "IMPORT-HANDOFF", str(slot)) == 1
    assert dst.get(f"{{{tag}}}:k1") == b"1".rjust(16, b"0")
    key = f"{{{tag}}}:k9".encode()
    held = socket.create_connection((LOOPBACK, pair.a.port), timeout=0.2)
    held.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$1\r\nx\r\n" % (len(key), key))
    with pytest.raises(TimeoutError):
        held.recv(100)  # held
    held.settimeout(5)
    with pair.a.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "HANDOFF", str(slot), pair.b_id) == 1
        assert adm.execute_command("SLOTKEEPER", "HANDOFF", str(slot), pair.b_id) == 0
        expect_error(lambda: adm.execute_command("SLOTKEEPER", "EXPORT", str(slot), pair.b_id),
                     "handed off")
    # the write held meanwhile is answered at the handoff: MOVED to the target
    assert held.recv(200) == b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, pair.b.port)
    held.close()
    moved = expect_error(lambda: src.set(f"{{{tag}}}:k1", "x"), "MOVED", str(slot))
    assert f":{pair.b.port}" in moved
    expect_error(lambda: src.get(f"{{{tag}}}:k1"), "MOVED", str(slot))
    # a cluster client that knows only the source follows MOVED to the target
    rc = RedisCluster(startup_nodes=[ClusterNode(LOOPBACK, pair.a.port)], socket_timeout=5)
    try:
        assert rc.set(f"{{{tag}}}:k1", "new")
        assert rc.get(f"{{{tag}}}:k1") == b"new"
        assert rc.get(f"{{{tag}}}:k2") == b"2".rjust(16, b"0")
    finally:
        rc.close()
    assert dst.get(f"{{{tag}}}:k1") == b"new"
    # the source measured the window in which writes were refused: mark → handoff
    with pair.a.admin() as adm:
        (window,) = adm.execute_command("SLOTKEEPER", "TRANSFER-WINDOWS", "RESET")
        assert 0 < window < 60_000_000
        assert adm.execute_command("SLOTKEEPER", "TRANSFER-WINDOWS") == []
    # the topology that moves the slot ends both marks; the source drops the keys
    pair.apply({slot})
    with pair.a.admin() as adm:  # (the handoff already ended this move's window)
        assert adm.execute_command("SLOTKEEPER", "TRANSFER-WINDOWS") == []
    expect_error(lambda: src.get(f"{{{tag}}}:k1"), "MOVED", str(slot))
    assert dst.get(f"{{{tag}}}:k1") == b"new"
    assert pair.marks(pair.a, "MIGRATING") == {} and pair.marks(pair.b, "IMPORTING") == {}
    wait_until(lambda: pair.count(pair.a, slot) == 0, timeout=10, what="source drops the slot")


def test_import_takeover_serves_the_slot_once_complete(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 50)
    dst = pair.b.client()
    pair.import_(str(slot), "BATCH", 10, "TAKEOVER")
    pair.wait_state("done")
    assert dst.get(f"{{{tag}}}:k7") == b"7".rjust(16, b"0")  # served without ASKING
    assert dst.set(f"{{{tag}}}:k7", "b")
    with pair.b.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "IMPORT-HANDOFF", str(slot)) == 0  # already
        assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL", str(slot)) == 1
    expect_error(lambda: dst.get(f"{{{tag}}}:k7"), "MOVED", str(slot))  # a cancel ends it
    # the source's window ended when the cancel unmarked the slot (MIGRATE-ABORT)
    wait_until(lambda: pair.marks(pair.a, "MIGRATING") == {}, timeout=10, what="unmarked")
    with pair.a.admin() as adm:
        assert len(adm.execute_command("SLOTKEEPER", "TRANSFER-WINDOWS")) == 1


def test_migrate_abort_ends_a_handoff(pair: Pair) -> None:
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 10)
    pair.import_(str(slot))
    pair.wait_state("done")
    with pair.a.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "HANDOFF", str(slot), pair.b_id) == 1
    expect_error(lambda: pair.a.client().set(f"{{{tag}}}:k1", "x"), "MOVED")
    with pair.a.admin() as adm:
        assert adm.execute_command("SLOTKEEPER", "MIGRATE-ABORT", str(slot)) == 1
    assert pair.a.client().set(f"{{{tag}}}:k1", "x")


def test_import_status_wait_times_out_on_a_running_import(pair: Pair) -> None:
    """WAIT on an import that does not end in time answers its running status."""
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    fill(pair.a, tag, 10)
    with socket.socket() as dead:  # a source that accepts and never answers
        dead.bind((LOOPBACK, 0))
        dead.listen(1)
        pair.import_(str(slot), "TIMEOUT", 5000, port=dead.getsockname()[1])
        with pair.b.admin() as adm:
            t0 = time.monotonic()
            st = as_dict(adm.execute_command("SLOTKEEPER", "IMPORT-STATUS", "WAIT", 300))
            took = time.monotonic() - t0
        assert st["state"] == "running", st
        assert 0.25 <= took < 5, took
        with pair.b.admin() as adm:
            assert adm.execute_command("SLOTKEEPER", "IMPORT-CANCEL") == 1
        assert pair.status()["state"] == "cancelled"


# --------------------------------------------------------------------------- in-process
#
# One DataNode object on the test's event loop: the exporter against a fake
# transport, the importer against a fake source speaking the stream by hand.


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


class FakeConn:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.closing = False

    def kill(self) -> None:
        self.closing = True
        self.transport.abort()


def in_process_node(tmp_path: Path, owns_low: bool, clock: Any = None) -> Any:
    """A DataNode whose shard owns [0, SPLIT) (``owns_low``) or [SPLIT, 16384)."""
    from clusterstate.topology import Topology
    from datanode.config import Settings
    from datanode.server import DataNode

    node = DataNode(Settings(dir=str(tmp_path / "node"), cluster_enabled=True),
                    **({"clock": clock} if clock else {}))
    peer = "cc" * 20
    a_id, b_id = (node.node_id, peer) if owns_low else (peer, node.node_id)

    def rec(nid: str, port: int, shard: str) -> dict[str, Any]:
        return {"id": nid, "addr": LOOPBACK, "port": port, "admin_port": port + 1,
                "shard": shard, "role": "primary", "state": "ACTIVE", "health": "online"}

    node.set_topology(Topology.from_dict({
        "epoch": 1,
        "shards": [{"id": SHARD_A, "slots": [[0, SPLIT - 1]], "primary": a_id},
                   {"id": SHARD_B, "slots": [[SPLIT, 16383]], "primary": b_id}],
        "nodes": [rec(a_id, 7000, SHARD_A), rec(b_id, 7002, SHARD_B)],
    }))
    return node


def parse_stream(data: bytes, complete: bool = True) -> tuple[list[Any], list[bytes], Any]:
    """(entries, bulks, final reply) of an export stream; with ``complete`` False a
    prefix is fine (final reply None)."""
    reader = hiredis.Reader()
    reader.feed(data)
    decoder = EntryDecoder()
    entries: list[Any] = []
    bulks: list[bytes] = []
    while True:
        reply = reader.gets()
        if reply is False:
            assert not complete, "stream ended early"
            return entries, bulks, None
        if decoder.done or isinstance(reply, hiredis.ReplyError):
            return entries, bulks, reply
        bulks.append(reply)
        entries += decoder.feed(reply)


async def test_export_skips_keys_that_expire_or_vanish_mid_stream(tmp_path: Path) -> None:
    import asyncio

    from datanode.transfer import transfers_of

    t0 = 1_000_000
    now = [t0]
    node = in_process_node(tmp_path, owns_low=True, clock=lambda: now[0])
    tag = tag_for(0, SPLIT - 1)
    slot = slot_of(tag)
    ks = node.ks
    ttl: dict[bytes, int] = {}
    for i in range(1000):
        key = f"{{{tag}}}:k{i:04d}".encode()
        ks.set(key, b"v%d" % i)
        if i % 10 == 0:
            ttl[key] = t0 + 5000 + i
            ks.set_expire(key, ttl[key])
    dead = f"{{{tag}}}:dead".encode()
    ks.set(dead, b"x")
    ks.set_expire(dead, t0 - 1)  # already expired, still stored: never sent
    names = list(ks.slots[slot])
    conn = FakeConn()
    transfers_of(node).start_export(conn, (slot,), "dd" * 20, 100)  # type: ignore[arg-type]
    assert node.migrating == {slot: "dd" * 20}
    for _ in range(3):
        await asyncio.sleep(0)  # one step of the exporter: one batch
    prefix, _, _ = parse_stream(bytes(conn.transport.data), complete=False)
    assert 0 < len(prefix) <= 300
    vanished = set(names[-300:])  # deleted while the export runs
    for key in vanished:
        ks.delete(key)
    now[0] = t0 + 5500  # TTL keys with i <= 500 have expired now
    for _ in range(100):
        await asyncio.sleep(0)
    entries, bulks, done = parse_stream(bytes(conn.transport.data))
    sent = [k for k, _, _ in entries]
    n = len(prefix)
    expected = names[:n] + [k for k in names[n:]
                            if k not in vanished and not (k in ttl and ttl[k] <= now[0])]
    assert sent == expected
    assert dead not in sent
    assert all(v == b"v%d" % int(k.rsplit(b"k", 1)[1]) and at == ttl.get(k) for k, v, at in entries)
    assert done == b"DONE %d %d" % (len(entries), sum(map(len, bulks)))
    assert node.migrating == {slot: "dd" * 20}  # stays until a topology or MIGRATE-ABORT


class FakeSource:
    """A source that answers the pull connection's EXPORT with a given byte string
    (nothing if None) and records every command it gets, MIGRATE-ABORT included."""

    def __init__(self, stream: bytes | None, close_after: bool = False) -> None:
        self.stream = stream
        self.close_after = close_after
        self.commands: list[list[bytes]] = []
        self.port = 0

    async def __aenter__(self) -> FakeSource:
        import asyncio

        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: Any, writer: Any) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (cmd := parser.gets()) is not False:
                self.commands.append(cmd)
                word = cmd[1].upper() if len(cmd) > 1 else cmd[0].upper()
                if word == b"SETNAME":
                    writer.write(b"+OK\r\n")
                elif word == b"EXPORT" and self.stream is not None:
                    writer.write(self.stream)
                    if self.close_after:
                        await writer.drain()
                        writer.close()
                        return
                elif word == b"MIGRATE-ABORT":
                    writer.write(b":1\r\n")
        writer.close()


def stream_of(entries: Sequence[tuple[bytes, bytes, int | None]], done: bytes | None = None) -> bytes:
    from datanode.codec import END

    payload = b"".join(encode_entry(*e) for e in entries) + END
    if done is None:
        done = b"DONE %d %d" % (len(entries), len(payload))
    return b"$%d\r\n%b\r\n+%b\r\n" % (len(payload), payload, done)


class FakeReplication:
    """Stands in for the primary's replication hooks (``node.repl``): records the stream."""

    def __init__(self) -> None:
        self.stream: list[list[bytes]] = []

    def gates_writes(self) -> bool:
        return False

    def propagate(self, cmds: list[list[bytes]]) -> None:
        self.stream += cmds


async def run_import(
    tmp_path: Path, stream: bytes | None, *, timeout: float = 30.0, close_after: bool = False,
    prepare: Any = None,
) -> tuple[Any, Any, FakeSource, int]:
    """Import one slot of A's shard from a fake source into an in-process node of B's."""
    import asyncio

    from datanode.transfer import transfers_of

    node = in_process_node(tmp_path, owns_low=False)
    slot = slot_of(tag_for(0, SPLIT - 1))
    if prepare is not None:
        prepare(node)
    async with FakeSource(stream, close_after) as src:
        t = transfers_of(node)
        assert t.start_import(LOOPBACK, src.port, "cc" * 20, (slot,), 7, timeout)
        assert node.importing == {slot: "cc" * 20}
        for _ in range(500):
            st = dict(t.status(None))
            if st[b"state"] != b"running":
                break
            await asyncio.sleep(0.01)
        for _ in range(50):  # let the background drop and the MIGRATE-ABORT finish
            await asyncio.sleep(0.01)
    return node, st, src, slot


async def test_import_skips_entries_expired_in_flight(tmp_path: Path) -> None:
    tag = tag_for(0, SPLIT - 1)
    now = int(time.time() * 1000)
    entries = [(f"{{{tag}}}:live".encode(), b"1", None),
               (f"{{{tag}}}:ttl".encode(), b"2", now + 60_000),
               (f"{{{tag}}}:late".encode(), b"3", now - 5)]
    node, st, src, slot = await run_import(tmp_path, stream_of(entries))
    assert st[b"state"] == b"done", st
    assert (st[b"keys"], st[b"skipped"]) == (2, 1)
    assert sorted(node.ks.slots[slot]) == sorted(e[0] for e in entries[:2])
    assert node.ks.expire_at(entries[1][0]) == now + 60_000
    assert node.importing == {slot: "cc" * 20}  # until a topology makes the slot ours
    assert src.commands[0] == [b"CLIENT", b"SETNAME", b"slotkeeper-pull"]
    assert src.commands[1] == [b"SLOTKEEPER", b"EXPORT", str(slot).encode(),
                               node.node_id.encode(), b"BATCH", b"7",
                               b"EPOCH", str(node.view.topology.epoch).encode()]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("foreign key", "slot not imported"),
        ("count mismatch", "source sent 5 keys"),
        ("source error", "source: ERR boom"),
        ("garbage", "unknown record type"),
        ("eof", "closed the connection before DONE"),
        ("silence", "no data from the source"),
    ],
)
async def test_import_fails_cleanly(tmp_path: Path, case: str, error: str) -> None:
    tag = tag_for(0, SPLIT - 1)
    good = [(f"{{{tag}}}:k{i}".encode(), b"v", None) for i in range(20)]
    stream: bytes | None = {
        "foreign key": stream_of(good + [(f"{{{tag_for(SPLIT, 16383)}}}:x".encode(), b"v", None)]),
        "count mismatch": stream_of(good, done=b"DONE 5 99"),
        "source error": b"-ERR boom\r\n",
        "garbage": b"$3\r\nxyz\r\n",
        "eof": stream_of(good)[:-30],
        "silence": None,
    }[case]
    node, st, src, slot = await run_import(tmp_path, stream, timeout=0.3, close_after=case == "eof")
    assert st[b"state"] == b"failed", st
    assert error in st[b"error"].decode(), st
    assert node.importing == {}
    assert node.ks.count_in_slot(slot) == 0  # what arrived before the fault is dropped
    assert [b"SLOTKEEPER", b"MIGRATE-ABORT", str(slot).encode(), node.node_id.encode()] in src.commands


async def test_import_replicates_to_the_targets_replicas(tmp_path: Path) -> None:
    from datanode.commands.persistence import dump_payload

    tag = tag_for(0, SPLIT - 1)
    at = int(time.time() * 1000) + 60_000
    entries = [(f"{{{tag}}}:a".encode(), b"1", None), (f"{{{tag}}}:b".encode(), b"2", at)]
    repl = FakeReplication()

    def prepare(node: Any) -> None:
        node.ks.set(f"{{{tag}}}:stale".encode(), b"left from an earlier attempt")
        node.repl = repl

    node, st, _, slot = await run_import(tmp_path, stream_of(entries), prepare=prepare)
    assert st[b"state"] == b"done", st
    assert repl.stream == [
        [b"DEL", f"{{{tag}}}:stale".encode()],  # the retry starts clean, on replicas too
        [b"RESTORE", entries[0][0], b"0", dump_payload(b"1"), b"REPLACE", b"ABSTTL"],
        [b"RESTORE", entries[1][0], b"%d" % at, dump_payload(b"2"), b"REPLACE", b"ABSTTL"],
    ]
    assert sorted(node.ks.slots[slot]) == sorted(e[0] for e in entries)


async def test_failed_import_replicates_its_drops(tmp_path: Path) -> None:
    tag = tag_for(0, SPLIT - 1)
    entries = [(f"{{{tag}}}:k{i}".encode(), b"v", None) for i in range(1200)]
    repl = FakeReplication()
    node, st, _, slot = await run_import(
        tmp_path, stream_of(entries, done=b"DONE 1 1"), prepare=lambda n: setattr(n, "repl", repl)
    )
    assert st[b"state"] == b"failed", st
    assert node.ks.count_in_slot(slot) == 0
    restored = {c[1] for c in repl.stream if c[0] == b"RESTORE"}
    deleted = {c[1] for c in repl.stream if c[0] == b"DEL"}
    assert restored == deleted == {e[0] for e in entries}
