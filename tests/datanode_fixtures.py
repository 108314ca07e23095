"""Data nodes as real processes for tests: ``start_datanode(dir, *flags)``.

A test module usually shares one node (``datanode`` fixture in conftest.py) and
flushes it between tests; tests that restart, kill or reconfigure a node start
their own.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.support import LOOPBACK, REPO_ROOT, ManagedProcess, free_port


@dataclass(eq=False)
class DataNodeProcess(ManagedProcess):
    port: int = 0
    admin_port: int = 0
    dir: Path = Path()

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("protocol", 2)
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    def admin(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("protocol", 2)
        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host=LOOPBACK, port=self.admin_port, **kwargs)

    def answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        super().start()
        self.wait_ready(self.answers, timeout, f"data node on port {self.port}")

    def exit_code(self, timeout: float = 15.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)


def start_datanode(
    directory: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    port: int = 0,
    admin_port: int = 0,
) -> DataNodeProcess:
    """Start ``slotkeeper datanode`` with its data in ``directory`` on free ports."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    admin_port = admin_port or free_port()
    argv = [
        sys.executable, "-m", "slotkeeper", "datanode",
        "--port", str(port), "--admin-port", str(admin_port),
        "--dir", str(directory), "--snapshot-interval", "0", "--log-level", "info",
        *flags,
    ]
    node = DataNodeProcess(
        argv=argv,
        log_path=directory.parent / f"datanode-{port}.log",
        cwd=REPO_ROOT,
        env=env,
        port=port,
        admin_port=admin_port,
        dir=directory,
    )
    if wait:
        node.start()
    else:
        ManagedProcess.start(node)
    return node
