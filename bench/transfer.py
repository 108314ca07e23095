"""Slot transfer between two local data nodes (datanode/transfer.py).

Two data nodes run with ``--cluster-enabled yes``; node A's shard owns slots
0-8191, node B's shard 8192-16383. The bench drives what the sidecar will:
``SLOTKEEPER IMPORT`` on B, ``IMPORT-STATUS`` polled until done, then the next
epoch's topology on B, then on A.

1. Throughput: one transfer of a slot holding 200,000 keys with 16-byte values
   (keys/s from the import's own elapsed time), with a paced GET probe on both
   nodes meanwhile (worst client latency while the transfer runs).
2. Write-refusal window: for a slot of 1,000 keys, the time from the IMPORT
   command (the source refuses writes from its EXPORT, a little later) until the
   new topology is applied on both nodes, over many trials: p50 / p99.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hiredis

from clusterstate.slots import key_slot

from . import procs
from .client import Client, encode
from .probe import percentile
from .procs import Background, Server
from .report import Context, Row, Target

SHARD_A = "a1" * 20
SHARD_B = "b2" * 20
SPLIT = 8192
POLL = 0.0005  # seconds between IMPORT-STATUS polls


def _node_argv(admin_port: int):  # type: ignore[no-untyped-def]
    def argv(port: int, d: Path) -> list[str]:
        script = Path(sys.executable).with_name("slotkeeper")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "slotkeeper"]
        return [*base, "datanode", "--port", str(port), "--admin-port", str(admin_port),
                "--dir", str(d), "--snapshot-interval", "0", "--cluster-enabled", "yes",
                "--log-level", "warning"]

    return argv


class Node:
    def __init__(self, label: str) -> None:
        self.admin_port = procs.free_port()
        self.server = Server("ours", label, _node_argv(self.admin_port))
        self.id = ""

    def start(self) -> Node:
        self.server.start()
        with self.admin() as c:
            reply = c.call("SLOTKEEPER", "NODEID")
        assert isinstance(reply, bytes)
        self.id = reply.decode()
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def admin(self) -> Client:
        return Client(self.admin_port, timeout=60)

    def stop(self) -> None:
        self.server.stop()


def _runs(slots: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in sorted(slots):
        if runs and runs[-1][1] == s - 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs


def topology(epoch: int, a: Node, b: Node, moved: set[int]) -> str:
    a_slots = [s for s in range(SPLIT) if s not in moved]
    b_slots = sorted(set(range(SPLIT, 16384)) | moved)

    def node(n: Node, shard: str) -> dict[str, Any]:
        return {"id": n.id, "addr": procs.LOOPBACK, "port": n.port, "admin_port": n.admin_port,
                "shard": shard, "role": "primary", "state": "ACTIVE", "health": "online"}

    return json.dumps({
        "epoch": epoch,
        "shards": [{"id": SHARD_A, "slots": _runs(a_slots), "primary": a.id},
                   {"id": SHARD_B, "slots": _runs(b_slots), "primary": b.id}],
        "nodes": [node(a, SHARD_A), node(b, SHARD_B)],
    })


def tags_for(count: int) -> list[str]:
    """``count`` hash tags of distinct slots of A's shard."""
    out: list[str] = []
    seen: set[int] = set()
    i = 0
    while len(out) < count:
        tag = f"bt{i}"
        slot = key_slot(tag.encode())
        if slot < SPLIT and slot not in seen:
            seen.add(slot)
            out.append(tag)
        i += 1
    return out


def fill(port: int, tag: str, n: int) -> None:
    """``n`` keys ``{tag}:<i>`` with 16-byte values, MSET-pipelined."""
    with Client(port, timeout=300) as c:
        sent = 0
        for start in range(0, n, 500):
            args: list[bytes] = [b"MSET"]
            for i in range(start, min(n, start + 500)):
                args += [b"{%s}:%d" % (tag.encode(), i), b"%016d" % i]
            c.sock.sendall(encode(*args))
            sent += 1
        for r in c.read(sent):
            if isinstance(r, hiredis.ReplyError):
                raise RuntimeError(f"MSET failed: {r}")


def status(c: Client) -> dict[str, Any]:
    flat = c.call("SLOTKEEPER", "IMPORT-STATUS")
    assert isinstance(flat, list)
    return {k.decode(): (v.decode() if isinstance(v, bytes) else v)
            for k, v in zip(flat[::2], flat[1::2], strict=True)}


