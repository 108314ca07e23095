"""The whole stack, as `slotkeeper up` runs it: etcd, Consul, two coordinators and
data node + sidecar pairs as real processes. Bootstrap from cold, clients, a crash
failover without split-brain, the operator commands, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from clusterstate.slots import key_slot
from tests.stack_fixtures import start_stack
from tests.support import LOOPBACK, wait_until


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Any]]:
    """`slotkeeper up --primaries 2 --replicas 1` in a temporary directory (see
    tests/stack_fixtures.py): (base port, that directory, the `slotkeeper up` process)."""
    with start_stack(tmp_path_factory.mktemp("up")) as stack:
        yield stack.base, stack.work, stack.proc


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
