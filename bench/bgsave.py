"""GET latency while snapshots run: drive BGSAVE back to back under a redis-benchmark load."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hiredis

from . import redisbench
from .client import Client
from .procs import Background, Server, ToolResult

POLL = 0.02  # seconds between INFO persistence polls (done in idle runs too, for symmetry)


def in_progress(c: Client) -> bool:
    return c.info("persistence").get("rdb_bgsave_in_progress") == "1"


def wait_idle(c: Client, timeout: float = 600.0) -> float:
    """Wait until no BGSAVE runs; returns the seconds waited."""
    t0 = time.monotonic()
    while in_progress(c):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"BGSAVE still running after {timeout:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - t0


def bgsave_available(srv: Server, timeout: float = 600.0) -> tuple[bool, str]:
    """Run one BGSAVE to the end; (False, why) if it errors, does nothing or fails."""
    with srv.client() as c:
        wait_idle(c, timeout)
        t0 = time.monotonic()
        reply = c.call_raw("BGSAVE")
        if isinstance(reply, hiredis.ReplyError):
            return False, f"BGSAVE answered an error: {reply}"
        seen = False
        while True:
            info = c.info("persistence")
            if info.get("rdb_bgsave_in_progress") == "1":
                seen = True
            elif seen or time.monotonic() - t0 > 2.0:
                break
            if time.monotonic() - t0 > timeout:
                return False, f"BGSAVE still running after {timeout:.0f}s"
            time.sleep(0.02)
        took = time.monotonic() - t0
        status = info.get("rdb_last_bgsave_status", "?")
        stats = c.info("stats")
    fork = stats.get("latest_fork_usec")
    if not seen:
        return False, f"BGSAVE answered {reply!r} but no background save ran (INFO persistence)"
    if status != "ok":
        return False, f"BGSAVE ran but rdb_last_bgsave_status={status}"
    return True, f"ok, took {took:.2f}s" + (f", fork {int(fork) / 1000:.1f} ms" if fork else "")


@dataclass
class Measurement:
    p99: float | None = None
    p50: float | None = None
    rps: float | None = None
    extra: str = ""  # load-specific figures for the details
    bgsaves: int = 0
    coverage: float = 0.0  # share of the load's wall time with a BGSAVE running
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.p99 is None:
            return "no result: " + "; ".join(self.errors[:2])
        return (f"p50 {self.p50:.3f} ms, p99 {self.p99:.3f} ms{self.extra}, {self.rps:,.0f} rps "
                f"in {self.seconds:.1f}s; {self.bgsaves} BGSAVE started, snapshotting "
                f"{self.coverage:.0%} of the time")


@dataclass(frozen=True)
class Load:
    """A GET load run in the background: its command and how to read its figures."""

    name: str
    clients: int  # connections it opens (to start BGSAVE only once they are all in)
    argv: Callable[[int], list[str]]  # port -> argv
    read: Callable[[ToolResult, Measurement], None]


def redis_benchmark_load(n: int, keys: int) -> Load:
    def read(r: ToolResult, m: Measurement) -> None:
        res = redisbench.parse(r)
        m.errors += res.errors
        cols = res.tests.get("GET")
        if cols:
            m.p99, m.p50, m.rps = cols["p99_latency_ms"], cols["p50_latency_ms"], cols["rps"]

    return Load(f"redis-benchmark -t get -c 50 -n {n} -r {keys}", 50,
                lambda port: redisbench.argv(port, "get", n, extra=["-r", str(keys)]), read)


def probe_load(seconds: float, keys: int, conns: int = 8, rate: float = 500.0) -> Load:
    def read(r: ToolResult, m: Measurement) -> None:
        try:
            d = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            m.errors.append(f"probe failed (rc={r.rc}): {r.stderr.strip()[-300:]}")
            return
        m.p99, m.p50, m.rps = d["p99"], d["p50"], d["rps"]
        m.extra = f" (p99.9 {d['p999']:.3f}, max {d['max']:.1f}, p99 from schedule {d['p99_sched']:.3f})"
        m.errors += d["errors"]

    cmd = [sys.executable, "-m", "bench.probe", "--keys", str(keys), "--seconds", str(seconds),
           "--conns", str(conns), "--rate", str(rate)]
    return Load(f"probe: {conns} connections × {rate:g} GET/s for {seconds:g}s", conns,
                lambda port: [*cmd, str(port)], read)


def measure(srv: Server, load: Load, during: bool) -> Measurement:
    """Run ``load`` against ``srv``; with ``during``, keep a BGSAVE running all along."""
    m = Measurement()
    with srv.client() as c:
        wait_idle(c)
        bg = Background(load.argv(srv.port))
        try:
            # Start snapshotting only once the load is on: the fork must fall in the window.
            while not bg.done() and time.monotonic() - bg.t0 < 2.0:
                if int(c.info("clients").get("connected_clients", "0")) >= load.clients + 1:
                    break
                time.sleep(0.005)
            t0 = busy_from = time.monotonic()
            busy = 0.0
            while not bg.done():
                running = in_progress(c)  # polled in idle runs too: the same extra load
                if during and not running:
                    reply = c.call_raw("BGSAVE")
                    if isinstance(reply, hiredis.ReplyError):
                        m.errors.append(f"BGSAVE: {reply}")
                    else:
                        m.bgsaves += 1
                        running = True
                time.sleep(POLL)
                now = time.monotonic()
                if running:
                    busy += now - busy_from
                busy_from = now
            m.seconds = time.monotonic() - t0
            result = bg.finish(timeout=60)
        finally:
            bg.kill()
        m.coverage = min(1.0, busy / m.seconds) if m.seconds else 0.0
        if during:
            wait_idle(c)
    load.read(result, m)
    return m
