"""The whole stack as `slotkeeper up` runs it, for tests that need real processes.

``start_stack(workdir, ...)`` runs ``slotkeeper up`` in ``workdir`` on a free
base port (so ``python -m slotkeeper <command>`` works there: it reads
``.slotkeeper-up.json``), waits for "is up" and hands back a :class:`Stack`:
the port layout of slotkeeper/up.py, the coordinator API (following the leader),
the processes by command line (``pgrep -f``), kill / stop / restart of any of
them with its own command line, and ``wait_healthy()``, which waits until the
cluster is whole again (every shard led and leased, every member online,
visible and applying the current epoch).

Processes restarted here are ours: they are stopped after ``slotkeeper up`` on
close (PDEATHSIG too, through tests.support.ManagedProcess). ``local_cluster`` is
the module-scoped fixture tests/test_local_cluster.py uses.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis

from tests.support import LOOPBACK, REPO_ROOT, ManagedProcess, wait_until

# --------------------------------------------------------------------------- ports


def ports_free(base: int, nodes: int) -> bool:
    """Whether every port `slotkeeper up --base-port base` would use is free."""
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


def ephemeral_low() -> int:
    """The first port the kernel may hand out to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pick_base(nodes: int) -> int:
    """A free base port whose whole layout (up to base + 10000 + nodes) lies below the
    ephemeral range: a process restarted on its old port must find it free, which a
    port the kernel may give an outgoing connection meanwhile cannot promise."""
    high = max(10010, ephemeral_low() - 10000 - nodes - 1)
    return next(b for b in (random.randrange(10000, high, 10) for _ in range(200))
                if ports_free(b, nodes))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLOTKEEPER_COORDINATOR", "SLOTKEEPER_TOKEN")}
    env["PATH"] = f"{REPO_ROOT / '.tools' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


# --------------------------------------------------------------------------- processes


def pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [a.decode() for a in fh.read().split(b"\0") if a]


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (SIGSTOP took effect)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                    return False
        except OSError:
            continue
    return True


