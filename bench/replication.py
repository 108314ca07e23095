"""Replication: primary throughput with replicas attached, replica lag, full sync of
1,000,000 keys (time, and the primary's GET latency meanwhile), acknowledged writes.

1. Throughput: ``redis-benchmark -t set -P 16 -c 50 -r 100000`` against a primary
   with no replica (a node that never had one: the reference), with one replica and
   with two, interleaved round by round. Target: ≥ 0.7× the no-replica figure.
   While the replicated runs go, a lag probe writes a key every 20 ms and times
   ``WAIT <replicas> 2000`` after it: the time until every replica has applied and
   acknowledged the write (p50/p99); the byte lag (primary offset minus each
   replica's applied offset, sampled every 20 ms) is printed too.
2. Full sync: a primary holding 1,000,000 keys × 16 B gets a fresh replica; the
   time from REPLICAOF until the replica's link is up with every key, and the
   primary's GET latency meanwhile (a paced probe: one connection, a GET every
   millisecond) next to the same probe with no sync. redis-server (diskless sync,
   no delay) does the same as the reference.
3. Acknowledged writes: ``redis-benchmark -t set -P 1 -c 50`` with one replica and
   ``min_replicas_to_ack 1`` next to the same run with asynchronous replication.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import hiredis

from . import procs, redisbench
from .client import Client, encode, load_keys
from .probe import percentile
from .procs import Server
from .report import Context, Row, Target

KEYS = 1_000_000


# --------------------------------------------------------------------------- processes


class Node:
    """A data node whose admin port is known (for SLOTKEEPER commands)."""

    def __init__(self, label: str, *flags: str) -> None:
        self.admin_port = procs.free_port()
        self.server = Server("ours", label, self._argv(flags))

    def _argv(self, flags: tuple[str, ...]) -> Callable[[int, Path], list[str]]:
        def argv(port: int, d: Path) -> list[str]:
            script = Path(sys.executable).with_name("slotkeeper")
            base = [str(script)] if script.exists() else [sys.executable, "-m", "slotkeeper"]
            return [*base, "datanode", "--port", str(port), "--admin-port", str(self.admin_port),
                    "--dir", str(d), "--snapshot-interval", "0", "--log-level", "warning", *flags]

        return argv

    def start(self) -> Node:
        self.server.start()
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.port, timeout=timeout)

    def admin(self) -> Client:
        return Client(self.admin_port, timeout=60)

    def stop(self) -> None:
        self.server.stop()


def _redis_replica_argv(port: int, d: Path) -> list[str]:
    return [*procs._redis_argv(port, d), "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0"]


def repl_info(port: int) -> dict[str, str]:
    with Client(port, timeout=10) as c:
        return c.info("replication")


def attach(replica_port: int, primary_port: int, timeout: float = 600.0) -> float:
    """REPLICAOF, then wait for the link to be up with the sync done; the seconds taken."""
    t0 = time.monotonic()
    with Client(replica_port) as c:
        c.call("REPLICAOF", procs.LOOPBACK, primary_port)
    while True:
        info = repl_info(replica_port)
        if info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == "0":
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"replica on {replica_port} not synced after {timeout:.0f}s")
        time.sleep(0.01)


def detach(replica_port: int) -> None:
    with Client(replica_port) as c:
        c.call("REPLICAOF", "NO", "ONE")


def caught_up(primary: int, replicas: list[int], timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while True:
        want = int(repl_info(primary)["master_repl_offset"])
        if all(int(repl_info(r).get("slave_repl_offset", -1)) >= want for r in replicas):
            return
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("replicas did not catch up")
        time.sleep(0.02)


# --------------------------------------------------------------------------- probes


class LagProbe:
    """Every ``period`` s: SET a key, then time ``WAIT n 2000`` (applied and acknowledged
    by every replica); and sample the byte lag of each replica."""

    def __init__(self, primary: int, replicas: list[int], period: float = 0.02) -> None:
        self.primary, self.replicas, self.period = primary, replicas, period
        self.lag_ms: list[float] = []
        self.lag_bytes: list[int] = []
        self.timeouts = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._wait_loop, daemon=True),
                         threading.Thread(target=self._bytes_loop, daemon=True)]

    def __enter__(self) -> LagProbe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _wait_loop(self) -> None:
        n = len(self.replicas)
        with Client(self.primary, timeout=30) as c:
            i = 0
            while not self._stop.is_set():
                i += 1
                c.call("SET", "bench:lag", i)
                t0 = time.perf_counter()
                got = c.call("WAIT", n, 2000)
                dt = (time.perf_counter() - t0) * 1000
                if got == n:
                    self.lag_ms.append(dt)
                else:
                    self.timeouts += 1
                self._stop.wait(self.period)

    def _bytes_loop(self) -> None:
        conns = [Client(p, timeout=30) for p in (self.primary, *self.replicas)]
        try:
            while not self._stop.is_set():
                want = int(conns[0].info("replication")["master_repl_offset"])
                for c in conns[1:]:
                    got = int(c.info("replication").get("slave_repl_offset", 0))
                    self.lag_bytes.append(max(0, want - got))
                self._stop.wait(self.period)
        finally:
            for c in conns:
                c.close()


class GetProbe:
    """One connection, a GET every millisecond, until stopped: latency percentiles."""

    def __init__(self, port: int, keys: int) -> None:
        self.port, self.keys = port, keys
        self.samples: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GetProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with Client(self.port, timeout=30) as c:
            i = 0
            nxt = time.perf_counter()
            while not self._stop.is_set():
                i += 1
                t0 = time.perf_counter()
                c.sock.sendall(encode("GET", b"key:%012d" % (i * 7919 % self.keys)))
                r = c.read(1)[0]
                self.samples.append((time.perf_counter() - t0) * 1000)
                if isinstance(r, hiredis.ReplyError):
                    self.errors.append(str(r))
                nxt += 0.001
                pause = nxt - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    nxt = time.perf_counter()

    def p(self, q: float) -> float | None:
        xs = sorted(self.samples)
        return percentile(xs, q) if xs else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _p(xs: Sequence[float], q: float) -> float | None:
    return percentile(sorted(xs), q) if xs else None


# --------------------------------------------------------------------------- 1. throughput


def throughput(ctx: Context) -> list[Row]:
    rounds = ctx.rounds_or(3)
    n = 200_000 if ctx.quick else 1_000_000
    ctx.say(f"redis-benchmark -t set -P 16 -c 50 -n {n:,} -r 100000, {rounds} interleaved rounds: "
            "a primary that never had a replica (reference), one with 1 replica, with 2")
    rps: dict[str, list[float]] = {"none": [], "1": [], "2": []}
    cpu_us: dict[str, list[float]] = {"none": [], "1": [], "2": []}  # primary CPU per SET
    lag_ms: dict[str, list[float]] = {"1": [], "2": []}
    lag_bytes: dict[str, list[int]] = {"1": [], "2": []}
    errors: list[str] = []
    with ExitStack() as stack:
        alone = stack.enter_context(procs.datanode())
        primary = Node("primary").start()
        stack.callback(primary.stop)
        reps = []
        for i in range(2):
            r = Node(f"replica {i + 1}").start()
            stack.callback(r.stop)
            reps.append(r)
        attach(reps[0].port, primary.port)
        for rnd in range(rounds):
            order = ["none", "1", "2"] if rnd % 2 == 0 else ["2", "1", "none"]
            for kind in order:
                if kind == "none":
                    c0 = cpu_seconds(alone.pid)
                    res = redisbench.run(alone.port, "set", n, pipeline=16, extra=["-r", "100000"])
                    cpu_us[kind].append((cpu_seconds(alone.pid) - c0) / n * 1e6)
                    note = ""
                else:
                    attached = reps[: int(kind)]
                    if kind == "2":
                        attach(reps[1].port, primary.port)
                    caught_up(primary.port, [r.port for r in attached])
                    c0 = cpu_seconds(primary.server.pid)
                    with LagProbe(primary.port, [r.port for r in attached]) as probe:
                        res = redisbench.run(primary.port, "set", n, pipeline=16,
                                             extra=["-r", "100000"])
                    cpu_us[kind].append((cpu_seconds(primary.server.pid) - c0) / n * 1e6)
                    caught_up(primary.port, [r.port for r in attached])
                    if kind == "2":
                        detach(reps[1].port)
                    lag_ms[kind] += probe.lag_ms
                    lag_bytes[kind] += probe.lag_bytes
                    note = (f", lag p50 {_p(probe.lag_ms, 0.5) or 0:.2f} ms p99 "
                            f"{_p(probe.lag_ms, 0.99) or 0:.2f} ms ({len(probe.lag_ms)} probes, "
                            f"{probe.timeouts} timed out), byte lag p99 "
                            f"{_p(probe.lag_bytes, 0.99) or 0:,.0f}")
                errors += res.errors
                got = res.tests.get("SET", {}).get("rps")
                if got:
                    rps[kind].append(got)
                label = "no replica" if kind == "none" else f"{kind} replica(s)"
                ctx.say(f"round {rnd + 1}/{rounds} {label}: SET {got or 0:,.0f} rps, primary CPU "
                        f"{cpu_us[kind][-1]:.2f} µs/SET{note}"
                        + (f" ERRORS {res.errors[:1]}" if res.errors else ""))
    base = _median(rps["none"])
    for k in ("1", "2"):
        if len(rps[k]) == len(rps["none"]) == rounds:
            pairs = [a / b for a, b in zip(rps[k], rps["none"], strict=True)]
            ctx.say(f"  {k} replica(s) ÷ none per round: " + ", ".join(f"{x:.2f}" for x in pairs))
    rows = [
        Row("SET -P 16, 1 replica vs none", _median(rps["1"]), base, "rps",
            target=Target(">=", 0.7, of="no replica"), must_run=True),
        Row("SET -P 16, 2 replicas vs none", _median(rps["2"]), base, "rps",
            target=Target(">=", 0.7, of="no replica"), must_run=True),
    ]
    for k in ("1", "2"):
        rows.append(Row(f"primary CPU per SET, {k} replica(s) vs none (µs)", _median(cpu_us[k]),
                        _median(cpu_us["none"]), target=Target("<=", 1 / 0.7, of="no replica"),
                        note="the primary's own cost (user + system CPU ÷ SETs): on a machine "
                        "where replicas do not share its CPUs, ≤ 1.43× means ≥ 0.7× throughput"))
    for k in ("1", "2"):
        rows.append(Row(f"replica lag p99 under SET -P 16, {k} replica(s)",
                        _p(lag_bytes[k], 0.99), None, "B",
                        note=f"bytes of stream not yet applied (p50 "
                        f"{_p(lag_bytes[k], 0.5) or 0:,.0f} B), sampled every 20 ms"))
        rows.append(Row(f"write → acknowledged by all p99, {k} replica(s)", _p(lag_ms[k], 0.99),
                        None, "ms", note=f"SET then WAIT {k} on a saturated primary (p50 "
                        f"{_p(lag_ms[k], 0.5) or 0:.2f} ms): includes the primary's queueing"))
    if errors:
        rows[0].error = "; ".join(dict.fromkeys(errors))[:300]
    return rows


# --------------------------------------------------------------------------- 2. full sync


def _full_sync_once(ctx: Context, label: str, primary: Server, replica: Server) -> tuple[float, float | None, float | None]:
    """(sync seconds, GET p99 during the sync, GET p99 idle) for one pair."""
    with GetProbe(primary.port, KEYS) as idle:
        time.sleep(2.0)
    with GetProbe(primary.port, KEYS) as during:
        time.sleep(0.2)
        took = attach(replica.port, primary.port)
    with Client(replica.port) as c:
        size = c.call("DBSIZE")
    ctx.say(f"{label}: full sync of {KEYS:,} keys in {took:.2f}s (replica DBSIZE {size}); "
            f"primary GET p99 {during.p(0.99) or 0:.3f} ms during ({len(during.samples)} GETs, "
            f"max {max(during.samples, default=0):.1f} ms), {idle.p(0.99) or 0:.3f} ms idle"
            + (f"; errors {during.errors[:1]}" if during.errors else ""))
    if size != KEYS:
        raise RuntimeError(f"{label}: replica holds {size} keys, not {KEYS}")
    return took, during.p(0.99), idle.p(0.99)


def full_sync(ctx: Context) -> list[Row]:
    results: dict[str, tuple[float, float | None, float | None]] = {}
    with ExitStack() as stack:
        pairs = {
            "ours": (stack.enter_context(procs.datanode()), stack.enter_context(procs.datanode())),
            "redis": (stack.enter_context(procs.redis_server()),
                      stack.enter_context(Server("redis", "redis-server replica", _redis_replica_argv))),
        }
        for kind, (primary, replica) in pairs.items():
            secs, errs = load_keys(primary.port, KEYS)
            ctx.say(f"{primary.label}: loaded {KEYS:,} keys in {secs:.1f}s ({errs} errors)")
            results[kind] = _full_sync_once(ctx, primary.label, primary, replica)
    (o_t, o_d, o_i), (r_t, r_d, r_i) = results["ours"], results["redis"]
    return [
        Row(f"full sync of {KEYS:,} keys (s)", o_t, r_t, note="reference: redis-server, diskless"),
        Row("primary GET p99 during the full sync", o_d, r_d, "ms",
            note=f"idle p99: ours {o_i or 0:.3f} ms, redis-server {r_i or 0:.3f} ms"),
    ]


# --------------------------------------------------------------------------- 3. acked writes


def acked_writes(ctx: Context) -> list[Row]:
    rounds = ctx.rounds_or(3)
    n = 20_000 if ctx.quick else 100_000
    ctx.say(f"redis-benchmark -t set -P 1 -c 50 -n {n:,} against a primary with one replica: "
            f"min_replicas_to_ack 1 vs asynchronous, {rounds} interleaved rounds")
    rps: dict[int, list[float]] = {0: [], 1: []}
    p99: dict[int, list[float]] = {0: [], 1: []}
    errors: list[str] = []
    with ExitStack() as stack:
        primary = Node("primary").start()
        stack.callback(primary.stop)
        replica = Node("replica").start()
        stack.callback(replica.stop)
        attach(replica.port, primary.port)
        for rnd in range(rounds):
            for acks in ((0, 1) if rnd % 2 == 0 else (1, 0)):
                with primary.admin() as a:
                    a.call("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", acks, 5000)
                res = redisbench.run(primary.port, "set", n, pipeline=1)
                errors += res.errors
                cols = res.tests.get("SET")
                if cols:
                    rps[acks].append(cols["rps"])
                    p99[acks].append(cols["p99_latency_ms"])
                ctx.say(f"round {rnd + 1}/{rounds} min_replicas_to_ack {acks}: "
                        + (f"SET {cols['rps']:,.0f} rps, p99 {cols['p99_latency_ms']:.3f} ms"
                           if cols else f"no result {res.errors[:1]}"))
        with primary.admin() as a:
            a.call("SLOTKEEPER", "MIN-REPLICAS-TO-ACK", 0)
    row = Row("SET -P 1 -c 50, min_replicas_to_ack 1 vs async", _median(rps[1]), _median(rps[0]),
              "rps", note=f"p99 {_median(p99[1]) or 0:.3f} ms acked, {_median(p99[0]) or 0:.3f} ms async")
    if errors:
        row.error = "; ".join(dict.fromkeys(errors))[:300]
    return [row]

