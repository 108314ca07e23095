"""Rows of figures, the run context, and rendering as a text table or Markdown."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .procs import redis_version


@dataclass(frozen=True)
class Target:
    """``op`` ("<=" or ">=") ``value`` applied to the ratio ours/reference or to ``ours``."""

    op: str
    value: float
    on: str = "ratio"  # "ratio" | "ours"
    of: str = "ref"  # how the reference is called in the target text

    def text(self) -> str:
        sym = "≥" if self.op == ">=" else "≤"
        return f"{sym} {self.value:g}× {self.of}" if self.on == "ratio" else f"{sym} {self.value:g}"

    def met(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value


@dataclass
class Row:
    figure: str
    ours: float | None
    ref: float | None
    unit: str = ""
    target: Target | None = None
    must_run: bool = False  # target "no errors": met unless ``error``
    error: str = ""
    note: str = ""
    show_ratio: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.show_ratio or self.ours is None or self.ref is None or self.ref == 0:
            return None
        return self.ours / self.ref

    @property
    def target_text(self) -> str:
        if self.target is not None:
            return self.target.text() + (" & no errors" if self.must_run else "")
        return "no errors" if self.must_run else "—"

    @property
    def met(self) -> str:
        if self.error:
            return "ERROR"
        if self.target is not None:
            x = self.ratio if self.target.on == "ratio" else self.ours
            if x is None:
                return "n/a"
            return "yes" if self.target.met(x) else "NO"
        return "yes" if self.must_run else "—"


@dataclass
class Context:
    quick: bool
    rounds: int | None = None  # --rounds: overrides each section's default
    notes: list[str] = field(default_factory=list)  # detail lines for the Markdown report

    def rounds_or(self, default: int) -> int:
        return self.rounds if self.rounds else default

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.notes.append(text)


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit == "rps":
        return f"{x:,.0f}"
    if unit == "MB":
        return f"{x:,.1f} MB"
    if unit == "ms":
        return f"{x:.3f} ms"
    if unit == "B":
        return f"{x:,.0f} B"
    return f"{x:.2f}"


def cells(r: Row) -> list[str]:
    ratio = r.ratio
    return [
        r.figure + (f" ({r.unit})" if r.unit == "rps" else ""),
        fmt(r.ours, r.unit),
        fmt(r.ref, r.unit),
        "—" if ratio is None else f"{ratio:.2f}",
        r.target_text,
        r.met,
    ]


HEADER = ["figure", "ours", "reference", "ratio", "target", "met?"]


def text_table(rows: Sequence[Row]) -> str:
    data = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(row[i]) for row in data) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(data):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        for what, text in (("error", r.error), ("note", r.note)):
            if text:
                lines.append(f"  {what} [{r.figure}]: {text}")
    return "\n".join(lines)


def md_table(rows: Sequence[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    return "\n".join(out)


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    try:
        git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip() or "none"
        if subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                          timeout=10).stdout.strip():
            rev += " (+ uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return {
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "CPU": cpu,
        "Python": platform.python_version(),
        "redis-server": redis_version(),
        "kernel": platform.release(),
        "load average at start": load,
        "git commit": rev,
    }


def markdown(rows: Sequence[Row], ctx: Context, command: str, facts: dict[str, str],
             started: dt.datetime, seconds: float) -> str:
    out = [
        "# slotkeeper benchmarks",
        "",
        "Generated by `make bench` / `python -m bench`; figures only, nothing is asserted.",
        "Figures with a reference run the data node (\"ours\") and redis-server (\"reference\")",
        "side by side in the same run, interleaved round by round; each is the median of the rounds.",
        "The machine is shared and noisy: compare ratios, not absolute numbers.",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')} (took {seconds / 60:.1f} min)",
        f"- command: `{command}`",
    ]
    out += [f"- {k}: {v}" for k, v in facts.items()]
    out += ["", "## Summary", "", md_table(rows), ""]
    problems = [(r.figure, w, t) for r in rows for w, t in (("error", r.error), ("note", r.note)) if t]
    if problems:
        out += ["### Errors and notes", ""]
        out += [f"- **{fig}** ({w}): {t}" for fig, w, t in problems]
        out.append("")
    out += ["## Details", "", "```text", *ctx.notes, "```", ""]
    return "\n".join(out)
