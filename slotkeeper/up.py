"""``slotkeeper up``: a whole local cluster on loopback, for development and demos.

Starts etcd and a Consul dev agent (the project's binaries: PATH, then
``./.tools/bin``), two coordinators, and data node + sidecar pairs, each with its
own data dir under ``--data``; waits until the cluster is bootstrapped and every
node is online; prints where everything is; Ctrl-C (or SIGTERM) stops it all
cleanly. Running it again restarts the same cluster with its data (etcd's data
and each node's data dir are kept; Consul runs in dev mode, in memory).

Ports, from ``--base-port`` B (default 7000): data nodes B, B+1, … (admin ports
+10000), sidecars' HTTP B+800+i, coordinators' API B+980 and B+981, etcd B+900
(peer B+901), Consul HTTP B+950 (its other ports B+951…B+955).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
UP_FILE = ".slotkeeper-up.json"
ZONES = ("zone-a", "zone-b", "zone-c")


class UpError(RuntimeError):
    """The local cluster could not be started."""


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is ours to handle, in order
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Layout:
    primaries: int
    replicas: int
    spares: int
    base: int
    ttl: float
    cluster: str
    data: Path
    token: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return self.primaries * (1 + self.replicas) + self.spares

    @property
    def etcd_port(self) -> int:
        return self.base + 900

    @property
    def consul_port(self) -> int:
        return self.base + 950

    def coordinator_port(self, i: int) -> int:
        return self.base + 980 + i


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    local = Path.cwd() / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    raise UpError(f"{name} not found on PATH or in ./.tools/bin: run `make setup` first")


def slotkeeper_argv() -> list[str]:
    script = Path(sys.executable).with_name("slotkeeper")
    return [str(script)] if script.exists() else [sys.executable, "-m", "slotkeeper"]


def build(layout: Layout) -> list[Proc]:
    """Every process of the local cluster, in start order."""
    d = layout.data
    sk = slotkeeper_argv()
    etcd = f"{LOOPBACK}:{layout.etcd_port}"
    consul = f"{LOOPBACK}:{layout.consul_port}"
    peer = f"http://{LOOPBACK}:{layout.etcd_port + 1}"
    procs = [
        Proc("etcd", [
            find_binary("etcd"), "--name", "up", "--data-dir", str(d / "etcd"),
            "--listen-client-urls", f"http://{etcd}", "--advertise-client-urls", f"http://{etcd}",
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"up={peer}", "--log-level", "warn",
        ], d / "logs" / "etcd.log"),
        Proc("consul", [
            find_binary("consul"), "agent", "-dev", "-bind", LOOPBACK, "-client", LOOPBACK,
            "-node", "slotkeeper-up", "-log-level", "warn", "-disable-host-node-id",
            "-http-port", str(layout.consul_port), "-dns-port", str(layout.consul_port + 1),
            "-server-port", str(layout.consul_port + 2),
            "-serf-lan-port", str(layout.consul_port + 3),
            "-serf-wan-port", str(layout.consul_port + 4),
            "-grpc-port", str(layout.consul_port + 5),
        ], d / "logs" / "consul.log"),
    ]
    settings = [
        f"bootstrap_primaries={layout.primaries}", f"bootstrap_replicas={layout.replicas}",
        f"replicas={layout.replicas}", f"lease_ttl={layout.ttl:g}",
    ]
    for i in range(2):
        argv = [*sk, "coordinator", "--cluster", layout.cluster, "--etcd", etcd,
                "--consul", consul, "--http-port", str(layout.coordinator_port(i)),
                "--instance-id", f"coordinator-{i + 1}"]
        for s in settings:
            argv += ["--set", s]
        if layout.token:
            argv += ["--token", layout.token]
        procs.append(Proc(f"coordinator-{i + 1}", argv, d / "logs" / f"coordinator-{i + 1}.log"))
    for i in range(layout.nodes):
        port = layout.base + i
        node_dir = d / f"node-{i + 1}"
        procs.append(Proc(f"datanode-{i + 1}", [
            *sk, "datanode", "--port", str(port), "--admin-port", str(port + 10000),
            "--dir", str(node_dir), "--cluster-enabled", "yes",
        ], d / "logs" / f"datanode-{i + 1}.log"))
        procs.append(Proc(f"sidecar-{i + 1}", [
            *sk, "sidecar", "--cluster", layout.cluster, "--etcd", etcd, "--consul", consul,
            "--datanode", f"{LOOPBACK}:{port + 10000}", "--advertise-addr", LOOPBACK,
            "--zone", ZONES[i % len(ZONES)], "--dir", str(node_dir),
            "--http-port", str(layout.base + 800 + i),
        ], d / "logs" / f"sidecar-{i + 1}.log"))
    return procs


def http_json(url: str, timeout: float = 1.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: Sequence[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen is not None and not p.alive():
                raise UpError(f"{p.name} exited ({p.popen.returncode}) while waiting for "
                              f"{what}; its log ({p.log}):\n{p.tail()}")
        try:
            if check():
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise UpError(f"timed out after {timeout:.0f}s waiting for {what}")


def cluster_ready(layout: Layout) -> Callable[[], bool]:
    url = f"http://{LOOPBACK}:{layout.coordinator_port(0)}/v1/cluster"

    def ready() -> bool:
        doc = http_json(url)
        assert isinstance(doc, dict)
        members = [n for n in doc.get("nodes", []) if n.get("shard")]
        shards = doc.get("shards", [])
        return (
            len(shards) == layout.primaries
            and len(members) == layout.primaries * (1 + layout.replicas)
            and all(n.get("health") == "online" for n in members)
        )

    return ready


def summary(layout: Layout) -> str:
    c0 = f"http://{LOOPBACK}:{layout.coordinator_port(0)}"
    return "\n".join([
        f"slotkeeper cluster '{layout.cluster}' is up: {layout.primaries} shard(s) x "
        f"{layout.replicas} replica(s), {layout.spares} spare(s); data in {layout.data}",
        "",
        f"  clients:      redis-cli -c -p {layout.base}",
        f"  admin API:    {c0}/v1/cluster   (dashboard {c0}/, standby on port "
        f"{layout.coordinator_port(1)})",
        f"  operator:     slotkeeper status   (uses {UP_FILE} here)",
        f"  Consul UI:    http://{LOOPBACK}:{layout.consul_port}/ui/",
        f"  etcd keys:    etcdctl --endpoints {LOOPBACK}:{layout.etcd_port} "
        f"get --prefix /slotkeeper/{layout.cluster}/",
        f"  logs:         {layout.data / 'logs'}",
        "",
        "Ctrl-C stops everything; `slotkeeper up` again restarts this cluster with its data.",
    ])


def run(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="slotkeeper up", description=__doc__.split("\n\n")[0])
    p.add_argument("--primaries", type=int, default=3)
    p.add_argument("--replicas", type=int, default=1, help="replicas per shard")
    p.add_argument("--spares", type=int, default=0, help="extra ONLINE nodes (for repair, add-shard, drain)")
    p.add_argument("--base-port", type=int, default=7000)
    p.add_argument("--ttl", type=float, default=2.0, help="lease TTL in seconds")
    p.add_argument("--cluster", default="local")
    p.add_argument("--data", default="./data", help="where everything keeps its data")
    p.add_argument("--token", default="", help="token the coordinators require for writes")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = p.parse_args(argv)
    if args.primaries < 1 or args.replicas < 0 or args.spares < 0:
        p.error("--primaries must be >= 1, --replicas and --spares >= 0")
    layout = Layout(args.primaries, args.replicas, args.spares, args.base_port, args.ttl,
                    args.cluster, Path(args.data).resolve(), args.token)
    if layout.base + layout.nodes + 10000 >= 65536:
        p.error("--base-port too high")
    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    procs: list[Proc] = []
    try:
        procs = build(layout)
        etcd, consul, *rest = procs
        etcd.start()
        etcd_health = f"http://{LOOPBACK}:{layout.etcd_port}/health"

        def etcd_healthy() -> bool:
            doc = http_json(etcd_health)
            return isinstance(doc, dict) and doc.get("health") == "true"

        wait_for("etcd", etcd_healthy, 30, [etcd])
        consul.start()
        wait_for("Consul", lambda: bool(http_json(
            f"http://{LOOPBACK}:{layout.consul_port}/v1/status/leader")), 30, [consul])
        for proc in rest:
            proc.start()
        print(f"started etcd, Consul, 2 coordinators and {layout.nodes} data node + sidecar "
              f"pairs; waiting for the cluster (logs in {layout.data / 'logs'}) …", flush=True)
        wait_for("the cluster to be bootstrapped with every node online",
                 cluster_ready(layout), args.timeout, procs)
        up_file = Path.cwd() / UP_FILE
        up_file.write_text(json.dumps({
            "coordinator": f"http://{LOOPBACK}:{layout.coordinator_port(0)}",
            "coordinators": [f"http://{LOOPBACK}:{layout.coordinator_port(i)}" for i in range(2)],
            "token": layout.token or None,
            "cluster": layout.cluster,
        }) + "\n")
        print(summary(layout), flush=True)
        while True:
            for proc in procs:
                if proc.popen is not None and not proc.alive():
                    print(f"warning: {proc.name} exited ({proc.popen.returncode if proc.popen else '?'});"
                          f" see {proc.log}", flush=True)
                    proc.popen = None
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
        return 0
    except UpError as exc:
        print(f"slotkeeper up: {exc}", file=sys.stderr)
        return 1
    finally:
        # Sidecars first (they revoke leases and deregister), then data nodes (they
        # save snapshots), coordinators, Consul, etcd.
        order = sorted(procs, key=lambda x: ("sidecar", "datanode", "coordinator", "consul",
                                              "etcd").index(x.name.split("-")[0]))
        for proc in order:
            proc.stop()
