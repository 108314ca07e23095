"""Processes for the benchmarks: redis-server, the data node and one-shot tools.

Every process is started in its own session (so its process group holds it and
any child it forks, e.g. a BGSAVE child) and, where util-linux ``setpriv`` exists,
with PDEATHSIG=SIGKILL so a killed bench leaves no orphans. Owners stop them in
``finally`` blocks; ``stop()`` kills the whole process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client

LOOPBACK = "127.0.0.1"
REDIS_TOOLS = ("redis-server", "redis-benchmark", "redis-cli")
INSTALL_HINT = "install them with: bash scripts/install-redis-tools.sh (Debian packages redis-server, redis-tools)"

_handed_out: set[int] = set()


class ToolMissing(RuntimeError):
    pass


def free_port() -> int:
    """A free loopback TCP port chosen by the kernel, never the same one twice per run."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def missing_tools(names: Sequence[str] = REDIS_TOOLS) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def wrap(argv: Sequence[str]) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv and sys.platform.startswith("linux"):
        return [setpriv, "--pdeathsig", "KILL", "--", *argv]
    return list(argv)


def kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL whatever is left."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    if proc.poll() is None and grace > 0:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)  # also reaps forked children left in the group
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def spawn(argv: Sequence[str], log: Path | None = None, **kw) -> subprocess.Popen:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            wrap(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **kw,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


@dataclass
class ToolResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_tool(argv: Sequence[str], timeout: float) -> ToolResult:
    """Run a one-shot tool (redis-benchmark …), killing its process group on timeout or error."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        wrap(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, text=True, errors="replace",
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return ToolResult(proc.returncode, out, err, time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=0)
        out, err = proc.communicate()
        return ToolResult(-9, out or "", err or "", time.monotonic() - t0, timed_out=True)
    finally:
        if proc.poll() is None:
            kill_group(proc, grace=0)


class Background:
    """A one-shot tool running while the caller does something else."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            wrap(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True, text=True, errors="replace",
        )

    def done(self) -> bool:
        return self.proc.poll() is not None

    def finish(self, timeout: float) -> ToolResult:
        try:
            out, err = self.proc.communicate(timeout=timeout)
            return ToolResult(self.proc.returncode, out, err, time.monotonic() - self.t0)
        except subprocess.TimeoutExpired:
            kill_group(self.proc, grace=0)
            out, err = self.proc.communicate()
            return ToolResult(-9, out or "", err or "", time.monotonic() - self.t0, timed_out=True)

    def kill(self) -> None:
        """Stop it if still running (safe after ``finish``)."""
        if self.proc.poll() is None:
            kill_group(self.proc, grace=0)


@dataclass
class Server:
    """One server process on a free loopback port (``kind``: "ours" or "redis")."""

    kind: str
    label: str
    argv_fn: Callable[[int, Path], list[str]]
    port: int = 0
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="skbench-")))
    proc: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Server:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> Server:
        self.port = free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.argv_fn(self.port, self.dir), log=self.log)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with Client(self.port, timeout=2) as c:
                    if c.call("PING") == b"PONG":
                        return self
            except (OSError, RuntimeError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not answer PING within {timeout:.0f}s ({last!r})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_alive(self) -> str:
        """Restart a server that died; returns a note about the crash ("" if it was alive)."""
        if self.alive():
            return ""
        rc = self.proc.returncode if self.proc is not None else None
        note = f"{self.label} had exited (rc={rc}); restarted. Log tail: {self.log_tail()}"
        self.restarts += 1
        self.start()
        return note

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.port, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=0)  # throwaway data: no shutdown save wanted
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _datanode_argv(port: int, d: Path) -> list[str]:
    script = Path(sys.executable).with_name("slotkeeper")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "slotkeeper"]
    return [*base, "datanode", "--port", str(port), "--admin-port", str(free_port()),
            "--dir", str(d), "--snapshot-interval", "0"]


def _redis_argv(port: int, d: Path) -> list[str]:
    return ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "no", "--dir", str(d), "--daemonize", "no", "--logfile", ""]


def datanode() -> Server:
    return Server("ours", "data node", _datanode_argv)


def redis_server() -> Server:
    return Server("redis", "redis-server", _redis_argv)


def redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "unknown"
