"""Operator commands talking to the coordinator's admin API:
``slotkeeper status|nodes|shards|history|hide|unhide|remove|failover|tag|pause|resume|settings``
``rebalance|add-shard|remove-shard [--dry-run]`` (running a scale out is not wired
yet) and ``migrations [--cancel ID]``.

Entry point: ``coordinator.cli.run(command, argv) -> exit code``.

Which coordinator: ``--coordinator URL``, else ``SLOTKEEPER_COORDINATOR``, else
the file ``slotkeeper up`` writes in its working directory,
``.slotkeeper-up.json`` (``{"coordinator": url, "token": ...}``). The token:
``--token``, else ``SLOTKEEPER_TOKEN``, else that file. A write sent to a
standby is sent again to the leader it names.

Node and shard ids may be shortened to any unique prefix. Output is a readable
table, or the API's JSON with ``--json``. Exit codes: 0 done, 1 refused or
failed (the API's message is printed), 2 bad usage, 3 coordinator unreachable,
4 accepted but not finished within ``--wait``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

UP_FILE = ".slotkeeper-up.json"
COMMANDS = (
    "status", "nodes", "shards", "history", "hide", "unhide", "remove", "failover", "tag",
    "pause", "resume", "settings", "rebalance", "add-shard", "remove-shard",
    "migrations", "drain", "move-shard",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_PENDING = 0, 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str


def find_endpoint(
    flag_url: str | None, flag_token: str | None, environ: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Endpoint:
    env = dict(os.environ if environ is None else environ)
    up: dict[str, Any] = {}
    path = (cwd or Path.cwd()) / UP_FILE
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            up = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path}: {exc}", EXIT_USAGE) from None
    url = flag_url or env.get("SLOTKEEPER_COORDINATOR") or up.get("coordinator")
    if not url:
        raise CliError(
            "no coordinator given: use --coordinator URL, set SLOTKEEPER_COORDINATOR, or run "
            f"in the directory where `slotkeeper up` wrote {UP_FILE}",
            EXIT_USAGE,
        )
    if "://" not in url:
        url = f"http://{url}"
    token = flag_token or env.get("SLOTKEEPER_TOKEN") or up.get("token") or ""
    return Endpoint(url.rstrip("/"), str(token))


class Client:
    """A small JSON client of the admin API (urllib: no event loop needed)."""

    def __init__(self, endpoint: Endpoint, timeout: float = 15.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, *, follow: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.endpoint.token:
            req.add_header("Authorization", f"Bearer {self.endpoint.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            doc = _decode(exc.read())
            leader = doc.get("leader") if isinstance(doc, dict) else None
            if exc.code == 503 and follow and isinstance(leader, dict) and leader.get("api"):
                print(f"note: {self.endpoint.url} is a standby; asking the leader at "
                      f"{leader['api']}", file=sys.stderr)
                other = Client(Endpoint(leader["api"], self.endpoint.token), self.timeout)
                return other.call(method, path, body, follow=False)
            return exc.code, doc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach the coordinator at {self.endpoint.url}: {reason}", EXIT_UNREACHABLE
            ) from None

    def get(self, path: str) -> Any:
        status, doc = self.call("GET", path)
        if status >= 400:
            raise CliError(_error_text(status, doc))
        return doc


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw.decode("utf-8", "replace").strip()}


def _error_text(status: int, doc: Any) -> str:
    if isinstance(doc, dict):
        code = doc.get("code", "")
        msg = doc.get("message", "")
        epoch = f" (cluster epoch {doc['epoch']})" if "epoch" in doc else ""
        return f"{msg} [{status} {code}]{epoch}".strip()
    return f"HTTP {status}"


# --------------------------------------------------------------------------- output


def table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    cells = [[str(c) for c in head]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _id(s: str | None) -> str:
    return (s or "")[:8]


def _slots(ranges: list[list[int]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges) or "-"


def _flags(n: dict[str, Any]) -> str:
    out = []
    if n.get("hidden"):
        out.append(f"hidden({n.get('hidden_by') or 'operator'})" if n.get("hidden_by") else "hidden")
    if n.get("nofailover"):
        out.append("nofailover")
    if not n.get("alive"):
        out.append("gone")
    return ",".join(out) or "-"


def nodes_table(nodes: list[dict[str, Any]]) -> str:
    rows = [
        [_id(n["id"]), f"{n['addr']}:{n['port']}", n["zone"] or "-", _id(n["shard"]) or "-",
         n["role"], n["state"], n["health"], _flags(n), n["priority"],
         (n.get("status") or {}).get("repl_offset", "-"),
         "-" if n.get("lag") is None else n["lag"]]
        for n in nodes
    ]
    return table(rows, ["NODE", "ADDRESS", "ZONE", "SHARD", "ROLE", "STATE", "HEALTH", "FLAGS",
                        "PRIO", "OFFSET", "LAG"])


def shards_table(shards: list[dict[str, Any]]) -> str:
    rows = [
        [_id(s["id"]), _slots(s["slots"]), s["slot_count"], _id(s["primary"]),
         " ".join(_id(r) for r in s["replicas"]) or "-",
         " ".join(_id(r) for r in s["sync_replicas"]) or "-",
         _id(s["lease"]) or "NONE", f"→{_id(s['handoff']['target'])}" if s.get("handoff") else "-"]
        for s in shards
    ]
    return table(rows, ["SHARD", "SLOTS", "COUNT", "PRIMARY", "REPLICAS", "SYNC", "LEASE",
                        "HANDOFF"])


# --------------------------------------------------------------------------- commands


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"slotkeeper {command}")
    p.add_argument("--coordinator", help="coordinator API URL (else SLOTKEEPER_COORDINATOR, "
                   f"else {UP_FILE})")
    p.add_argument("--token", help="API token for writes (else SLOTKEEPER_TOKEN, else the file)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per HTTP request")
    if command in ("hide", "unhide", "remove", "tag"):
        p.add_argument("node", help="node id (or a unique prefix)")
    if command == "drain":
        p.add_argument("node", help="node id (or a unique prefix)")
        p.add_argument("--to", help="the spare taking its place (default: the best spare)")
    if command == "move-shard":
        p.add_argument("shard", help="shard id (or a unique prefix)")
        p.add_argument("--to", required=True, help="spare node ids (or prefixes), comma "
                       "separated; the first becomes the primary")
    if command in ("drain", "move-shard"):
        p.add_argument("--wait", type=float, default=1800.0,
                       help="seconds to wait for the outcome (default 1800: new replicas "
                       "sync in full first)")
        p.add_argument("--expected-epoch", type=int,
                       help="refuse unless the cluster is at this epoch")
    if command == "failover":
        p.add_argument("shard", help="shard id (or a unique prefix)")
        p.add_argument("--target", help="replica to hand over to (default: least loaded)")
    if command == "tag":
        p.add_argument("--zone")
        p.add_argument("--nofailover", choices=("yes", "no"))
        p.add_argument("--priority", type=int)
    if command in ("hide", "unhide", "remove", "tag", "failover"):
        p.add_argument("--wait", type=float, default=30.0,
                       help="seconds to wait for the outcome (default 30)")
        p.add_argument("--expected-epoch", type=int,
                       help="refuse unless the cluster is at this epoch")
    if command == "history":
        p.add_argument("--limit", type=int, default=20)
    if command == "add-shard":
        p.add_argument("--nodes", help="spare node ids (or prefixes), comma separated, forming "
                       "the new shard (default: every spare ONLINE node)")
    if command == "remove-shard":
        p.add_argument("shard", help="shard id (or a unique prefix)")
    if command == "rebalance":
        p.add_argument("--threshold", type=float, default=0.0,
                       help="fraction of the mean under which nothing moves (default 0)")
        p.add_argument("--by", choices=("slots", "keys", "bytes"), default="slots",
                       help="what to balance (keys, bytes: measured on the primaries)")
    if command == "migrations":
        p.add_argument("--cancel", metavar="ID", help="cancel this migration's plan (pending "
                       "migrations; a running one finishes)")
    if command in ("rebalance", "add-shard", "remove-shard"):
        p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        p.add_argument("--measure", action="store_true",
                       help="measure keys and bytes per slot on the primaries (keys/bytes to "
                       "move in the plan, and the rate while it runs)")
        p.add_argument("--no-wait", action="store_true",
                       help="return once the plan is written, without following its progress")
        p.add_argument("--wait", type=float, default=3600.0,
                       help="seconds to follow the migrations (default 3600)")
        p.add_argument("--expected-epoch", type=int,
                       help="refuse unless the cluster is at this epoch")
    if command == "settings":
        p.add_argument("changes", nargs="*", metavar="KEY=VALUE",
                       help="settings to change (values as JSON); none: show them")
        p.add_argument("--expected-revision", type=int)
    return p


def run(command: str, argv: Sequence[str], out: TextIO | None = None) -> int:
    """Run operator command ``command`` with ``argv``; return the exit code."""
    out = out or sys.stdout
    if command not in COMMANDS:
        print(f"slotkeeper: unknown command {command!r} (one of {', '.join(COMMANDS)})",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        args = _parser(command).parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        client = Client(find_endpoint(args.coordinator, args.token), args.timeout)
        return _COMMANDS[command](client, args, out)
    except CliError as exc:
        print(f"slotkeeper {command}: {exc}", file=sys.stderr)
        return exc.code


def _emit(out: TextIO, args: argparse.Namespace, doc: Any, text: Callable[[], str]) -> None:
    print(json.dumps(doc, indent=2) if args.json else text(), file=out)


def _status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    c = client.get("/v1/cluster")

    def text() -> str:
        leader = c.get("leader") or {}
        lead = f"{leader.get('id')} ({leader.get('api')})" if leader else "none"
        health = c["counts"]["health"]
        lines = [
            f"cluster {c['cluster']}  epoch {c['epoch']}  leader {lead}"
            + ("  PAUSED" if c["paused"] else ""),
            f"{len(c['shards'])} shards, {len(c['nodes'])} nodes: "
            + ", ".join(f"{n} {h}" for h, n in health.items() if n),
        ]
        if c["shards"]:
            lines += ["", shards_table(c["shards"])]
        pending = c.get("intents") or []
        if pending:
            lines += ["", "in progress:"] + [
                f"  {i['id']} {i['kind']} {i['state']}: {i['message']}" for i in pending]
        for p in c.get("problems") or []:
            lines.append(f"problem: {p}")
        return "\n".join(lines)

    _emit(out, args, c, text)
    return EXIT_OK


def _nodes(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    doc = client.get("/v1/nodes")
    _emit(out, args, doc, lambda: nodes_table(doc["nodes"]))
    return EXIT_OK


def _shards(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    doc = client.get("/v1/shards")
    _emit(out, args, doc, lambda: shards_table(doc["shards"]))
    return EXIT_OK


def _history(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    doc = client.get(f"/v1/history?limit={max(1, args.limit)}")

    def text() -> str:
        rows = [[e.get("epoch"), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.get("time", 0))),
                 e.get("kind"), e.get("why")] for e in doc["history"]]
        return table(rows, ["EPOCH", "TIME", "KIND", "WHY"])

    _emit(out, args, doc, text)
    return EXIT_OK


def _resolve(client: Client, kind: str, ident: str) -> str:
    """A full id from a unique prefix (the API takes full ids)."""
    if len(ident) == 40:
        return ident
    doc = client.get(f"/v1/{kind}s")
    matches = [item["id"] for item in doc[f"{kind}s"] if item["id"].startswith(ident)]
    if len(matches) == 1:
        return str(matches[0])
    if not matches:
        raise CliError(f"no {kind} id starts with {ident!r}")
    raise CliError(f"{ident!r} matches {len(matches)} {kind}s: give more characters", EXIT_USAGE)


def _write(client: Client, args: argparse.Namespace, out: TextIO, method: str, path: str,
           body: dict[str, Any]) -> int:
    if getattr(args, "expected_epoch", None) is not None:
        body["expected_epoch"] = args.expected_epoch
    wait = getattr(args, "wait", 10.0)
    status, doc = client.call(method, f"{path}?wait={min(wait, 10.0):g}", body)
    deadline = time.monotonic() + wait
    said = ""
    while status == 202 and time.monotonic() < deadline:
        message = (doc.get("intent") or {}).get("message") or ""
        if message and message != said and not args.json:
            print(f"  {message}", file=sys.stderr)  # progress of a long intent (drain, move)
            said = message
        time.sleep(0.2)
        status, doc = client.call("GET", doc["location"] if "location" in doc else
                                  f"/v1/intents/{doc['intent']['id']}")
        if status == 200 and doc["intent"]["state"] in ("pending", "running"):
            status = 202
            doc = {**doc, "location": f"/v1/intents/{doc['intent']['id']}"}
        elif status == 200 and doc["intent"]["state"] == "failed":
            i = doc["intent"]
            status, doc = i["status"] or 409, {"code": i["error"], "message": i["message"]}
    if status >= 400:
        if args.json:
            print(json.dumps(doc, indent=2), file=out)
        raise CliError(_error_text(status, doc))
    intent = doc.get("intent", {})
    if status == 202:
        _emit(out, args, doc, lambda: f"still under way: {intent.get('message') or 'pending'} "
              f"(follow GET {doc.get('location')})")
        return EXIT_PENDING
    epoch_no = doc.get("epoch") or intent.get("epoch")
    epoch = f" (epoch {epoch_no})" if epoch_no else ""
    _emit(out, args, doc, lambda: f"{intent.get('message') or 'done'}{epoch}")
    return EXIT_OK


def _node_command(client: Client, args: argparse.Namespace, out: TextIO, verb: str) -> int:
    node = _resolve(client, "node", args.node)
    return _write(client, args, out, "POST", f"/v1/nodes/{node}/{verb}", {})


def _tag(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {}
    if args.zone is not None:
        body["zone"] = args.zone
    if args.nofailover is not None:
        body["nofailover"] = args.nofailover == "yes"
    if args.priority is not None:
        body["priority"] = args.priority
    if not body:
        raise CliError("give at least one of --zone, --nofailover, --priority", EXIT_USAGE)
    node = _resolve(client, "node", args.node)
    return _write(client, args, out, "PATCH", f"/v1/nodes/{node}", body)


def _failover(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    shard = _resolve(client, "shard", args.shard)
    body: dict[str, Any] = {}
    if args.target:
        body["target"] = _resolve(client, "node", args.target)
    return _write(client, args, out, "POST", f"/v1/shards/{shard}/failover", body)


def _drain(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    node = _resolve(client, "node", args.node)
    body: dict[str, Any] = {}
    if args.to:
        body["to"] = _resolve(client, "node", args.to)
    return _write(client, args, out, "POST", f"/v1/nodes/{node}/drain", body)


def _move_shard(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    shard = _resolve(client, "shard", args.shard)
    nodes = [_resolve(client, "node", n.strip()) for n in args.to.split(",") if n.strip()]
    if not nodes:
        raise CliError("--to needs at least one node id", EXIT_USAGE)
    return _write(client, args, out, "POST", f"/v1/shards/{shard}/move", {"nodes": nodes})


def _settings_text(doc: dict[str, Any]) -> str:
    rows = [[k, json.dumps(v)] for k, v in doc["settings"].items()]
    return table(rows, ["SETTING", "VALUE"]) + f"\n(revision {doc['revision']})"


def _settings(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if not args.changes:
        doc = client.get("/v1/settings")
        _emit(out, args, doc, lambda: _settings_text(doc))
        return EXIT_OK
    body: dict[str, Any] = {}
    for item in args.changes:
        key, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"expected KEY=VALUE, got {item!r}", EXIT_USAGE)
        try:
            body[key] = json.loads(text)
        except ValueError:
            body[key] = text
    if args.expected_revision is not None:
        body["expected_revision"] = args.expected_revision
    return _patch_settings(client, args, out, "PATCH", "/v1/settings", body)


def _patch_settings(client: Client, args: argparse.Namespace, out: TextIO, method: str,
                    path: str, body: dict[str, Any] | None) -> int:
    status, doc = client.call(method, path, body)
    if status >= 400:
        if args.json:
            print(json.dumps(doc, indent=2), file=out)
        raise CliError(_error_text(status, doc))
    _emit(out, args, doc, lambda: _settings_text(doc))
    return EXIT_OK


def _pause(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    status, doc = client.call("POST", "/v1/pause", None)
    if status >= 400:
        raise CliError(_error_text(status, doc))
    _emit(out, args, doc, lambda: "paused: no automatic failover, repair or bootstrap "
          "(manual commands still work)")
    return EXIT_OK


def _resume(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    status, doc = client.call("POST", "/v1/resume", None)
    if status >= 400:
        raise CliError(_error_text(status, doc))
    _emit(out, args, doc, lambda: "resumed: automatic actions are back on")
    return EXIT_OK


def plan_text(plan: dict[str, Any]) -> str:
    """The plan of ``POST /v1/rebalance`` as tables: moves, then slots per shard."""
    known = lambda v: "unknown" if v is None else v  # noqa: E731
    lines = [f"{plan['kind']}: {plan['slots_to_move']} slot(s) to move, "
             f"keys {known(plan['keys_to_move'])}, bytes {known(plan['bytes_to_move'])}"]
    for n in plan.get("new_shards") or []:
        reps = " ".join(_id(r) for r in n["replicas"]) or "-"
        lines.append(f"new shard {_id(n['id'])}: primary {_id(n['primary'])}, replicas {reps}")
    for s in plan.get("leaving") or []:
        lines.append(f"shard {_id(s)} leaves: its nodes go back to ONLINE")
    if plan["moves"]:
        lines += ["", table([[_id(m["from_shard"]), _id(m["to_shard"]), _slots(m["slots"]),
                              m["count"]] for m in plan["moves"]],
                            ["FROM", "TO", "SLOTS", "COUNT"])]
    lines += ["", table([[_id(s["id"]), s["before"], s["after"]] for s in plan["shards"]],
                        ["SHARD", "BEFORE", "AFTER"])]
    lines += [f"note: {n}" for n in plan.get("notes") or []]
    return "\n".join(lines)


def _plan_command(client: Client, args: argparse.Namespace, out: TextIO, kind: str,
                  body: dict[str, Any]) -> int:
    body = {"kind": kind, "dry_run": bool(args.dry_run), **body}
    if args.measure:
        body["measure"] = True
    if args.expected_epoch is not None:
        body["expected_epoch"] = args.expected_epoch
    status, doc = client.call("POST", "/v1/rebalance", body)
    if status >= 400:
        if args.json:
            print(json.dumps(doc, indent=2), file=out)
        raise CliError(_error_text(status, doc))
    if status == 202 and not args.no_wait:
        return _follow(client, args, out, doc)
    _emit(out, args, doc, lambda: plan_text(doc["plan"]))
    return EXIT_OK


_FINISHED = ("DONE", "FAILED", "CANCELLED")


def _follow(client: Client, args: argparse.Namespace, out: TextIO, planned: dict[str, Any]) -> int:
    """Follow the plan's migrations with a progress bar (stderr) until they
    finish; then a summary. Exit 1 if one failed or was cancelled, 4 on timeout."""
    ids = set(planned["migrations"])
    if not args.json:
        print(plan_text(planned["plan"]), file=out)
    deadline = time.monotonic() + args.wait
    started = time.monotonic()
    while True:
        doc = client.get("/v1/migrations")
        mine = [m for m in doc["migrations"] if m["id"] in ids]
        slots = sum(b - a + 1 for m in mine for a, b in m["slots"])
        done = sum(b - a + 1 for m in mine if m["state"] == "DONE" for a, b in m["slots"])
        finished = all(m.get("final", m["state"] in _FINISHED) for m in mine)
        if not args.json:
            width = 30
            fill = width * done // max(1, slots)
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = f", ETA {(slots - done) / rate:.0f}s" if rate > 0 and done < slots else ""
            print(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{slots} slots, "
                  f"{sum(1 for m in mine if m['state'] in _FINISHED)}/{len(mine)} migrations, "
                  f"{sum(int(m.get('keys_moved') or 0) for m in mine)} keys{eta}   ",
                  end="", file=sys.stderr, flush=True)
        if finished or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not args.json:
        print(file=sys.stderr)
    states = {s: sum(1 for m in mine if m["state"] == s) for s in ("DONE", "FAILED", "CANCELLED")}
    summary = {
        "plan": planned["plan"], "migrations": mine, "finished": finished, **{
            k.lower(): v for k, v in states.items()},
        "slots": slots, "slots_done": done,
        "keys_moved": sum(int(m.get("keys_moved", 0) or 0) for m in mine),
        "bytes_moved": sum(int(m.get("bytes_moved", 0) or 0) for m in mine),
    }
    _emit(out, args, summary, lambda: (
        f"{'finished' if finished else 'still running'}: {done}/{slots} slots moved, "
        f"{summary['keys_moved']} keys, {summary['bytes_moved']} bytes; "
        f"{states['DONE']} done, {states['FAILED']} failed, {states['CANCELLED']} cancelled"
        + "".join(f"\nmigration {_id(m['id'])} failed: {m.get('error') or '-'}"
                  for m in mine if m["state"] == "FAILED")))
    if not finished:
        return EXIT_PENDING
    return EXIT_FAILED if states["FAILED"] or states["CANCELLED"] else EXIT_OK


def migrations_table(migrations: list[dict[str, Any]]) -> str:
    rows = [[_id(m["id"]), _id(m["from_shard"]), _id(m["to_shard"]), _slots(m["slots"]),
             m["state"], m.get("copy_state") or "-", m.get("keys_moved", 0),
             m.get("bytes_moved", 0), m.get("error") or "-"] for m in migrations]
    return table(rows, ["MIGRATION", "FROM", "TO", "SLOTS", "STATE", "COPY", "KEYS", "BYTES",
                        "ERROR"])


def _migrations(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.cancel:
        ident = args.cancel
        if len(ident) != 40:
            doc = client.get("/v1/migrations")
            found = [m["id"] for m in doc["migrations"] if m["id"].startswith(ident)]
            if len(found) != 1:
                raise CliError(f"{ident!r} matches {len(found)} migrations", EXIT_USAGE)
            ident = found[0]
        status, doc = client.call("DELETE", f"/v1/migrations/{ident}")
        if status >= 400:
            raise CliError(_error_text(status, doc))
        _emit(out, args, doc, lambda: f"cancelled {len(doc['cancelled'])} pending migration(s)"
              + (f"; {len(doc['finishing'])} running one(s) finish" if doc["finishing"] else ""))
        return EXIT_OK
    doc = client.get("/v1/migrations?progress=1")

    def text() -> str:
        p = doc["progress"]
        head = (f"{p['migrations']} migration(s): {p['slots_done']}/{p['slots']} slots done, "
                f"{p['keys_moved']} keys, {p['bytes_moved']} bytes moved")
        return head + ("\n\n" + migrations_table(doc["migrations"]) if doc["migrations"] else "")

    _emit(out, args, doc, text)
    failed = any(m["state"] == "FAILED" for m in doc["migrations"])
    return EXIT_FAILED if failed else EXIT_OK


def _add_shard(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    nodes = [_resolve(client, "node", n.strip()) for n in (args.nodes or "").split(",")
             if n.strip()]
    return _plan_command(client, args, out, "scale_out", {"nodes": nodes} if nodes else {})


def _remove_shard(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    shard = _resolve(client, "shard", args.shard)
    return _plan_command(client, args, out, "scale_in", {"shard": shard})


def _rebalance(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {"threshold": args.threshold}
    if args.by != "slots":
        body["by"] = args.by
    return _plan_command(client, args, out, "rebalance", body)


_COMMANDS: dict[str, Callable[[Client, argparse.Namespace, TextIO], int]] = {
    "status": _status,
    "nodes": _nodes,
    "shards": _shards,
    "history": _history,
    "hide": lambda c, a, o: _node_command(c, a, o, "hide"),
    "unhide": lambda c, a, o: _node_command(c, a, o, "unhide"),
    "remove": lambda c, a, o: _node_command(c, a, o, "remove"),
    "tag": _tag,
    "failover": _failover,
    "pause": _pause,
    "resume": _resume,
    "settings": _settings,
    "rebalance": _rebalance,
    "add-shard": _add_shard,
    "remove-shard": _remove_shard,
    "migrations": _migrations,
    "drain": _drain,
    "move-shard": _move_shard,
}

__all__ = ["COMMANDS", "UP_FILE", "Client", "CliError", "Endpoint", "find_endpoint", "run"]
