"""Replication with real processes on free ports: full and partial syncs, the stream of
effects under a random workload, promotion, WAIT and acknowledged writes, fencing,
read-only replicas, restarts from a snapshot.

Convergence is checked with ``SLOTKEEPER DIGEST`` (an order-independent digest of
the whole keyspace, TTL deadlines included) on every node. A small TCP proxy sits
between a replica and its primary where a test needs to stall or drop the link.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from clusterstate.topology import Topology
from tests.cluster_fixtures import make_topology, start_static_cluster
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.support import LOOPBACK, wait_until

# --------------------------------------------------------------------------- helpers


class Proxy:
    """A TCP proxy to ``port`` that can drop its connections or stall the
    primary → replica direction after a number of bytes."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.allowed: int | None = None  # bytes downstream may still pass (None: no limit)
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection((LOOPBACK, self.target))
            except OSError:
                continue
            with self.cond:
                self.pairs.append((down, up))
            threading.Thread(target=self._pump, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while downstream and data:
                    with self.cond:
                        while self.allowed is not None and self.allowed <= 0 and not self.closed:
                            self.cond.wait(0.1)
                        n = len(data) if self.allowed is None else min(len(data), self.allowed)
                        if self.allowed is not None:
                            self.allowed -= n
                    dst.sendall(data[:n])
                    data = data[n:]
                if not downstream:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall_after(self, nbytes: int) -> None:
        with self.cond:
            self.allowed = nbytes

    def release(self) -> None:
        with self.cond:
            self.allowed = None
            self.cond.notify_all()

    def drop(self) -> None:
        """Cut every connection (both ends see it closed)."""
        with self.cond:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.release()
        self.drop()
        self.listener.close()


def digest(node: DataNodeProcess) -> tuple[bytes, int, int]:
    """``(digest, keys, offset)``."""
    d, keys, offset = node.admin().execute_command("SLOTKEEPER", "DIGEST")
    return d, keys, offset


def in_sync(primary: DataNodeProcess, *replicas: DataNodeProcess) -> bool:
    ref = digest(primary)
    return all(digest(r) == ref for r in replicas)


def wait_in_sync(primary: DataNodeProcess, *replicas: DataNodeProcess, timeout: float = 20) -> None:
    def check() -> bool:
        if in_sync(primary, *replicas):
            return True
        return False

    try:
        wait_until(check, timeout=timeout, interval=0.05, what="replicas in sync with the primary")
    except AssertionError:
        shown = {n.port: digest(n) for n in (primary, *replicas)}
        raise AssertionError(f"not in sync: {shown}") from None


def info(node: DataNodeProcess, section: str) -> dict[str, Any]:
    return node.client().info(section)


def stat(node: DataNodeProcess, name: str) -> int:
    return int(info(node, "stats")[name])


def status(node: DataNodeProcess) -> dict[bytes, Any]:
    flat = node.admin().execute_command("SLOTKEEPER", "REPLICATION")
    return dict(zip(flat[::2], flat[1::2], strict=True))


def link_up(node: DataNodeProcess) -> bool:
    return info(node, "replication").get("master_link_status") == "up"


def replicaof(replica: DataNodeProcess, primary: DataNodeProcess | int) -> None:
    port = primary if isinstance(primary, int) else primary.port
    assert replica.client().execute_command("REPLICAOF", LOOPBACK, port) in (b"OK", True)


def load(node: DataNodeProcess, n: int, size: int, prefix: str = "key") -> None:
    """SET <prefix>:<i> to ``size`` bytes, pipelined on a raw socket."""
    value = b"v" * size
    with socket.create_connection((LOOPBACK, node.port)) as s:
        for start in range(0, n, 5000):
            stop = min(n, start + 5000)
            s.sendall(b"".join(
                b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                % (len(k), k, size, value)
                for k in (f"{prefix}:{i}".encode() for i in range(start, stop))
            ))
            want, got = (stop - start) * 5, b""
            while len(got) < want:
                got += s.recv(1 << 20)
            assert got == b"+OK\r\n" * (stop - start)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Any]:
    """``nodes(n, *flags)`` starts n standalone data nodes; all stopped at the end."""
    started: list[DataNodeProcess] = []

    def start(n: int, *flags: str) -> list[DataNodeProcess]:
        out = [start_datanode(tmp_path / f"n{len(started) + i}", *flags) for i in range(n)]
        started.extend(out)
        return out

    try:
        yield start
    finally:
        for node in started:
            node.stop()


