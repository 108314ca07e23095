"""Running ``redis-benchmark --csv`` and reading its figures and errors.

redis-benchmark 7.0's --csv prints a header line
``"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"``
then one quoted line per test. It aborts the whole run (exit 1) on the first error
reply, printing ``Error from server: …``, so callers run one test per invocation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field

from .procs import LOOPBACK, ToolResult, run_tool

COLUMNS = ("rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms",
           "p99_latency_ms", "max_latency_ms")


@dataclass
class BenchResult:
    tests: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> column -> value
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def argv(port: int, tests: str, n: int, clients: int = 50, pipeline: int = 1,
         extra: Sequence[str] = ()) -> list[str]:
    return ["redis-benchmark", "-h", LOOPBACK, "-p", str(port), "-c", str(clients), "-n", str(n),
            "-P", str(pipeline), "-t", tests, "--csv", *extra]


def parse(r: ToolResult) -> BenchResult:
    stdout, stderr, rc, timed_out = r.stdout, r.stderr, r.rc, r.timed_out
    res = BenchResult(seconds=r.seconds)
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith('"'):
            row = next(csv.reader([line]))
            if row[0] == "test":
                continue
            try:
                res.tests[row[0]] = {c: float(v) for c, v in zip(COLUMNS, row[1:], strict=True)}
                continue
            except ValueError:
                pass
        _classify(line, res)
    for line in stderr.splitlines():
        if line.strip():
            _classify(line.strip(), res)
    if timed_out:
        res.errors.append("redis-benchmark timed out (killed)")
    elif rc != 0:
        res.errors.append(f"redis-benchmark exited with {rc}")
    elif not res.tests:
        res.errors.append("redis-benchmark printed no results")
    return res


def _classify(line: str, res: BenchResult) -> None:
    low = line.lower()
    if low.startswith("warning"):
        res.warnings.append(line)
    else:  # "Error from server: …", "Could not connect …", anything unexpected
        res.errors.append(line)


def run(port: int, tests: str, n: int, *, clients: int = 50, pipeline: int = 1,
        extra: Sequence[str] = (), timeout: float | None = None) -> BenchResult:
    if timeout is None:
        timeout = 60 + n / 500  # generous: ~500 requests/s at the very least
    return parse(run_tool(argv(port, tests, n, clients, pipeline, extra), timeout))
