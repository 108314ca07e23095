"""The sidecar: how fast a topology written to etcd reaches the data node, and what
the sidecar costs in CPU.

One etcd, one data node (cluster mode) and its sidecar, all on loopback. The bench
plays the coordinator: it bootstraps a one-shard view (the node primary, plus a
replica no process serves), then changes that replica's health and bumps the
epoch in one transaction, as the coordinator does.

1. Latency: for each of 200 changes (20 with --quick), the time from sending the
   etcd transaction until ``CLUSTER INFO`` on the data node reports the new epoch
   (polled every 0.5 ms): p50 / p99 / max.
2. CPU: the sidecar process's user + system time (``/proc/<pid>/stat``) over a
   window at idle (keepalives, pings, replication polls only) and over a window
   with 10 changes/s, as a share of one core.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from clusterstate.keys import Keys
from clusterstate.records import Status, node_to_json, shard_to_json
from clusterstate.topology import Health, NodeRecord, NodeState, Role, ShardRecord, Topology, new_id

from . import procs
from .client import Client
from .probe import percentile
from .report import Context, Row, Target

CLUSTER = "bench-sidecar"
TICKS = os.sysconf("SC_CLK_TCK")


def _slotkeeper() -> list[str]:
    script = Path(sys.executable).with_name("slotkeeper")
    return [str(script)] if script.exists() else [sys.executable, "-m", "slotkeeper"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Rig:
    """etcd + data node + sidecar, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="skbench-sidecar-"))
        self.procs: list[Any] = []
        self.etcd_port = procs.free_port()
        self.port, self.admin_port = procs.free_port(), procs.free_port()
        self.http_port = procs.free_port()
        self.sidecar_pid = 0

    def start(self) -> None:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise procs.ToolMissing("etcd not on PATH (make setup installs it into .tools/bin)")
        peer = procs.free_port()
        url = f"http://127.0.0.1:{self.etcd_port}"
        self.procs.append(procs.spawn([
            etcd, "--name", "bench", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
            "--log-level", "warn", "--unsafe-no-fsync",
        ], log=self.dir / "etcd.log"))
        self._wait(lambda: b"true" in urllib.request.urlopen(f"{url}/health", timeout=1).read(),
                   "etcd")
        data = self.dir / "data"
        self.procs.append(procs.spawn([
            *_slotkeeper(), "datanode", "--port", str(self.port), "--admin-port",
            str(self.admin_port), "--dir", str(data), "--cluster-enabled", "yes",
            "--snapshot-interval", "0", "--log-level", "warning",
        ], log=self.dir / "datanode.log"))
        self._wait(lambda: Client(self.admin_port, timeout=1).call("PING") == b"PONG", "data node")
        sidecar = procs.spawn([
            *_slotkeeper(), "sidecar", "--cluster", CLUSTER, "--etcd", f"127.0.0.1:{self.etcd_port}",
            "--datanode", f"127.0.0.1:{self.admin_port}", "--dir", str(data),
            "--http-port", str(self.http_port), "--log-level", "warning",
        ], log=self.dir / "sidecar.log")
        self.procs.append(sidecar)
        self.sidecar_pid = sidecar.pid

    def _wait(self, ready: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready within {timeout:.0f}s; see {self.dir}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            procs.kill_group(p, grace=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def applied_epoch(c: Client) -> int:
    info = c.call("CLUSTER", "INFO")
    assert isinstance(info, bytes)
    for line in info.decode().splitlines():
        if line.startswith("cluster_current_epoch:"):
            return int(line.split(":", 1)[1])
    return -1


async def drive(ctx: Context, rig: Rig) -> list[Row]:
    from dcs.etcd import EtcdStore
    from dcs.port import Put

    keys = Keys(CLUSTER)
    changes = 20 if ctx.quick else 200
    window = 5.0 if ctx.quick else 20.0
    with _client(rig) as c:
        raw_id = c.call("SLOTKEEPER", "NODEID")
    assert isinstance(raw_id, bytes)
    node_id = raw_id.decode()
    async with EtcdStore(f"127.0.0.1:{rig.etcd_port}") as store:
        async def status() -> Status | None:
            kv = await store.get(keys.status(node_id))
            return None if kv is None else Status.from_json(kv.value)

        deadline = time.monotonic() + 30
        st = await status()
        while st is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sidecar did not register; see {rig.dir}")
            await asyncio.sleep(0.05)
            st = await status()
        shard = new_id()
        me = NodeRecord(node_id, st.addr, st.port, st.admin_port, shard=shard, role=Role.PRIMARY,
                        state=NodeState.ACTIVE, health=Health.ONLINE, replica_id=1)
        other = NodeRecord(new_id(), "127.0.0.1", 1, 2, shard=shard, role=Role.REPLICA,
                           state=NodeState.STANDBY, health=Health.ONLINE, replica_id=2)
        topo = Topology.build(1, [ShardRecord(shard, ((0, 16383),), node_id, (other.id,))],
                              [me, other])
        await store.cas([], [Put(keys.epoch, b"1"), Put(keys.node(me.id), node_to_json(me, 1)),
                             Put(keys.node(other.id), node_to_json(other, 1)),
                             Put(keys.shard(shard), shard_to_json(topo.shards[0], 1))])
        poll = _client(rig)
        epoch = 1
        while applied_epoch(poll) != 1:
            time.sleep(0.01)

        async def change() -> float:
            nonlocal epoch, other
            epoch += 1
            other = replace(other, health=Health.FAIL if epoch % 2 else Health.ONLINE)
            t0 = time.perf_counter()
            await store.cas([], [Put(keys.epoch, str(epoch).encode()),
                                 Put(keys.node(other.id), node_to_json(other, epoch))])
            while applied_epoch(poll) != epoch:
                if time.perf_counter() - t0 > 5:
                    raise RuntimeError(f"epoch {epoch} not applied within 5 s; see {rig.dir}")
                time.sleep(0.0005)
            return (time.perf_counter() - t0) * 1000

        samples = sorted([await change() for _ in range(changes)])
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        ctx.say(f"etcd write → view applied on the data node, {changes} changes: p50 {p50:.2f} ms, "
                f"p99 {p99:.2f} ms, max {samples[-1]:.2f} ms")

        await asyncio.sleep(1.0)  # let the last changes settle (status writes)
        c0, t0 = cpu_seconds(rig.sidecar_pid), time.monotonic()
        await asyncio.sleep(window)
        idle = (cpu_seconds(rig.sidecar_pid) - c0) / (time.monotonic() - t0) * 100
        c0, t0 = cpu_seconds(rig.sidecar_pid), time.monotonic()
        n = 0
        while time.monotonic() - t0 < window:
            n += 1
            await change()
            next_at = t0 + n * 0.1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        busy = (cpu_seconds(rig.sidecar_pid) - c0) / (time.monotonic() - t0) * 100
        ctx.say(f"sidecar CPU: idle {idle:.2f} % of a core over {window:.0f} s; "
                f"{n / (time.monotonic() - t0):.1f} changes/s: {busy:.2f} %")
        poll.close()
    return [
        Row("sidecar: etcd write → view applied, p50", p50, None, "ms",
            note=f"{changes} changes, loopback"),
        Row("sidecar: etcd write → view applied, p99", p99, None, "ms",
            target=Target("<=", 100, on="ours")),
        Row("sidecar CPU at idle (% of a core)", idle, None),
        Row("sidecar CPU at 10 changes/s (% of a core)", busy, None),
    ]


def _client(rig: Rig) -> Client:
    return Client(rig.admin_port, timeout=10)


def run(ctx: Context) -> list[Row]:
    rig = Rig()
    try:
        rig.start()
        return asyncio.run(drive(ctx, rig))
    finally:
        rig.stop()