# --------------------------------------------------------------------------- random workload

K = 40  # keys per type: small, so commands collide


def _random_commands(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    def k(kind: str) -> str:
        return f"{kind}:{rng.randrange(K)}"

    def ttl() -> tuple[str, int]:
        # Short TTLs expire during the test (the primary deletes them); long ones stay.
        return rng.choice([("PX", rng.randrange(50, 400)), ("EX", rng.randrange(100, 1000))])

    ops: list[Any] = [
        lambda: ("SET", k("s"), rng.randbytes(rng.randrange(1, 40))),
        lambda: ("SET", k("s"), "v", *ttl()),
        lambda: ("SET", k("s"), "v", rng.choice(["NX", "XX"]), *ttl()),
        lambda: ("SET", k("s"), "v", "KEEPTTL", "GET"),
        lambda: ("SETEX", k("s"), rng.randrange(1, 100), "x"),
        lambda: ("PSETEX", k("s"), rng.randrange(50, 300), "y"),
        lambda: ("GETEX", k("s"), *rng.choice([("EX", 100), ("PX", 200), ("PERSIST",)])),
        lambda: ("INCR", k("n")),
        lambda: ("INCRBYFLOAT", k("f"), rng.choice(["0.1", "1.5e3", "-2.25"])),
        lambda: ("APPEND", k("s"), "ab"),
        lambda: ("SETRANGE", k("s"), rng.randrange(10), "zz"),
        lambda: ("GETDEL", k("s")),
        lambda: ("MSET", k("s"), "1", k("s"), "2"),
        lambda: ("DEL", k(rng.choice("slhzn"))),
        lambda: ("UNLINK", k(rng.choice("slhz"))),
        lambda: ("EXPIRE", k(rng.choice("slhz")), rng.randrange(1, 100)),
        lambda: ("PEXPIRE", k(rng.choice("slhz")), rng.randrange(50, 400)),
        lambda: ("PERSIST", k(rng.choice("slhz"))),
        lambda: ("RENAME", k("s"), k("s")),
        lambda: ("COPY", k("l"), k("l"), "REPLACE"),
        lambda: ("LPUSH", k("l"), *[rng.randrange(100) for _ in range(rng.randrange(1, 5))]),
        lambda: ("RPUSH", k("l"), rng.randrange(100)),
        lambda: ("LPOP", k("l"), rng.randrange(1, 3)),
        lambda: ("RPOP", k("l")),
        lambda: ("LMOVE", k("l"), k("l"), "LEFT", "RIGHT"),
        lambda: ("LTRIM", k("l"), 0, rng.randrange(5)),
        lambda: ("LREM", k("l"), 0, rng.randrange(100)),
        lambda: ("LSET", k("l"), 0, "set"),
        lambda: ("SADD", k("t"), *[rng.randrange(30) for _ in range(rng.randrange(1, 6))]),
        lambda: ("SREM", k("t"), rng.randrange(30)),
        lambda: ("SPOP", k("t")),
        lambda: ("SPOP", k("t"), rng.randrange(1, 4)),
        lambda: ("SRANDMEMBER", k("t"), 2),
        lambda: ("SMOVE", k("t"), k("t"), rng.randrange(30)),
        lambda: ("SINTERSTORE", k("t"), k("t"), k("t")),
        lambda: ("SUNIONSTORE", k("t"), k("t"), k("t")),
        lambda: ("HSET", k("h"), f"f{rng.randrange(10)}", rng.randrange(100)),
        lambda: ("HDEL", k("h"), f"f{rng.randrange(10)}"),
        lambda: ("HINCRBY", k("h"), "n", 3),
        lambda: ("HINCRBYFLOAT", k("h"), "x", "0.5"),
        lambda: ("ZADD", k("z"), rng.randrange(100) / 4, f"m{rng.randrange(20)}"),
        lambda: ("ZINCRBY", k("z"), 1.25, f"m{rng.randrange(20)}"),
        lambda: ("ZREM", k("z"), f"m{rng.randrange(20)}"),
        lambda: ("ZPOPMIN", k("z")),
        lambda: ("ZPOPMAX", k("z"), 2),
        lambda: ("ZREMRANGEBYSCORE", k("z"), 0, rng.randrange(10)),
        lambda: ("ZUNIONSTORE", k("z"), 2, k("z"), k("z"), "WEIGHTS", 1, 0.5),
        lambda: ("ZRANGESTORE", k("z"), k("z"), 0, 3),
    ]
    return [rng.choice(ops)() for _ in range(n)]


def _run_workload(node: DataNodeProcess, seed: int, batches: int, stop: threading.Event) -> int:
    rng = random.Random(seed)
    c = node.client()
    done = 0
    for _ in range(batches):
        if stop.is_set():
            break
        if rng.random() < 0.15:  # a transaction of a few commands
            with c.pipeline(transaction=True) as tx:
                for cmd in _random_commands(rng, 4):
                    tx.execute_command(*cmd)
                tx.execute(raise_on_error=False)
            done += 4
            continue
        pipe = c.pipeline(transaction=False)
        for cmd in _random_commands(rng, 40):
            pipe.execute_command(*cmd)
        pipe.execute(raise_on_error=False)
        done += 40
        if rng.random() < 0.05:  # RESTORE with a relative TTL, from a DUMP
            payload = c.dump(f"l:{rng.randrange(K)}")
            if payload:
                c.restore(f"l:{rng.randrange(K)}", 300, payload, replace=True)
    return done


# =========================================================================== tests


def test_random_workload_converges_on_two_replicas(nodes: Any) -> None:
    """Primary + 2 replicas under every type, TTLs, deletes, SPOP, transactions: the
    keyspace digest ends identical on all three. The second replica joins mid-load
    (full sync while the primary keeps serving)."""
    p, r1, r2 = nodes(3)
    load(p, 2000, 50, prefix="base")
    replicaof(r1, p)
    wait_until(lambda: link_up(r1), timeout=10, what="replica 1 linked")
    stop = threading.Event()
    counts: list[int] = []
    worker = threading.Thread(target=lambda: counts.append(_run_workload(p, 7, 150, stop)))
    worker.start()
    try:
        wait_until(lambda: stat(p, "total_commands_processed") > 1500, timeout=20)
        replicaof(r2, p)  # full sync under writes
        worker.join(60)
    finally:
        stop.set()
        worker.join(10)
    assert counts and counts[0] > 2000
    wait_until(lambda: link_up(r2), timeout=10, what="replica 2 linked")
    wait_in_sync(p, r1, r2, timeout=20)
    d, keys, offset = digest(p)
    assert keys > 2000 and offset > 0
    assert stat(p, "sync_full") == 2
    # INFO and ROLE as Redis shows them.
    rep = info(p, "replication")
    assert rep["role"] == "master" and rep["connected_slaves"] == 2
    assert {rep["slave0"]["state"], rep["slave1"]["state"]} == {"online"}
    assert rep["repl_backlog_active"] == 1 and rep["master_repl_offset"] == offset
    rinfo = info(r1, "replication")
    assert rinfo["role"] == "slave" and rinfo["master_port"] == p.port
    assert rinfo["master_sync_in_progress"] == 0 and rinfo["slave_repl_offset"] == offset
    assert rinfo["master_replid"] == rep["master_replid"]
    role = p.client().execute_command("ROLE")
    assert role[0] == b"master" and role[1] == offset and len(role[2]) == 2
    assert r2.client().execute_command("ROLE") == [b"slave", LOOPBACK.encode(), p.port,
                                                   b"connected", offset]


def test_expiry_follows_the_primary(nodes: Any) -> None:
    """A replica hides an expired key but never deletes it: the primary's DEL does."""
    p, r = nodes(2)
    replicaof(r, p)
    wait_until(lambda: link_up(r), timeout=10)
    p.client().set("keep", "1")
    p.client().set("soon", "x", px=300)
    wait_in_sync(p, r)
    p.pause()  # the primary cannot expire anything now
    try:
        wait_until(lambda: r.client().get("soon") is None, timeout=5, what="key hidden")
        assert r.client().dbsize() == 2  # hidden, still stored
        assert r.client().exists("soon") == 0 and r.client().get("keep") == b"1"
    finally:
        p.resume()
    wait_until(lambda: r.client().dbsize() == 1, timeout=5, what="the primary's DEL applied")
    wait_in_sync(p, r)


def test_replica_killed_mid_full_sync_and_restarted(nodes: Any, tmp_path: Path) -> None:
    p, r = nodes(2)
    load(p, 20_000, 400)
    r.client().set("old", "data")
    proxy = Proxy(p.port)
    try:
        proxy.stall_after(300_000)  # the handshake and the first part of the snapshot pass
        replicaof(r, proxy.port)
        wait_until(lambda: int(info(r, "replication").get("master_sync_loaded_keys", 0)) > 100,
                   timeout=10, what="the full sync under way")
        rinfo = info(r, "replication")
        assert rinfo["master_sync_in_progress"] == 1 and rinfo["master_link_status"] == "down"
        # The old data stays readable until the new keyspace is complete.
        assert r.client().get("old") == b"data" and r.client().dbsize() == 1
        assert rinfo["master_sync_total_keys"] == 20_000
        persistence = info(r, "persistence")
        assert persistence["loading"] == 1 and 0 < float(persistence["loading_loaded_perc"]) < 100
        assert info(p, "replication")["slave0"]["state"] == "send_bulk"
        r.kill()
        # The primary notices, stops the sync child and forgets the replica.
        wait_until(lambda: info(p, "replication")["connected_slaves"] == 0, timeout=10,
                   what="the primary dropped the dead replica")
    finally:
        proxy.close()
    r.start()
    replicaof(r, p)
    wait_until(lambda: link_up(r), timeout=20, what="replica synced after restart")
    wait_in_sync(p, r)
    assert digest(r)[1] == 20_000
    assert stat(p, "sync_full") == 2


def test_partial_resync_after_a_dropped_connection(nodes: Any) -> None:
    p, r = nodes(2)
    proxy = Proxy(p.port)
    try:
        replicaof(r, proxy.port)
        wait_until(lambda: link_up(r), timeout=10)
        load(p, 500, 20, prefix="a")
        wait_in_sync(p, r)
        assert (stat(p, "sync_full"), stat(p, "sync_partial_ok")) == (1, 0)
        proxy.drop()
        load(p, 500, 20, prefix="b")  # written while the link is down
        wait_until(lambda: stat(p, "sync_partial_ok") == 1, timeout=10, what="partial resync")
        wait_in_sync(p, r)
        assert stat(p, "sync_full") == 1  # no full sync happened
        assert stat(r, "sync_full_loaded") == 1
        assert digest(r)[1] == 1000
    finally:
        proxy.close()


def test_wait_and_acknowledged_writes(nodes: Any) -> None:
    p, r1, r2 = nodes(3)
    c, admin = p.client(), p.admin()
    assert c.execute_command("WAIT", 1, 100) == 0  # no replica: nothing to wait for
    replicaof(r1, p)
    replicaof(r2, p)
    wait_until(lambda: link_up(r1) and link_up(r2), timeout=10)
    wait_until(lambda: info(p, "replication")["connected_slaves"] == 2, timeout=10)
    c.set("a", "1")
    assert c.execute_command("WAIT", 2, 5000) == 2
    t0 = time.monotonic()
    assert c.execute_command("WAIT", 3, 300) == 2  # timeout: the count reached
    assert 0.25 < time.monotonic() - t0 < 5
    with pytest.raises(redis.ResponseError, match="WAIT cannot be used with replica"):
        r1.client().execute_command("WAIT", 1, 0)

    r2.pause()  # connected but silent: it acknowledges nothing
    try:
        c.set("b", "2")
        t0 = time.monotonic()
        assert c.execute_command("WAIT", 2, 300) == 1
        assert time.monotonic() - t0 >= 0.25
        assert c.execute_command("WAIT", 1, 0) == 1  # timeout 0 = forever; r1 answers
        # min_replicas_to_ack 1: answered once r1 acknowledged.
        assert admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 1, 2000) == b"OK"
        assert c.set("c", "3") and c.incr("n") == 1
        with c.pipeline(transaction=True) as tx:
            assert tx.set("d", "4").incr("n").execute() == [True, 2]
        assert r1.client().get("d") == b"4"  # acknowledged means applied there
        # 2 acks wanted, only r1 answers: -NOREPLICAS after the ack timeout, and the
        # write stays applied on the primary (as Redis's WAIT).
        admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 2, 300)
        t0 = time.monotonic()
        with pytest.raises(redis.ResponseError, match="^NOREPLICAS Not enough good replicas to write"):
            c.set("e", "5")
        assert time.monotonic() - t0 >= 0.25
        assert c.get("e") == b"5"
        # More acks wanted than replicas online: refused up front, nothing applied.
        admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 3)
        with pytest.raises(redis.ResponseError, match="Not enough good replicas"):
            c.set("f", "6")
        assert c.get("f") is None
        assert admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK") == [3, 300]
    finally:
        r2.resume()
    admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 2, 2000)
    assert c.set("g", "7")  # both replicas acknowledge again
    admin.execute_command("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 0)
    assert info(p, "replication")["min_replicas_to_ack"] == 0
    wait_in_sync(p, r1, r2)


def test_writes_on_a_replica_are_refused(nodes: Any) -> None:
    p, r = nodes(2)
    p.client().set("k", "v")
    replicaof(r, p)
    wait_until(lambda: link_up(r), timeout=10)
    rc = r.client()
    assert rc.execute_command("REPLICAOF", LOOPBACK, p.port) == b"OK Already connected to specified master"
    for attempt in (lambda: rc.set("k", "x"), lambda: rc.flushall(), lambda: rc.incr("n"),
                    lambda: r.admin().set("k", "x")):
        with pytest.raises(redis.exceptions.ReadOnlyError,
                           match="You can't write against a read only replica"):
            attempt()
    assert rc.get("k") == b"v"
    assert rc.execute_command("HELLO", "2")[11] == b"replica"
    # SLAVEOF NO ONE (REPLICAOF's old name): a primary again, writable, keeping its data.
    assert rc.execute_command("SLAVEOF", "NO", "ONE") is True  # redis-py parses +OK
    assert rc.set("k", "mine") and rc.get("k") == b"mine"
    assert info(r, "replication")["role"] == "master"


def test_replica_restart_resumes_from_its_snapshot_offset(nodes: Any) -> None:
    p, r = nodes(2, "--repl-backlog-size", "256kb")
    replicaof(r, p)
    wait_until(lambda: link_up(r), timeout=10)
    load(p, 300, 50, prefix="a")
    wait_in_sync(p, r)
    r.stop()  # SIGTERM: saves a snapshot holding its replication id and offset
    load(p, 300, 50, prefix="b")  # fits in the backlog
    r.start()  # restored as a replica of p, asks PSYNC <replid> <offset+1>
    wait_until(lambda: stat(p, "sync_partial_ok") == 1, timeout=10, what="partial resync")
    wait_in_sync(p, r)
    assert stat(p, "sync_full") == 1
    assert digest(r)[1] == 600
    # Too far behind: the backlog no longer holds its offset, so a full sync.
    r.stop()
    load(p, 1000, 500, prefix="c")  # ~0.5 MB > the 256 kB backlog
    r.start()
    wait_until(lambda: stat(p, "sync_full") == 2, timeout=10, what="full sync")
    wait_in_sync(p, r)
    assert stat(p, "sync_partial_err") == 1


def test_primary_restart_keeps_its_history_for_its_replica(nodes: Any) -> None:
    """A primary restarted from its shutdown snapshot keeps the snapshot's replication
    id as its previous one: its replica, at that offset, resumes without a full sync."""
    p, r = nodes(2)
    load(p, 200, 20)
    replicaof(r, p)
    wait_until(lambda: link_up(r), timeout=10)
    wait_in_sync(p, r)
    old_id = info(p, "replication")["master_replid"]
    p.stop()
    p.start()
    wait_until(lambda: link_up(r) and stat(p, "sync_partial_ok") == 1, timeout=20,
               what="the replica resumed")
    rep = info(p, "replication")
    assert rep["master_replid2"] == old_id and rep["master_replid"] != old_id
    assert stat(p, "sync_full") == 0
    p.client().set("after", "restart")
    wait_in_sync(p, r)
    assert info(r, "replication")["master_replid"] == rep["master_replid"]


# --------------------------------------------------------------------------- cluster mode


def _failover(topology: Topology, new_primary: str, epoch: int) -> Topology:
    """The same shard with ``new_primary`` promoted and the old primary as a failed replica."""
    doc = orjson.loads(topology.to_json())
    shard = doc["shards"][0]
    old = shard["primary"]
    shard["primary"] = new_primary
    shard["replicas"] = [n for n in shard["replicas"] if n != new_primary] + [old]
    for n in doc["nodes"]:
        if n["id"] == new_primary:
            n.update(role="primary", state="ACTIVE")
        elif n["id"] == old:
            n.update(role="replica", state="RECOVERING", health="fail")
    doc["epoch"] = epoch
    return Topology.from_dict(doc)


def test_promotion_fencing_and_the_other_replica_follows(tmp_path: Path) -> None:
    """Sidecar-driven: REPLICATE/PROMOTE carry epoch + replica_id; the promoted replica
    starts fenced; the other replica resumes from it without a full sync."""
    topo, ports = make_topology(1, replicas=2)
    by_id = {n.id: n for n in topo.nodes}
    (pid, pport, padmin), (r1id, r1port, r1admin), (r2id, r2port, r2admin) = ports
    started = {
        nid: start_datanode(tmp_path / nid[:8], "--cluster-enabled", "yes", "--node-id", nid,
                            port=port, admin_port=admin)
        for nid, port, admin in ports
    }
    p, r1, r2 = started[pid], started[r1id], started[r2id]
    try:
        for node in started.values():
            node.admin().execute_command("SLOTKEEPER", "TOPOLOGY", "SET", topo.to_json())
        for node, nid in ((r1, r1id), (r2, r2id)):
            assert node.admin().execute_command(
                "SLOTKEEPER", "REPLICATE", LOOPBACK, padmin, 1, by_id[nid].replica_id) == b"OK"
        assert r1.admin().execute_command(
            "SLOTKEEPER", "REPLICATE", LOOPBACK, padmin, 1, by_id[r1id].replica_id) == b"NOOP"
        wait_until(lambda: link_up(r1) and link_up(r2), timeout=10)
        load(p, 1000, 30)
        wait_in_sync(p, r1, r2)
        with pytest.raises(redis.exceptions.MovedError):  # cluster replicas: MOVED
            r1.client().set("key:1", "x")
        with pytest.raises(redis.ResponseError, match="REPLICAOF not allowed in cluster mode"):
            r1.client().execute_command("REPLICAOF", "NO", "ONE")
        # CLUSTER SHARDS shows real offsets for this shard once replicas acknowledged.
        offset = digest(p)[2]

        def shard_offsets() -> dict[str, int]:
            shards = p.client().execute_command("CLUSTER", "SHARDS")
            nodes_ = shards[0][3]
            fields = [dict(zip(n[::2], n[1::2], strict=True)) for n in nodes_]
            return {f[b"id"].decode(): f[b"replication-offset"] for f in fields}

        wait_until(lambda: shard_offsets() == {pid: offset, r1id: offset, r2id: offset},
                   timeout=5, what="CLUSTER SHARDS offsets")

        p.kill()
        topo2 = _failover(topo, r1id, epoch=2)
        for node in (r1, r2):
            node.admin().execute_command("SLOTKEEPER", "TOPOLOGY", "SET", topo2.to_json())
        a1, a2 = r1.admin(), r2.admin()
        with pytest.raises(redis.ResponseError, match="^STALE epoch 1 was already applied with another instruction"):
            a1.execute_command("SLOTKEEPER", "PROMOTE", 1, by_id[r1id].replica_id)
        assert a1.execute_command("SLOTKEEPER", "PROMOTE", 2, by_id[r1id].replica_id) == b"OK"
        assert a1.execute_command("SLOTKEEPER", "PROMOTE", 2, by_id[r1id].replica_id) == b"NOOP"
        # Promoted in cluster mode: fenced until the sidecar grants a write permit.
        c1 = r1.client()
        with pytest.raises(redis.exceptions.ClusterDownError, match="fenced"):
            c1.set("key:1", "new")
        assert c1.get("key:1") == b"v" * 30  # reads are served
        assert info(r1, "replication")["role"] == "master"
        # The other replica follows the promoted one: a partial resync (PSYNC2 ids).
        assert a2.execute_command(
            "SLOTKEEPER", "REPLICATE", LOOPBACK, r1admin, 2, by_id[r2id].replica_id) == b"OK"
        with pytest.raises(redis.ResponseError, match="older than the applied epoch 2"):
            a2.execute_command("SLOTKEEPER", "REPLICATE", LOOPBACK, padmin, 1,
                               by_id[r2id].replica_id)
        with pytest.raises(redis.ResponseError, match="already applied with another"):
            a2.execute_command("SLOTKEEPER", "PROMOTE", 2, by_id[r2id].replica_id)
        wait_until(lambda: stat(r1, "sync_partial_ok") == 1, timeout=10, what="partial resync")
        assert stat(r1, "sync_full") == 0
        assert status(r2)[b"link"] == b"up"
        # Write permit: granted, expires (fenced again), renewed.
        a1.execute_command("SLOTKEEPER", "WRITE-PERMIT", "FOR", 400)
        assert c1.set("key:1", "new")
        wait_in_sync(r1, r2)
        wait_until(lambda: a1.execute_command("SLOTKEEPER", "WRITE-PERMIT") == 0, timeout=5)
        with pytest.raises(redis.exceptions.ClusterDownError, match="fenced"):
            c1.set("key:1", "late")
        a1.execute_command("SLOTKEEPER", "WRITE-PERMIT", "FOR", 10_000)
        assert c1.set("key:1", "renewed")
        wait_in_sync(r1, r2)
        st = status(r1)
        assert st[b"role"] == b"primary" and st[b"epoch"] == 2
        [rep] = st[b"replicas"]
        rep = dict(zip(rep[::2], rep[1::2], strict=True))
        assert rep[b"node_id"].decode() == r2id and rep[b"state"] == b"online"
    finally:
        for node in started.values():
            node.stop()


def test_static_cluster_replicas_follow_the_topology(tmp_path: Path) -> None:
    """Without a control plane (--cluster-config) a replica replicates its shard's primary."""
    cluster = start_static_cluster(tmp_path, shards=1, replicas=1)
    try:
        shard = cluster.topology.shards[0]
        p, r = cluster.nodes[shard.primary], cluster.nodes[shard.replicas[0]]
        p.client().set("k", "v")
        wait_in_sync(p, r)
        conn = r.client(single_connection_client=True)
        conn.execute_command("READONLY")
        assert conn.get("k") == b"v"
        assert info(r, "replication")["master_port"] == p.admin_port
        assert status(r)[b"epoch"] == cluster.topology.epoch
    finally:
        cluster.stop()
