"""Test support: free ports, deadline waits and real etcd / Consul processes.

Tests import from here (``from tests.support import free_port, wait_until``);
conftest.py wraps the process starters in fixtures. Everything waits with a
deadline, never with fixed sleeps, and every process started here is killed
and reaped by its owner (plus an atexit net and PDEATHSIG, so a crashed pytest
leaves no orphans either).
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import pytest

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``host`` (Consul's serf and DNS use both).

    The kernel picks it; ports already returned in this process are never
    returned twice, so several calls in a row give distinct ports.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if port in _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------- waiting


def _timeout_message(what: str, timeout: float, last_exc: BaseException | None) -> str:
    msg = f"timed out after {timeout:.1f}s waiting for {what}"
    if last_exc is not None:
        msg += f" (last error: {last_exc!r})"
    return msg


def wait_until(
    pred: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str | None = None,
) -> T:
    """Call ``pred`` until it returns a truthy value and return that value.

    Exceptions from ``pred`` count as "not yet" (e.g. connection refused while
    a server starts); the last one is reported if the deadline passes, as an
    ``AssertionError`` so it reads as a test failure.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = pred()
            if result:
                return result
        except Exception as exc:  # retried; the last one is reported at the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timeout_message(what or repr(pred), timeout, last_exc))
        time.sleep(interval)


@overload
async def async_wait_until(
    pred: Callable[[], Awaitable[T]],
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...
@overload
async def async_wait_until(
    pred: Callable[[], T], timeout: float = ..., interval: float = ..., what: str | None = ...
) -> T: ...
async def async_wait_until(
    pred: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str | None = None,
) -> Any:
    """``wait_until`` for async tests: never blocks the loop; ``pred`` may be async."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = pred()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except Exception as exc:  # retried; the last one is reported at the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timeout_message(what or repr(pred), timeout, last_exc))
        await asyncio.sleep(interval)


def http_get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- processes


def require_binary(name: str) -> str:
    """Path of ``name`` on PATH; fail (not skip) the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH. Run `make setup` (it installs etcd, etcdctl and "
            f"consul into .tools/bin) and run the tests with `make test`.",
            pytrace=False,
        )
    return path


_live: set[ManagedProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


@dataclass(eq=False)
class ManagedProcess:
    """A child process with its output in ``log_path``; stop/kill always reap it.

    The child gets PDEATHSIG=SIGKILL (via util-linux ``setpriv``), so it dies
    with the thread that started it: start processes from the test's main
    thread, not from a short-lived worker thread.
    """

    argv: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        if self.running:
            return
        argv = list(self.argv)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal is for pytest only
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        assert self.popen is not None, "process not started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but stops answering.

        SIGSTOP takes effect asynchronously: wait until every thread is stopped, so
        the first request sent after pause() really finds the process frozen."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(self._stopped, timeout=5, interval=0.005, what=f"pid {self.pid} to stop")

    def _stopped(self) -> bool:
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return True
        for tid in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("T", "t"):
                return False
        return True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the process."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL (crash) and reap."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        _live.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        """Wait for ``ready()``; on failure stop the process and show its log."""

        def check() -> object:
            if not self.running:
                raise RuntimeError(
                    f"exited with code {self.popen.returncode if self.popen else None}"
                )
            return ready()

        try:
            wait_until(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from None


# --------------------------------------------------------------------------- etcd


@dataclass(eq=False)
class EtcdServer(ManagedProcess):
    """A single-member etcd on loopback. ``endpoint`` is "127.0.0.1:PORT"."""

    host: str = LOOPBACK
    port: int = 0
    peer_port: int = 0
    data_dir: Path = Path()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def healthy(self) -> bool:
        try:
            return http_get_json(f"{self.url}/health").get("health") == "true"
        except (OSError, ValueError):
            return False

    def start(self, timeout: float = 20.0) -> None:
        """Start (or restart after stop/kill, same ports and data) and wait for health."""
        super().start()
        self.wait_ready(self.healthy, timeout, f"etcd at {self.url} to be healthy")

    def etcdctl(self, *args: str, timeout: float = 10.0) -> str:
        """Run etcdctl against this server and return its stdout."""
        out = subprocess.run(
            [require_binary("etcdctl"), f"--endpoints={self.url}", *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return out.stdout.decode()


def start_etcd(workdir: Path, name: str = "etcd") -> EtcdServer:
    """Start etcd with its data dir and log in ``workdir``; the caller must stop() it."""
    binary = require_binary("etcd")
    workdir.mkdir(parents=True, exist_ok=True)
    port, peer_port = free_port(), free_port()
    client_url, peer_url = f"http://{LOOPBACK}:{port}", f"http://{LOOPBACK}:{peer_port}"
    data_dir = workdir / f"{name}.data"
    argv = [
        binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"{name}={peer_url}",
        "--initial-cluster-state",
        "new",
        "--log-level",
        "warn",
        "--log-outputs",
        "stderr",
        # Tests do not survive power loss; a killed process loses nothing either way.
        "--unsafe-no-fsync",
    ]
    server = EtcdServer(
        argv=argv,
        log_path=workdir / f"{name}.log",
        cwd=workdir,
        port=port,
        peer_port=peer_port,
        data_dir=data_dir,
    )
    server.start()
    return server


# --------------------------------------------------------------------------- consul


@dataclass(eq=False)
class ConsulAgent(ManagedProcess):
    """A Consul agent in dev mode (in-memory server, own leader) on loopback."""

    host: str = LOOPBACK
    http_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def leader(self) -> str:
        """Raft leader address, "" while there is none."""
        try:
            return str(http_get_json(f"{self.url}/v1/status/leader"))
        except (OSError, ValueError):
            return ""

    def start(self, timeout: float = 30.0) -> None:
        """Start (dev mode keeps no state across restarts) and wait for a leader."""
        super().start()
        self.wait_ready(self.leader, timeout, f"consul at {self.url} to elect a leader")


def start_consul(workdir: Path, name: str = "consul") -> ConsulAgent:
    """Start a dev-mode Consul agent logging into ``workdir``; the caller must stop() it."""
    binary = require_binary("consul")
    workdir.mkdir(parents=True, exist_ok=True)
    # Every port explicit: the defaults (8300-8302, 8500, 8502, 8600) may be taken.
    ports = {
        name_: free_port() for name_ in ("http", "dns", "server", "serf-lan", "serf-wan", "grpc")
    }
    argv = [
        binary,
        "agent",
        "-dev",
        "-bind",
        LOOPBACK,
        "-client",
        LOOPBACK,
        "-node",
        name,
        "-log-level",
        "warn",
        "-disable-host-node-id",
        *(arg for key, port in ports.items() for arg in (f"-{key}-port", str(port))),
    ]
    agent = ConsulAgent(
        argv=argv,
        log_path=workdir / f"{name}.log",
        cwd=workdir,
        env={"CHECKPOINT_DISABLE": "1"},  # no update check calls to hashicorp.com
        http_port=ports["http"],
        ports=ports,
    )
    agent.start()
    return agent
