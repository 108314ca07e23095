"""The whole stack, as `slotkeeper up` runs it: etcd, Consul, two coordinators and
data node + sidecar pairs as real processes. Bootstrap from cold, clients, a crash
failover without split-brain, the operator commands, a clean stop."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from clusterstate.slots import key_slot
from tests.support import LOOPBACK, REPO_ROOT, wait_until


def _ports_free(base: int, nodes: int) -> bool:
    ports = [base + i for i in range(nodes)] + [base + 10000 + i for i in range(nodes)]
    ports += [base + 800 + i for i in range(nodes)] + [base + 900, base + 901]
    ports += [base + 950 + i for i in range(6)] + [base + 980, base + 981]
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("up")
    base = next(b for b in (random.randrange(20000, 40000, 10) for _ in range(50))
                if _ports_free(b, 4))
    env = {**os.environ, "PATH": f"{REPO_ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    log = open(work / "up.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "slotkeeper", "up", "--primaries", "2", "--replicas", "1",
         "--base-port", str(base), "--data", str(work / "data"), "--timeout", "90"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: "is up" in (work / "up.log").read_text() or proc.poll() is not None,
                   timeout=120, what="slotkeeper up to report the cluster up")
        assert proc.poll() is None, (work / "up.log").read_text()
        yield base, work, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _slotkeeper(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slotkeeper", *args], cwd=work,
                          capture_output=True, text=True, timeout=60)


def test_bootstrap_clients_and_operator_commands(local_cluster) -> None:
    base, work, _ = local_cluster
    rc = RedisCluster(startup_nodes=[ClusterNode(LOOPBACK, base)])
    try:
        for i in range(500):
            rc.set(f"k{i}", i)
        assert [rc.get(f"k{i}") for i in range(500)] == [str(i).encode() for i in range(500)]
    finally:
        rc.close()
    up = json.loads((work / ".slotkeeper-up.json").read_text())
    assert up["coordinator"].startswith("http://")
    status = _slotkeeper(work, "status")
    assert status.returncode == 0, status.stderr
    assert "2 shards" in status.stdout
    shards = json.loads(_slotkeeper(work, "shards", "--json").stdout)
    assert len(shards) == 2 or len(shards.get("shards", [])) == 2


def test_primary_crash_fails_over_without_split_brain(local_cluster) -> None:
    base, work, _ = local_cluster
    shards = json.loads(_slotkeeper(work, "shards", "--json").stdout)
    shards = shards if isinstance(shards, list) else shards["shards"]
    nodes = json.loads(_slotkeeper(work, "nodes", "--json").stdout)
    nodes = nodes if isinstance(nodes, list) else nodes["nodes"]
    by_id = {n["id"]: n for n in nodes}
    shard = shards[0]
    old = by_id[shard["primary"]]
    replica = by_id[shard["replicas"][0]]
    old_port, new_port = old["port"], replica["port"]
    pid = int(subprocess.run(["pgrep", "-f", f"datanode --port {old_port} "],
                             capture_output=True, text=True).stdout.split()[0])
    lo, hi = shard["slots"][0]
    key = next(k for k in (f"fo{i}" for i in range(100_000)) if lo <= key_slot(k.encode()) <= hi)
    writer = redis.Redis(port=new_port)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def promoted() -> bool:
        try:
            return writer.set(key, "x") is True
        except redis.RedisError:
            return False

    wait_until(promoted, timeout=10, interval=0.02, what="the replica to take writes")
    elapsed = time.monotonic() - t0
    assert elapsed < 5, elapsed
    # The old primary is gone (kill -9); whatever restarts it must come back as a replica,
    # never as a second writable primary: only the new primary holds the slot lease.
    shards_after = json.loads(_slotkeeper(work, "shards", "--json").stdout)
    shards_after = shards_after if isinstance(shards_after, list) else shards_after["shards"]
    now = next(s for s in shards_after if s["id"] == shard["id"])
    assert now["primary"] == replica["id"]
    assert now["lease"] == replica["id"]