def gone(pid: int) -> bool:
    """The process is dead (a zombie counts: it no longer holds sockets)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    base: int
    work: Path
    proc: subprocess.Popen[bytes]
    primaries: int
    replicas: int
    spares: int
    token: str
    ttl: float
    ours: list[ManagedProcess] = field(default_factory=list)
    argv: dict[str, list[str]] = field(default_factory=dict)  # name -> command line

    # ------------------------------------------------------------------ layout

    @property
    def nodes_count(self) -> int:
        return self.primaries * (1 + self.replicas) + self.spares

    def port(self, i: int) -> int:
        return self.base + i

    def admin_port(self, i: int) -> int:
        return self.base + 10000 + i

    def http_port(self, i: int) -> int:
        return self.base + 800 + i

    def coordinator_url(self, c: int) -> str:
        return f"http://{LOOPBACK}:{self.base + 980 + c}"

    @property
    def consul_url(self) -> str:
        return f"http://{LOOPBACK}:{self.base + 950}"

    def index(self, node: dict[str, Any]) -> int:
        """The `slotkeeper up` index of a node record (its client port - base)."""
        return int(node["port"]) - self.base

    # ------------------------------------------------------------------ the API

    def request(self, method: str, path: str, body: Any = None, *, url: str | None = None,
                token: str | None = "", raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 20.0,
                ) -> tuple[int, Any]:
        """One API call: (HTTP status, decoded JSON). ``token=""`` means the stack's
        token, ``None`` no token. ``url`` defaults to the leader for writes, the first
        coordinator that answers for reads."""
        if url is None:
            url = self.leader_url() if method != "GET" else self._any_url()
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        tok = self.token if token == "" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def _any_url(self) -> str:
        for c in (0, 1):
            try:
                with urllib.request.urlopen(self.coordinator_url(c) + "/health", timeout=2):
                    return self.coordinator_url(c)
            except OSError:
                continue
        raise AssertionError("no coordinator answers")

    def leader_url(self) -> str:
        def find() -> str:
            for c in (0, 1):
                try:
                    with urllib.request.urlopen(self.coordinator_url(c) + "/health",
                                                timeout=2) as resp:
                        doc = json.loads(resp.read())
                except OSError:
                    continue
                if doc.get("role") == "leader":
                    return self.coordinator_url(c)
            return ""

        return wait_until(find, timeout=30, interval=0.1, what="a coordinator leader")

    def coordinator_index(self, url: str) -> int:
        return 0 if url == self.coordinator_url(0) else 1

    def write(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """A write to the leader, sent again if leadership moved meanwhile (503 not_leader)."""
        status, doc = self.request(method, path, body, **kw)
        if status == 503 and isinstance(doc, dict) and doc.get("code") == "not_leader":
            status, doc = self.request(method, path, body, **kw)
        return status, doc

    def cluster(self, url: str | None = None) -> dict[str, Any]:
        status, doc = self.request("GET", "/v1/cluster", url=url)
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]

    def shards(self, url: str | None = None) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self.cluster(url)["shards"]}

    def nodes(self, url: str | None = None) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.cluster(url)["nodes"]}

    def node(self, node_id: str, url: str | None = None) -> dict[str, Any]:
        status, doc = self.request("GET", f"/v1/nodes/{node_id}", url=url)
        assert status == 200, doc
        return doc["node"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ processes

    def datanode_pid(self, i: int) -> int | None:
        found = pids(f"datanode --port {self.port(i)} ")
        return found[0] if found else None

    def sidecar_pid(self, i: int) -> int | None:
        found = pids(f"sidecar .* --http-port {self.http_port(i)}( |$)")
        return found[0] if found else None

    def coordinator_pid(self, c: int) -> int | None:
        found = pids(f"coordinator .* --http-port {self.base + 980 + c}( |$)")
        return found[0] if found else None

    def kill(self, *pids_: int) -> None:
        """SIGKILL them all at once, then wait until they are dead (reaped if ours)."""
        for pid in pids_:
            os.kill(pid, signal.SIGKILL)
        for pid in pids_:
            for mp in self.ours:
                if mp.popen is not None and mp.popen.pid == pid:
                    mp.kill()  # reaps
            wait_until(partial(gone, pid), timeout=10, interval=0.005, what=f"pid {pid} to die")

    def stop(self, pid: int) -> None:
        """SIGSTOP, and wait until every thread is stopped."""
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: stopped(pid), timeout=5, interval=0.002, what=f"pid {pid} to stop")

    def restart(self, argv: list[str], name: str) -> ManagedProcess:
        """Start ``argv`` again (a killed process's command line), logging beside the
        stack's logs; stopped on close."""
        logs = self.work / "restarted"
        logs.mkdir(exist_ok=True)
        mp = ManagedProcess(argv=argv, log_path=logs / f"{name}.log", cwd=self.work, env=_env())
        mp.start()
        self.ours.append(mp)
        return mp

    def record_processes(self) -> None:
        """Remember every data node's, sidecar's and coordinator's command line, for
        ``heal``."""
        found: dict[str, int | None] = {}
        for i in range(self.nodes_count):
            found[f"datanode-{i + 1}"] = self.datanode_pid(i)
        for i in range(self.nodes_count):
            found[f"sidecar-{i + 1}"] = self.sidecar_pid(i)
        for c in (0, 1):
            found[f"coordinator-{c + 1}"] = self.coordinator_pid(c)
        for name, pid in found.items():
            assert pid is not None, f"{name} is not running"
            self.argv[name] = cmdline(pid)

    def pid_of(self, name: str) -> int | None:
        kind, n = name.rsplit("-", 1)
        return {"datanode": self.datanode_pid, "sidecar": self.sidecar_pid,
                "coordinator": self.coordinator_pid}[kind](int(n) - 1)

    def heal(self) -> None:
        """Resume stopped processes and restart missing ones with their command lines
        (data nodes before sidecars): after a test that failed half-way."""
        for name, argv in self.argv.items():
            pid = self.pid_of(name)
            if pid is None:
                self.restart(argv, name)
            elif stopped(pid):
                os.kill(pid, signal.SIGCONT)

    # ------------------------------------------------------------------ clients

    def client(self, i: int, **kw: Any) -> redis.Redis:
        kw.setdefault("socket_timeout", 5)
        return redis.Redis(host=LOOPBACK, port=self.port(i), **kw)

    def admin(self, i: int, **kw: Any) -> redis.Redis:
        kw.setdefault("socket_timeout", 5)
        return redis.Redis(host=LOOPBACK, port=self.admin_port(i), **kw)

    def sk(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``python -m slotkeeper ARGS`` in the stack's directory (it finds the
        coordinator and the token in .slotkeeper-up.json)."""
        return subprocess.run([sys.executable, "-m", "slotkeeper", *args], cwd=self.work,
                              env=_env(), capture_output=True, text=True, timeout=timeout)

    # ------------------------------------------------------------------ health

    def problems(self) -> list[str]:
        """Why the cluster is not whole and quiet ([] when it is)."""
        doc = self.cluster()
        out: list[str] = []
        epoch = doc["epoch"]
        nodes = {n["id"]: n for n in doc["nodes"]}
        if len(doc["shards"]) != self.primaries:
            out.append(f"{len(doc['shards'])} shards")
        if doc["intents"]:
            out.append(f"intents under way: {[i['id'] for i in doc['intents']]}")
        if doc["paused"]:
            out.append("paused")
        min_acks = doc["settings"]["min_replicas_to_ack"]
        for s in doc["shards"]:
            sid = s["id"][:8]
            if s["lease"] != s["primary"]:
                out.append(f"shard {sid}: lease {s['lease']} != primary")
            if s["handoff"]:
                out.append(f"shard {sid}: handoff")
            if len(s["replicas"]) != self.replicas:
                out.append(f"shard {sid}: {len(s['replicas'])} replicas")
            if min_acks >= 1 and sorted(s["sync_replicas"]) != sorted(s["replicas"]):
                out.append(f"shard {sid}: sync_replicas {s['sync_replicas']}")
        spares = 0
        for n in nodes.values():
            nid = n["id"][:8]
            st = n.get("status") or {}
            if not n.get("alive"):
                out.append(f"node {nid} not alive")
                continue
            if n["health"] != "online" or n["hidden"]:
                out.append(f"node {nid}: {n['health']}, hidden={n['hidden']}")
            if st.get("epoch_applied") != epoch:
                out.append(f"node {nid}: applied {st.get('epoch_applied')}, not {epoch}")
            if st.get("role_applied") != n["role"]:
                out.append(f"node {nid}: applied role {st.get('role_applied')}")
            want = {"primary": "ACTIVE", "replica": "STANDBY", "none": "ONLINE"}[n["role"]]
            if n["state"] != want:
                out.append(f"node {nid}: {n['state']}")
            if n["role"] == "primary" and not st.get("writable"):
                out.append(f"node {nid}: primary not writable")
            if n["role"] == "none":
                spares += 1
        if spares != self.spares:
            out.append(f"{spares} spares")
        return out

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        last: list[list[str]] = [[]]

        def whole() -> bool:
            last[0] = self.problems()
            return not last[0]

        try:
            wait_until(whole, timeout=timeout, interval=0.1, what="the cluster to be whole")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last[0]}") from None
        return self.cluster()

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        for mp in self.ours:
            if mp.popen is not None and mp.popen.poll() is None:
                os.kill(mp.pid, signal.SIGCONT)
        for pid in {*pids(f"--dir {self.work}"), *pids(f"--etcd {LOOPBACK}:{self.base + 900}")}:
            try:
                os.kill(pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for mp in reversed(self.ours):
            mp.stop()


@contextmanager
def start_stack(work: Path, *, primaries: int = 2, replicas: int = 1, spares: int = 0,
                token: str = "", ttl: float = 2.0, timeout: float = 120.0) -> Iterator[Stack]:
    """``slotkeeper up`` in ``work``; stopped (SIGINT, then our restarted processes)
    on exit."""
    base = pick_base(primaries * (1 + replicas) + spares)
    argv = [sys.executable, "-m", "slotkeeper", "up", "--primaries", str(primaries),
            "--replicas", str(replicas), "--spares", str(spares), "--base-port", str(base),
            "--ttl", f"{ttl:g}", "--data", str(work / "data"), "--timeout", f"{timeout - 30:g}"]
    if token:
        argv += ["--token", token]
    log_path = work / "up.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=work, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(base, work, proc, primaries, replicas, spares, token, ttl)
    try:
        wait_until(lambda: "is up" in log_path.read_text() or proc.poll() is not None,
                   timeout=timeout, what="slotkeeper up to report the cluster up")
        assert proc.poll() is None, log_path.read_text()
        yield stack
    finally:
        stack.close()
