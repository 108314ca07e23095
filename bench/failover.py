"""Failover as a client sees it (DESIGN §3), on the whole stack as `slotkeeper up`
runs it: etcd, Consul, two coordinators, data node + sidecar pairs (real processes).

One stack per kill mode: ``slotkeeper up --primaries 2 --replicas 2`` (TTL 2 s) in a
temporary directory, then ``PATCH /v1/settings {"min_replicas_to_ack": 1}`` (checked
on every primary's admin port with ``SLOTKEEPER MIN-REPLICAS-TO-ACK``; set there
directly, and said so, if the sidecars do not carry it). A writer thread — redis-py
``RedisCluster``, socket timeouts 0.25 s, 3 retries 10 ms apart — SETs a new key of
one shard every 5 ms. Each trial:

- (a) ``kill -9`` of the shard's primary data node (its sidecar alive);
- (b) ``kill -9`` of that data node and its sidecar together;
- (c) SIGSTOP of the primary's sidecar and data node (a hung host), SIGCONT once
  the writer's writes succeed again.

Failover time = the longest gap between two successful writes, from the last one
before the fault until the cluster healed: the killed processes are restarted
with their own command lines, and the trial ends when every node is back online
(the lost one as a STANDBY replica, caught up, in ``sync_replicas``). Beside it, the
server side: the time from the fault until one of the shard's replicas accepts a
SET sent to it directly every ~2 ms (no client logic: redis-py adds its own waits,
e.g. 0.25 s after a CLUSTERDOWN, and socket timeouts). Then every
write acknowledged during the trial is read back from the shard's primary:
acknowledged writes lost, over all trials (target 0). 10 trials per mode, 3 with
--quick (or --rounds N).

Last, on the first stack: the time from a hide request (``POST
/v1/nodes/<replica>/hide?wait=0``) until the replica is absent from ``CLUSTER
SLOTS`` on every data node (all polled every ~2 ms), over 20 hides (5 with --quick).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from clusterstate.slots import key_slot

from . import procs
from .probe import percentile
from .report import Context, Row, Target

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
TTL = 2.0
PERIOD = 0.005  # one SET every 5 ms
REPO = Path(__file__).resolve().parent.parent
MODES = {
    "a": "kill -9 of a primary data node (sidecar alive)",
    "b": "kill -9 of a primary data node and its sidecar",
    "c": "SIGSTOP of a primary's sidecar and data node",
}
TARGET_MS = {"a": 1000.0, "b": (TTL + 1) * 1000, "c": (TTL + 1) * 1000}


class BenchError(RuntimeError):
    pass


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """``check()`` until truthy (exceptions count as not yet), with a deadline."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # retried until the deadline
            last = exc
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}"
                             + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [a.decode() for a in fh.read().split(b"\0") if a]


