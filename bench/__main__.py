"""``python -m bench [--quick] [--only NAME[,NAME]] [--rounds N] [--out FILE]``.

Prints each section's progress and a final summary table (figure | ours | reference |
ratio | target | met?). Figures are never asserted: the exit status is non-zero only
when the redis tools are missing or a section could not run at all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

from . import procs, report, sections


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="about a tenth of the requests")
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help=f"sections to run (names or prefixes): {', '.join(sections.SECTIONS)}")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="interleaved rounds per figure (default 3; 2 for latency with --quick)")
    p.add_argument("--out", metavar="FILE", help="also write the report as Markdown to FILE")
    return p.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that kill servers


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        names = sections.select(args.only)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    missing = procs.missing_tools()
    if missing:
        print(f"bench: missing {', '.join(missing)}; {procs.INSTALL_HINT}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    facts = report.machine_facts()
    command = shlex.join(["python", "-m", "bench", *argv])
    ctx = report.Context(quick=args.quick, rounds=args.rounds)
    ctx.say(f"slotkeeper bench: {command}")
    ctx.say("; ".join(f"{k}: {v}" for k, v in facts.items()))
    rows: list[report.Row] = []
    failed = False
    for name in names:
        ctx.say(f"\n== {name} ==")
        s0 = time.monotonic()
        try:
            got = sections.SECTIONS[name](ctx)
        except Exception as exc:  # report and go on with the other sections
            traceback.print_exc()
            got = [report.Row(name, None, None, error=f"section failed: {exc!r}")]
            failed = True
        ctx.say(report.text_table(got))
        ctx.say(f"({name}: {time.monotonic() - s0:.0f}s)")
        rows += got
    seconds = time.monotonic() - t0
    print(f"\n== summary ({seconds / 60:.1f} min) ==")
    print(report.text_table(rows))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.markdown(rows, ctx, command, facts, started, seconds))
        print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
