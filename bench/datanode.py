"""The data node section: throughput, memory and latency during BGSAVE, next to redis-server.

Every figure is measured on both servers in the same run, interleaved (ours, reference,
reference, ours, …) so that the noise of a shared machine hits both alike; the figure
is the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from . import procs, redisbench
from .bgsave import bgsave_available, measure, probe_load, redis_benchmark_load
from .client import load_keys
from .procs import Server
from .report import Context, Row, Target, fmt

DEFAULT_TESTS = ("set,get", "incr", "lpush", "rpush", "lpop", "rpop", "sadd", "hset", "spop",
                 "zadd", "zpopmin", "lrange", "mset")
KEYS = 1_000_000


@contextmanager
def both() -> Iterator[tuple[Server, Server]]:
    """A fresh data node and redis-server, killed (process groups) on the way out."""
    with ExitStack() as stack:
        ours = stack.enter_context(procs.datanode())
        ref = stack.enter_context(procs.redis_server())
        yield ours, ref


def order(round_no: int, ours: Server, ref: Server) -> tuple[Server, Server]:
    return (ours, ref) if round_no % 2 == 0 else (ref, ours)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def short(lines: list[str], limit: int = 3) -> str:
    uniq = list(dict.fromkeys(x[:200] for x in lines))
    more = f" (+{len(uniq) - limit} more)" if len(uniq) > limit else ""
    return "; ".join(uniq[:limit]) + more


# --------------------------------------------------------------------------- throughput


@dataclass(frozen=True)
class Job:
    tests: str
    n: int
    pipeline: int

    @property
    def label(self) -> str:
        return f"-t {self.tests} -P {self.pipeline} -n {self.n}"


def throughput(ctx: Context) -> list[Row]:
    rounds = ctx.rounds_or(3)
    n1, n16 = (20_000, 100_000) if ctx.quick else (200_000, 1_000_000)
    # LRANGE_600 is slow everywhere; a quarter of the requests keeps the run short.
    jobs = [Job(t, n1 // 4 if t == "lrange" else n1, 1) for t in DEFAULT_TESTS]
    jobs.append(Job("set,get", n16, 16))
    ctx.say(f"redis-benchmark -c 50, {rounds} interleaved rounds, one invocation per test "
            "(it aborts on the first error reply); figures are the median over rounds")
    rps: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: dict[Job, list[str]] = defaultdict(list)
    errors: dict[Job, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    crashes: list[str] = []
    with both() as (ours, ref):
        for r in range(rounds):
            for job in jobs:
                line: dict[str, str] = {}
                for srv in order(r, ours, ref):
                    note = srv.ensure_alive()
                    if note:
                        crashes.append(note)
                        ctx.say(f"  !! {note}")
                    res = redisbench.run(srv.port, job.tests, job.n, pipeline=job.pipeline)
                    for name, cols in res.tests.items():
                        rps[(job.pipeline, name)][srv.kind].append(cols["rps"])
                        if name not in names[job]:
                            names[job].append(name)
                    errors[job][srv.kind] += res.errors
                    line[srv.kind] = ", ".join(
                        f"{n} {c['rps']:,.0f}" for n, c in res.tests.items()
                    ) + (f" ERRORS: {short(res.errors, 1)}" if res.errors else "")
                ctx.say(f"round {r + 1}/{rounds} {job.label}: ours [{line['ours']}] "
                        f"| ref [{line['redis']}]")
    ctx.say("ours/ref per round, each pair run back to back (a steadier view than the ratio "
            "of medians on a noisy machine):")
    rows: list[Row] = []
    for job in jobs:
        for name in names[job] or [job.tests.upper()]:
            s = rps[(job.pipeline, name)]
            if len(s["ours"]) == len(s["redis"]) == rounds:
                pairs = [o / r for o, r in zip(s["ours"], s["redis"], strict=True)]
                ctx.say(f"  {name} -P {job.pipeline}: " + ", ".join(f"{x:.2f}" for x in pairs)
                        + f" (median {statistics.median(pairs):.2f})")
            target = None
            if name in ("SET", "GET"):
                target = Target(">=", 0.8 if job.pipeline == 1 else 0.6)
            err = errors[job]["ours"]
            ok_rounds = len(s["ours"])
            row = Row(f"{name} -P {job.pipeline}", median(s["ours"]), median(s["redis"]), "rps",
                      target=target, must_run=True)
            if err:
                row.error = f"{rounds - ok_rounds}/{rounds} rounds failed: {short(err)}" \
                    if ok_rounds else short(err)
            if errors[job]["redis"]:
                row.note = f"reference errors: {short(errors[job]['redis'])}"
            rows.append(row)
    if crashes:
        rows.append(Row("data node crashes during throughput", float(len(crashes)), 0.0,
                        error=short(crashes)))
    return rows


# --------------------------------------------------------------------------- memory + BGSAVE


def info_int(srv: Server, section: str, key: str) -> int | None:
    with srv.client() as c:
        v = c.info(section).get(key)
    return int(v) if v is not None and v.lstrip("-").isdigit() else None


def proc_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory(ctx: Context) -> list[Row]:
    """Memory for 1M keys × 16-byte values, then GET p99 idle vs during BGSAVE on the same keys."""
    rows: list[Row] = []
    with both() as (ours, ref):
        base = {s.kind: info_int(s, "memory", "used_memory_rss") or 0 for s in (ours, ref)}
        secs: dict[str, float] = {}
        for srv in (ours, ref):
            secs[srv.kind], errs = load_keys(srv.port, KEYS)
            with srv.client() as c:
                size = c.call("DBSIZE")
            ctx.say(f"{srv.label}: loaded {KEYS:,} keys in {secs[srv.kind]:.1f}s "
                    f"({KEYS / secs[srv.kind]:,.0f} SET/s pipelined), DBSIZE={size}, errors={errs}")
            if errs or size != KEYS:
                rows.append(Row(f"load {KEYS:,} keys ({srv.label})", None, None,
                                error=f"DBSIZE={size}, {errs} error replies"))
        time.sleep(1.0)  # let allocator statistics settle
        rss = {s.kind: info_int(s, "memory", "used_memory_rss") for s in (ours, ref)}
        for s in (ours, ref):
            ctx.say(f"{s.label}: used_memory_rss {fmt(_mb(rss[s.kind]), 'MB')} "
                    f"(/proc VmRSS {fmt(_mb(proc_rss(s.pid)), 'MB')}), empty {fmt(_mb(base[s.kind]), 'MB')}")
        rows.append(Row(f"RSS with {KEYS:,} keys × 16 B", _mb(rss["ours"]), _mb(rss["redis"]), "MB",
                        target=Target("<=", 3.0)))
        per_key = {k: (v - base[k]) / KEYS if v else None for k, v in rss.items()}
        rows.append(Row("RSS per key over empty", per_key["ours"], per_key["redis"], "B"))
        rows.append(Row("pipelined load of 1M SETs", KEYS / secs["ours"], KEYS / secs["redis"], "rps"))
        rows += bgsave_latency(ctx, ours, ref)
    return rows


def _mb(x: int | None) -> float | None:
    return None if x is None else x / 1e6


def bgsave_latency(ctx: Context, ours: Server, ref: Server) -> list[Row]:
    rounds = ctx.rounds_or(2 if ctx.quick else 3)
    loads = {  # label in the rows -> load
        "paced probe, 4k GET/s": probe_load(3.0 if ctx.quick else 8.0, KEYS),
        "redis-benchmark -c 50": redis_benchmark_load(40_000 if ctx.quick else 200_000, KEYS),
    }
    avail: dict[str, str] = {}
    for srv in (ours, ref):
        ok, msg = bgsave_available(srv)
        ctx.say(f"{srv.label}: first BGSAVE of {KEYS:,} keys: {msg}")
        if not ok:
            avail[srv.kind] = msg
    ctx.say(f"GET latency, {rounds} interleaved rounds, idle then during BGSAVE (issued once the "
            "load's clients are connected, re-issued whenever one finishes); loads:")
    for label, load in loads.items():
        ctx.say(f"  {label}: {load.name}")
    ctx.say("  (the paced probe is a light load: its latency shows event-loop stalls such as the "
            "fork; redis-benchmark -c 50 saturates the server, so on a 2-core machine its "
            "latency mostly tracks the CPU the BGSAVE child takes away)")
    p99: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    errs: dict[str, list[str]] = defaultdict(list)
    for r in range(rounds):
        for label, load in loads.items():
            for srv in order(r, ours, ref):
                for during in (False, True):
                    if during and srv.kind in avail:
                        continue
                    m = measure(srv, load, during)
                    errs[srv.kind] += m.errors
                    if m.p99 is not None:
                        p99[(label, srv.kind, during)].append(m.p99)
                    ctx.say(f"round {r + 1}/{rounds} [{label}] {srv.label} "
                            f"{'BGSAVE' if during else 'idle'}: {m.describe()}")
    med = {k: median(v) for k, v in p99.items()}
    rows: list[Row] = []
    for label in loads:
        idle_o, idle_r = med.get((label, "ours", False)), med.get((label, "redis", False))
        bg_o, bg_r = med.get((label, "ours", True)), med.get((label, "redis", True))
        part = [
            Row(f"GET p99 idle ({label})", idle_o, idle_r, "ms"),
            Row(f"GET p99 during BGSAVE ({label})", bg_o, bg_r, "ms"),
            Row(f"GET p99 BGSAVE ÷ idle ({label})", _div(bg_o, idle_o), _div(bg_r, idle_r),
                target=Target("<=", 2.0, on="ours"), show_ratio=False,
                note="reference column: redis-server's own factor"),
        ]
        if "ours" in avail:
            part[1].error = part[2].error = f"BGSAVE not available: {avail['ours']}"
        if "redis" in avail:
            part[1].note = f"redis-server BGSAVE failed: {avail['redis']}"
        rows += part
    if errs["ours"]:
        rows[0].error = short(errs["ours"])
    return rows


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b