def _state(pid: int) -> str:
    """The process's state letter ("" once gone); "T" only when every thread stopped."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return ""
    states = set()
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                states.add(fh.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    if not states or states <= {"Z", "X"}:
        return ""
    return "T" if states <= {"T", "t"} else "R"


def _state_is(pid: int, wanted: str) -> Callable[[], bool]:
    return lambda: _state(pid) == wanted


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLOTKEEPER_COORDINATOR", "SLOTKEEPER_TOKEN")}
    env["PATH"] = f"{REPO / '.tools' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _ports_free(base: int, nodes: int) -> bool:
    ports = [base + i for i in range(nodes)] + [base + 10000 + i for i in range(nodes)]
    ports += [base + 800 + i for i in range(nodes)] + [base + 900, base + 901]
    ports += [base + 950 + i for i in range(6)] + [base + 980, base + 981]
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


class Stack:
    """``slotkeeper up`` in a temporary directory, with its port layout
    (slotkeeper/up.py), the coordinator API and the processes by command line."""

    def __init__(self, primaries: int, replicas: int, spares: int = 0,
                 prefix: str = "skbench-failover-") -> None:
        self.primaries, self.replicas, self.spares = primaries, replicas, spares
        self.nodes_count = primaries * (1 + replicas) + spares
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        # Every port of the layout (up to base + 10000 + nodes) below the ephemeral
        # range: a killed process restarted on its port must find it free.
        high = max(10010, _ephemeral_low() - 10000 - self.nodes_count - 1)
        self.base = next(b for b in (random.randrange(10000, high, 10) for _ in range(200))
                         if _ports_free(b, self.nodes_count))
        self.proc: subprocess.Popen | None = None
        self.ours: list[subprocess.Popen] = []

    def start(self, timeout: float = 120.0) -> Stack:
        if shutil.which("etcd", path=_env()["PATH"]) is None:
            raise procs.ToolMissing("etcd not found (make setup installs it into .tools/bin)")
        log = self.dir / "up.log"
        self.proc = procs.spawn([
            sys.executable, "-m", "slotkeeper", "up", "--primaries", str(self.primaries),
            "--replicas", str(self.replicas), "--spares", str(self.spares),
            "--base-port", str(self.base), "--ttl", f"{TTL:g}",
            "--data", str(self.dir / "data"), "--timeout", f"{timeout - 10:g}",
        ], log=log, cwd=self.dir, env=_env())
        wait_for("slotkeeper up to report the cluster up",
                 lambda: "is up" in log.read_text() or self.proc.poll() is not None,  # type: ignore[union-attr]
                 timeout)
        if self.proc.poll() is not None:
            raise BenchError(f"slotkeeper up exited: {log.read_text()[-2000:]}")
        return self

    def stop(self, keep_logs: bool = False) -> None:
        for pid in {*_pids(f"--dir {self.dir}"), *_pids(f"--etcd {LOOPBACK}:{self.base + 900}")}:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            procs.kill_group(self.proc, grace=60)  # SIGTERM: `up` stops everything in order
        for p in self.ours:
            procs.kill_group(p, grace=10)
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ layout, processes

    def port(self, i: int) -> int:
        return self.base + i

    def admin_port(self, i: int) -> int:
        return self.base + 10000 + i

    def index(self, node: dict[str, Any]) -> int:
        return int(node["port"]) - self.base

    def datanode_pid(self, i: int) -> int | None:
        found = _pids(f"datanode --port {self.port(i)} ")
        return found[0] if found else None

    def sidecar_pid(self, i: int) -> int | None:
        found = _pids(f"sidecar .* --http-port {self.base + 800 + i}( |$)")
        return found[0] if found else None

    def restart(self, argv: list[str], name: str) -> None:
        self.ours.append(procs.spawn(argv, log=self.dir / f"restarted-{name}.log", cwd=self.dir,
                                     env=_env()))

    # ------------------------------------------------------------------ the API

    def url(self, c: int) -> str:
        return f"http://{LOOPBACK}:{self.base + 980 + c}"

    def get(self, path: str) -> Any:
        last: Exception | None = None
        for c in (0, 1):
            try:
                with urllib.request.urlopen(self.url(c) + path, timeout=5) as resp:
                    return json.loads(resp.read())
            except OSError as exc:
                last = exc
        raise BenchError(f"no coordinator answers GET {path}: {last!r}")

    def write(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A write to the leader (as named by any coordinator)."""
        leader = self.get("/v1/cluster")["leader"]["api"]
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(leader + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def problems(self) -> list[str]:
        """Why the cluster is not whole ([] when every node is back and caught up)."""
        doc = self.get("/v1/cluster")
        out = []
        for s in doc["shards"]:
            if s["lease"] != s["primary"] or s["handoff"]:
                out.append(f"shard {s['id'][:8]}: lease {s['lease']}")
            if len(s["replicas"]) != self.replicas:
                out.append(f"shard {s['id'][:8]}: {len(s['replicas'])} replicas")
            if doc["settings"]["min_replicas_to_ack"] >= 1 and \
                    sorted(s["sync_replicas"]) != sorted(s["replicas"]):
                out.append(f"shard {s['id'][:8]}: sync_replicas {len(s['sync_replicas'])}")
        for n in doc["nodes"]:
            st = n.get("status") or {}
            want = {"primary": "ACTIVE", "replica": "STANDBY"}.get(n["role"], "ONLINE")
            if not n.get("alive") or n["health"] != "online" or n["hidden"] \
                    or n["state"] != want or st.get("epoch_applied") != doc["epoch"]:
                out.append(f"node {n['id'][:8]}: {n['state']}/{n['health']}")
        return out

    def wait_whole(self, timeout: float = 90.0) -> None:
        last: list[list[str]] = [[]]

        def whole() -> bool:
            last[0] = self.problems()
            return not last[0]

        try:
            wait_for("the cluster to be whole", whole, timeout, interval=0.1)
        except BenchError as exc:
            raise BenchError(f"{exc}: {last[0]}") from None

    def shard0(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        doc = self.get("/v1/cluster")
        shard = min(doc["shards"], key=lambda s: s["slots"][0][0])
        return shard, {n["id"]: n for n in doc["nodes"]}


# --------------------------------------------------------------------------- the writer


class Writer(threading.Thread):
    """SET ``{tag}:<n>`` = n through a RedisCluster client every 5 ms (no catching
    up after a stall); ``ok`` holds (completion time, key) of every acknowledged SET."""

    def __init__(self, stack: Stack, tag: str) -> None:
        super().__init__(daemon=True, name="failover-writer")
        from redis.backoff import ConstantBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        self.rc = RedisCluster(
            startup_nodes=[ClusterNode(LOOPBACK, stack.port(i)) for i in range(stack.nodes_count)],
            socket_timeout=0.25, socket_connect_timeout=0.25,
            retry=Retry(ConstantBackoff(0.01), 3))
        self.tag = tag
        self.ok: list[tuple[float, str]] = []
        self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        import redis

        n = 0
        next_at = time.monotonic()
        while not self.halt.is_set():
            key = f"{{{self.tag}}}:{n}"
            try:
                if self.rc.set(key, str(n)):
                    self.ok.append((time.monotonic(), key))
            except redis.RedisError:
                self.failed += 1
            n += 1
            next_at += PERIOD
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing, not waiting for a condition
            else:
                next_at = time.monotonic()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.rc.close()


class FirstWrite(threading.Thread):
    """The server side: SET on each of the shard's replicas directly (no client
    logic), every ~2 ms from the fault on, until one accepts; ``at`` is the send time
    of the accepted SET."""

    def __init__(self, stack: Stack, replicas: list[int], key: str, timeout: float) -> None:
        super().__init__(daemon=True, name="failover-first-write")
        self.ports = [stack.port(i) for i in replicas]
        self.key, self.timeout = key, timeout
        self.at: float | None = None

    def run(self) -> None:
        import redis

        clients = [redis.Redis(host=LOOPBACK, port=p, socket_timeout=0.25,
                               socket_connect_timeout=0.25) for p in self.ports]
        deadline = time.monotonic() + self.timeout
        try:
            while self.at is None and time.monotonic() < deadline:
                for c in clients:
                    t = time.monotonic()
                    try:
                        if c.set(self.key, "probe"):
                            self.at = t
                            break
                    except redis.RedisError:
                        pass
                time.sleep(0.002)  # pacing
        finally:
            for c in clients:
                c.close()


def _hashtag(shard: dict[str, Any]) -> str:
    for n in count():
        tag = f"failover-{n}"
        slot = key_slot(f"{{{tag}}}:x".encode())
        if any(lo <= slot <= hi for lo, hi in shard["slots"]):
            return tag
    raise AssertionError("unreachable")


def _admin(stack: Stack, i: int, *args: str) -> Any:
    import redis

    with redis.Redis(host=LOOPBACK, port=stack.admin_port(i), socket_timeout=2) as r:
        return r.execute_command(*args)


def ensure_min_acks(stack: Stack, ctx: Context, notes: list[str], say: bool = False) -> None:
    """min_replicas_to_ack 1 on every primary's data node; set directly (and noted)
    where the sidecar did not carry it within 5 s."""
    doc = stack.get("/v1/cluster")
    primaries = [stack.index(n) for n in doc["nodes"] if n["role"] == "primary"]

    def carried() -> bool:
        return all(int(_admin(stack, i, "SLOTKEEPER", "MIN-REPLICAS-TO-ACK")[0]) == 1
                   for i in primaries)

    t0 = time.monotonic()
    try:
        wait_for("min_replicas_to_ack 1 on every primary", carried, 5, interval=0.01)
        if say:
            ctx.say(f"  min_replicas_to_ack 1 is on every primary's data node (checked "
                    f"{(time.monotonic() - t0) * 1000:.0f} ms after asking)")
    except BenchError:
        for i in primaries:
            if int(_admin(stack, i, "SLOTKEEPER", "MIN-REPLICAS-TO-ACK")[0]) != 1:
                _admin(stack, i, "SLOTKEEPER", "MIN-REPLICAS-TO-ACK", "1")
                text = (f"min_replicas_to_ack 1 had not reached the primary on port "
                        f"{stack.port(i)}: set with SLOTKEEPER MIN-REPLICAS-TO-ACK")
                ctx.say(f"  {text}")
                notes.append(text)


# --------------------------------------------------------------------------- one trial


def trial(stack: Stack, writer: Writer, mode: str) -> tuple[float, float, int, int]:
    """One failover: (longest write gap in s, fault → first write accepted by the new
    primary in s, acknowledged writes, acknowledged writes lost)."""
    import redis

    shard, nodes = stack.shard0()
    old = nodes[shard["primary"]]
    o = stack.index(old)
    first = FirstWrite(stack, [stack.index(nodes[r]) for r in shard["replicas"]],
                       f"{{{writer.tag}}}:probe", TTL * 5 + 10)
    start = len(writer.ok)
    wait_for("the writer to run", lambda: len(writer.ok) >= start + 20, 10, interval=0.01)
    dn, sc = stack.datanode_pid(o), stack.sidecar_pid(o)
    if dn is None or sc is None:
        raise BenchError(f"the primary's processes (port {stack.port(o)}) are not running")
    dn_argv, sc_argv = _cmdline(dn), _cmdline(sc)
    t_fault = time.monotonic()
    if mode == "a":
        os.kill(dn, signal.SIGKILL)
    elif mode == "b":
        os.kill(sc, signal.SIGKILL)
        os.kill(dn, signal.SIGKILL)
    else:
        os.kill(sc, signal.SIGSTOP)
        os.kill(dn, signal.SIGSTOP)
    first.start()
    try:
        wanted = "T" if mode == "c" else ""  # stopped, or gone
        for pid in (dn, sc) if mode != "a" else (dn,):
            wait_for(f"pid {pid} to {'stop' if mode == 'c' else 'die'}",
                     _state_is(pid, wanted), 10, interval=0.002)
        wait_for("writes to succeed on a new primary",
                 lambda: writer.ok[-1][0] > t_fault and stack.shard0()[0]["primary"] != old["id"],
                 TTL * 5 + 10, interval=0.01)
        first.join(TTL * 5 + 10)
    finally:
        if mode == "c":
            os.kill(dn, signal.SIGCONT)
            os.kill(sc, signal.SIGCONT)
    if mode in ("a", "b"):
        stack.restart(dn_argv, f"datanode-{o}")
    if mode == "b":
        stack.restart(sc_argv, f"sidecar-{o}")
    stack.wait_whole()
    t_end = time.monotonic()
    done = writer.ok[start:]
    before = [t for t, _ in done if t <= t_fault]
    times = [before[-1]] if before else []
    times += [t for t, _ in done if t_fault < t <= t_end]
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("nan"))
    # Every acknowledged write of the trial must be on the shard's primary now.
    shard, nodes = stack.shard0()
    keys = [k for _, k in done]
    lost = 0
    with redis.Redis(host=LOOPBACK, port=nodes[shard["primary"]]["port"], socket_timeout=10) as r:
        for i in range(0, len(keys), 500):
            batch = keys[i:i + 500]
            got = r.mget(batch)
            lost += sum(1 for k, v in zip(batch, got, strict=True)
                        if v is None or v.decode() != k.rsplit(":", 1)[1])
    server = float("nan") if first.at is None else first.at - t_fault
    return gap, server, len(keys), lost


# --------------------------------------------------------------------------- hide


def hide_trials(stack: Stack, n: int) -> list[float]:
    """Seconds from a hide request until the replica is absent from CLUSTER SLOTS on
    every data node."""
    import redis

    shard, nodes = stack.shard0()
    replica = nodes[shard["replicas"][0]]
    port = int(replica["port"])
    clients = [redis.Redis(host=LOOPBACK, port=stack.port(i), socket_timeout=5)
               for i in range(stack.nodes_count)]

    def shown(c: redis.Redis) -> bool:
        # [[start, end, [host, port, id, …] (the primary), [host, port, id, …] …], …]
        reply = c.execute_command("CLUSTER", "SLOTS")
        return any(int(node[1]) == port for entry in reply for node in entry[2:])

    out = []
    try:
        for _ in range(n):
            wait_for("the replica to be shown everywhere", lambda: all(shown(c) for c in clients),
                     30, interval=0.01)
            pending = list(clients)
            t0 = time.monotonic()
            status, doc = stack.write("POST", f"/v1/nodes/{replica['id']}/hide?wait=0")
            if status not in (200, 202):
                raise BenchError(f"hide refused: {status} {doc}")
            deadline = t0 + 30
            while pending:
                pending = [c for c in pending if shown(c)]
                if time.monotonic() > deadline:
                    raise BenchError("the hidden replica is still shown after 30 s")
            out.append(time.monotonic() - t0)
            # The intent must be finished before the next one (one at a time).
            wait_for("the hide to finish", lambda: not stack.get("/v1/cluster")["intents"], 30)
            status, doc = stack.write("POST", f"/v1/nodes/{replica['id']}/unhide")
            if status != 200:
                raise BenchError(f"unhide refused: {status} {doc}")
    finally:
        for c in clients:
            c.close()
    return out


# --------------------------------------------------------------------------- the section


def _ms(xs: list[float], q: float) -> float | None:
    s = sorted(x * 1000 for x in xs if x == x)
    return percentile(s, q) if s else None


def run(ctx: Context) -> list[Row]:
    trials = ctx.rounds_or(3 if ctx.quick else 10)
    hides = 5 if ctx.quick else 20
    rows: list[Row] = []
    acked_total = lost_total = 0
    notes: list[str] = []
    hide_s: list[float] = []
    for mode, what in MODES.items():
        ctx.say(f"({mode}) {what}: {trials} trials")
        stack = Stack(primaries=2, replicas=2)
        gaps: list[float] = []
        server: list[float] = []
        error = ""
        writer: Writer | None = None
        try:
            stack.start()
            stack.wait_whole()
            status, doc = stack.write("PATCH", "/v1/settings", {"min_replicas_to_ack": 1})
            if status != 200:
                raise BenchError(f"PATCH /v1/settings refused: {status} {doc}")
            stack.wait_whole()
            ensure_min_acks(stack, ctx, notes, say=True)
            if mode == "a":
                hide_s = hide_trials(stack, hides)
                ctx.say("  hide → absent from CLUSTER SLOTS everywhere: "
                        + ", ".join(f"{x * 1000:.0f}" for x in hide_s) + " ms")
                stack.wait_whole()
            shard, _ = stack.shard0()
            writer = Writer(stack, _hashtag(shard))
            writer.start()
            for t in range(trials):
                gap, first, acked, lost = trial(stack, writer, mode)
                ensure_min_acks(stack, ctx, notes)  # the new primary must wait for acks too
                gaps.append(gap)
                server.append(first)
                acked_total += acked
                lost_total += lost
                ctx.say(f"  trial {t + 1}: longest write gap {gap * 1000:.0f} ms (new primary "
                        f"took its first write {first * 1000:.0f} ms after the fault), "
                        f"{acked} writes acknowledged, {lost} lost")
        except Exception as exc:  # reported in the rows; the other modes still run
            error = f"{type(exc).__name__}: {exc}"
            ctx.say(f"  failed: {error} (the stack's logs are kept in {stack.dir})")
        finally:
            if writer is not None:
                writer.stop()
            stack.stop(keep_logs=bool(error))
        label = f"failover ({mode}) {what}, longest write gap"
        target = Target("<=", TARGET_MS[mode], on="ours")
        rows += [
            Row(f"{label}, p50", _ms(gaps, 0.5), None, "ms", error=error,
                note=f"{len(gaps)} trials; redis-py RedisCluster, one SET / 5 ms" if gaps else ""),
            Row(f"{label}, p99", _ms(gaps, 0.99), None, "ms", target=target, error=error),
            Row(f"{label}, max", _ms(gaps, 1.0), None, "ms"),
            Row(f"failover ({mode}), server side: fault → new primary accepts a write, p50",
                _ms(server, 0.5), None, "ms"),
            Row(f"failover ({mode}), server side: fault → new primary accepts a write, p99",
                _ms(server, 0.99), None, "ms"),
        ]
    rows.append(Row("acknowledged writes lost, min_replicas_to_ack 1, all trials",
                    float(lost_total), None, target=Target("<=", 0, on="ours"),
                    note=f"of {acked_total:,} acknowledged" + (f"; {'; '.join(notes)}" if notes
                                                               else "")))
    rows += [
        Row("hide → absent from CLUSTER SLOTS on every node, p50", _ms(hide_s, 0.5), None, "ms",
            note=f"{len(hide_s)} hides, {2 * 3} data nodes polled"),
        Row("hide → absent from CLUSTER SLOTS on every node, p99", _ms(hide_s, 0.99), None, "ms"),
        Row("hide → absent from CLUSTER SLOTS on every node, max", _ms(hide_s, 1.0), None, "ms"),
    ]
    return rows
