"""Opt-in section: where the data node spends its time under ``redis-benchmark -P 16``.

For GET then SET, samples a fresh node with py-spy (not a project dependency:
``.venv/bin/pip install py-spy``) and prints the top self-time lines and functions.
Run with ``--only profile``.
"""

from __future__ import annotations

import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import procs, redisbench
from .client import load_keys
from .report import Context, Row

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
KEYS = 100_000


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    local = Path(sys.executable).with_name("py-spy")
    return found or (str(local) if local.exists() else None)


def tidy(path: str) -> str:
    """Shorten absolute paths: repo-relative for our code, from site-packages/lib for others."""
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker == "site-packages/" else "stdlib/" + tail.split("/", 1)[-1]
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else os.path.basename(path)


EVENT_LOOP = "Runner.run (stdlib/asyncio/runners.py)"


def source(name: str) -> str:
    """`` | <source text>`` of a ``path:line func`` entry for a file of this checkout."""
    where = name.split(" ", 1)[0]
    path, _, line = where.rpartition(":")
    if not line.isdigit() or os.path.isabs(path) or not os.path.exists(path):
        return ""
    text = linecache.getline(path, int(line)).strip()
    return f"  | {text}" if text else ""


def leaf_counts(raw: str) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """(self by line, self by function, inclusive by function, total samples) of collapsed stacks."""
    by_line: Counter[str] = Counter()
    by_func: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for f in stack.split(";"):
            m = FRAME.match(f.strip())
            frames.append((m["func"], tidy(m["file"]), m["line"]) if m else (f, "?", None))
        func, file, line = frames[-1]
        by_line[f"{file}:{line} {func}"] += n
        by_func[f"{func} ({file})"] += n
        for name in {f"{fn} ({fl})" for fn, fl, _ in frames}:
            incl[name] += n
    return by_line, by_func, incl, total


def datanode(ctx: Context) -> list[Row]:
    spy = py_spy()
    if spy is None:
        msg = "py-spy not found: install it locally with .venv/bin/pip install py-spy"
        ctx.say(msg)
        return [Row("py-spy profile", None, None, error=msg)]
    n = 300_000 if ctx.quick else 2_000_000
    return [profile_one(ctx, spy, test, n) for test in ("get", "set")]


def profile_one(ctx: Context, spy: str, test: str, n: int) -> Row:
    """One fresh node with KEYS keys, ``redis-benchmark -t <test> -P 16`` under py-spy."""
    name = f"{test.upper()} -P 16 under py-spy"
    out = Path(tempfile.mkdtemp(prefix="skbench-spy-")) / "stacks.txt"
    try:
        with procs.datanode() as node:
            load_keys(node.port, KEYS)
            spy_proc = procs.spawn([spy, "record", "--pid", str(node.pid), "--format", "raw",
                                    "--rate", "250", "--nonblocking", "--full-filenames",
                                    "-o", str(out)], log=out.with_suffix(".log"))
            try:
                res = redisbench.run(node.port, test, n, pipeline=16, extra=["-r", str(KEYS)])
            finally:
                if spy_proc.poll() is None:
                    spy_proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
                try:
                    spy_proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    procs.kill_group(spy_proc, grace=0)
        raw = out.read_text() if out.exists() else ""
        if not raw:
            log = out.with_suffix(".log")
            why = log.read_text(errors="replace")[-300:] if log.exists() else ""
            return Row(name, None, None, error=f"no samples: {why.strip()}")
        by_line, by_func, incl, total = leaf_counts(raw)
        rps = res.tests.get(test.upper(), {}).get("rps")
        ctx.say(f"\nredis-benchmark -t {test} -P 16 -c 50 -n {n} -r {KEYS} under py-spy (250 Hz, "
                f"non-blocking): {rps or 0:,.0f} rps; {total} samples (idle samples excluded)")
        for title, counter, k in (("self time by line", by_line, 25),
                                  ("self time by function", by_func, 15),
                                  ("inclusive time by function", incl, 20)):
            ctx.say(f"-- top {title} (% of samples)")
            for entry, c in counter.most_common(k):
                text = source(entry) if counter is by_line else ""
                ctx.say(f"  {100 * c / total:5.1f}%  {entry}{text}")
        ctx.say(f"({EVENT_LOOP} is time in uvloop's C code: socket reads/writes, polling; "
                "time in C functions called from a Python line counts for that line)")
        return Row(name, rps, None, "rps", error=" ".join(res.errors))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