def wait_done(c: Client, timeout: float = 300.0, poll: float = POLL) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = status(c)
        if st["state"] == "done":
            return st
        if st["state"] != "running":
            raise RuntimeError(f"import {st['state']}: {st['error']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"import still running after {timeout:.0f}s")
        time.sleep(poll)


class Cluster:
    def __init__(self, a: Node, b: Node) -> None:
        self.a, self.b = a, b
        self.epoch = 0
        self.moved: set[int] = set()

    def apply(self, moved: set[int]) -> None:
        """The next epoch: on the target first, then on the source."""
        self.epoch += 1
        doc = topology(self.epoch, self.a, self.b, moved)
        for n in (self.b, self.a):
            with n.admin() as c:
                c.call("SLOTKEEPER", "TOPOLOGY", "SET", doc)
        self.moved = set(moved)


def run(ctx: Context) -> list[Row]:
    n_keys = 40_000 if ctx.quick else 200_000
    trials = 10 if ctx.quick else 50
    rows: list[Row] = []
    with ExitStack() as stack:
        a = Node("data node A (source)").start()
        stack.callback(a.stop)
        b = Node("data node B (target)").start()
        stack.callback(b.stop)
        cluster = Cluster(a, b)
        cluster.apply(set())
        tags = tags_for(1 + trials)
        rows += throughput(ctx, cluster, tags[0], n_keys)
        rows += refusal_window(ctx, cluster, tags[1:], 1000)
    return rows


def start_probes(nodes: tuple[Node, Node], seconds: float) -> dict[str, Background]:
    """A paced GET probe (bench.probe, 4 × 500 GET/s) on each node's client port.

    key:000000000000 (the probe's key) hashes to slot 13053, in B's shard: on B the
    GETs are served, on A they are answered MOVED; both go through the event loop.
    """
    return {
        n.server.label: Background([sys.executable, "-m", "bench.probe", str(n.port), "--keys", "1",
                                    "--seconds", str(seconds), "--conns", "4", "--rate", "500"])
        for n in nodes
    }


def probe_results(ctx: Context, probes: dict[str, Background], seconds: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, bg in probes.items():
        res = bg.finish(seconds + 30)
        try:
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[label] = {}
            ctx.say(f"probe on {label} failed: rc={res.rc} {res.stderr.strip()[-300:]}")
    return out


def throughput(ctx: Context, cluster: Cluster, tag: str, n: int) -> list[Row]:
    a, b = cluster.a, cluster.b
    slot = key_slot(tag.encode())
    t0 = time.perf_counter()
    fill(a.port, tag, n)
    ctx.say(f"loaded {n:,} keys × 16 B into slot {slot} of A in {time.perf_counter() - t0:.1f}s")
    idle = probe_results(ctx, start_probes((a, b), 2.0), 2.0)
    probe_s = 4.0 if n > 100_000 else 2.5
    probes = start_probes((a, b), probe_s)
    time.sleep(0.7)  # the probes' connections are up
    with b.admin() as c:
        w0 = time.perf_counter()
        c.call("SLOTKEEPER", "IMPORT", procs.LOOPBACK, a.admin_port, a.id, str(slot))
        st = wait_done(c, poll=0.02)  # light polling: the probes measure the transfer alone
        wall = time.perf_counter() - w0
    during = probe_results(ctx, probes, probe_s)
    keys_s = st["keys"] / (st["elapsed_ms"] / 1000) if st["elapsed_ms"] else None
    ctx.say(f"import of slot {slot}: {st['keys']:,} keys, {st['bytes']:,} bytes in "
            f"{st['elapsed_ms']} ms (status), {wall * 1000:.0f} ms wall incl. polling")
    for label in during:
        i, d = idle.get(label, {}), during[label]
        ctx.say(f"paced GET probe on {label}: idle p99 {i.get('p99', float('nan')):.2f} ms / max "
                f"{i.get('max', float('nan')):.2f} ms; {probe_s:g} s around the import p99 "
                f"{d.get('p99', float('nan')):.2f} ms / max {d.get('max', float('nan')):.2f} ms")
    t1 = time.perf_counter()
    cluster.apply(cluster.moved | {slot})
    with a.admin() as c:
        while c.call("CLUSTER", "COUNTKEYSINSLOT", slot):
            time.sleep(0.01)
    ctx.say(f"source dropped the moved slot's {n:,} keys {time.perf_counter() - t1:.2f}s after "
            "the new topology (background, batched)")
    rows = [
        Row(f"slot transfer of {n:,} keys × 16 B (keys/s)", keys_s, None, "rps",
            target=Target(">=", 100_000, on="ours"), note="loopback, one slot, one transfer"),
    ]
    for label in during:
        who = "target" if "target" in label else "source"
        rows.append(Row(f"GET p99 on the {who}, transfer ÷ idle", during[label].get("p99"),
                        idle.get(label, {}).get("p99"), "ms",
                        note="paced probe 4 × 500 GET/s; reference column: idle"))
        rows.append(Row(f"GET max on the {who} during the transfer", during[label].get("max"),
                        idle.get(label, {}).get("max"), "ms", show_ratio=False,
                        note="reference column: idle"))
    return rows


def refusal_window(ctx: Context, cluster: Cluster, tags: list[str], n: int) -> list[Row]:
    a, b = cluster.a, cluster.b
    for tag in tags:
        fill(a.port, tag, n)
    ctx.say(f"{len(tags)} trials: slot of {n:,} keys; window = IMPORT sent → topology applied "
            "on target and source (IMPORT-STATUS polled every 0.5 ms)")
    windows: list[float] = []
    copies: list[float] = []
    with b.admin() as cb:
        for tag in tags:
            slot = key_slot(tag.encode())
            t0 = time.perf_counter()
            cb.call("SLOTKEEPER", "IMPORT", procs.LOOPBACK, a.admin_port, a.id, str(slot))
            st = wait_done(cb)
            t1 = time.perf_counter()
            if st["keys"] != n:
                raise RuntimeError(f"slot {slot}: imported {st['keys']} keys, expected {n}")
            cluster.apply(cluster.moved | {slot})
            t2 = time.perf_counter()
            windows.append((t2 - t0) * 1000)
            copies.append((t1 - t0) * 1000)
    windows.sort()
    copies.sort()
    p50, p99 = percentile(windows, 0.50), percentile(windows, 0.99)
    ctx.say(f"window ms: p50 {p50:.1f}, p99 {p99:.1f}, max {windows[-1]:.1f}; "
            f"of which copy (IMPORT → done): p50 {statistics.median(copies):.1f}, "
            f"p99 {percentile(copies, 0.99):.1f}")
    return [
        Row(f"write-refusal window, {n:,}-key slot, p50", p50, None, "ms"),
        Row(f"write-refusal window, {n:,}-key slot, p99", p99, None, "ms",
            target=Target("<=", 50, on="ours"), note=f"{len(windows)} trials"),
    ]
