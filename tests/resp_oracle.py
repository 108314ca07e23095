"""Differential testing against a real ``redis-server``: the same commands, the same bytes.

``RawClient`` speaks RESP over a socket and returns each reply as its raw bytes
(RESP2, or RESP3 after ``HELLO 3``), so replies are compared exactly: types, nulls,
maps, sets, doubles. ``start_redis_oracle`` runs a throwaway redis-server (no
persistence) on a free port; tests using it are skipped when no redis-server is
installed. ``run_script`` runs a script of commands on both servers, one per line
(``shlex`` quoting); a line starting with ``~`` compares the replies with every
array sorted (for unordered replies such as SMEMBERS), one starting with ``?``
only runs the command.
"""

from __future__ import annotations

import shlex
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import LOOPBACK, ManagedProcess, free_port


class RawClient:
    """A minimal RESP client returning raw reply bytes."""

    def __init__(self, port: int, protocol: int = 2, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.buf = b""
        if protocol == 3:
            reply = self.cmd("HELLO", "3")
            assert reply.startswith(b"%"), reply

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read(self) -> bytes:
        line = self._line()
        kind = line[:1]
        if kind in (b"$", b"=", b"!"):
            n = int(line[1:])
            if n < 0:
                return line + b"\r\n"
            return line + b"\r\n" + self._take(n + 2)
        if kind in (b"*", b"~", b"%", b">", b"|"):
            n = int(line[1:])
            if n < 0:
                return line + b"\r\n"
            if kind in (b"%", b"|"):
                n *= 2
            return line + b"\r\n" + b"".join(self.read() for _ in range(n))
        return line + b"\r\n"

    def cmd(self, *args: str | bytes) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self.read()


def parse(raw: bytes, i: int = 0) -> tuple[Any, int]:
    """Raw RESP → nested Python values (``(type byte, items)`` for aggregates)."""
    kind = raw[i : i + 1]
    j = raw.index(b"\r\n", i)
    line = raw[i + 1 : j]
    i = j + 2
    if kind in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return None, i
        return raw[i : i + n], i + n + 2
    if kind in (b"*", b"~", b"%", b">"):
        n = int(line)
        if n < 0:
            return None, i
        if kind == b"%":
            n *= 2
        items = []
        for _ in range(n):
            v, i = parse(raw, i)
            items.append(v)
        return (kind, items), i
    if kind == b"_":
        return None, i
    return (kind, line), i


def normalized(raw: bytes) -> Any:
    """The reply with every aggregate's items sorted (order-insensitive comparison)."""

    def norm(v: Any) -> Any:
        if isinstance(v, tuple) and isinstance(v[1], list):
            return (v[0], sorted((norm(x) for x in v[1]), key=repr))
        return v

    return norm(parse(raw)[0])


@dataclass(eq=False)
class RedisOracle(ManagedProcess):
    port: int = 0

    def answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        super().start()
        self.wait_ready(self.answers, timeout, f"redis-server on port {self.port}")


def start_redis_oracle(directory: Path) -> RedisOracle:
    """A redis-server without persistence on a free port; skips the test if absent."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: no reference to compare with")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--protected-mode", "no",
    ]
    oracle = RedisOracle(argv=argv, log_path=directory / "redis.log", cwd=directory, port=port)
    oracle.start()
    return oracle


def script_lines(script: str) -> list[tuple[str, list[str]]]:
    """``(mode, argv)`` per non-empty, non-comment line; mode is "", "~" or "?"."""
    out = []
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mode = ""
        if line[0] in "~?":
            mode, line = line[0], line[1:]
        out.append((mode, shlex.split(line)))
    return out


def run_script(node_port: int, oracle_port: int, script: str, protocol: int) -> list[str]:
    """Run ``script`` on both servers (each flushed first); the differences, described."""
    return run_commands(node_port, oracle_port, script_lines(script), protocol)


def run_commands(
    node_port: int,
    oracle_port: int,
    commands: list[tuple[str, list[str]]] | list[tuple[str, list[bytes]]],
    protocol: int,
) -> list[str]:
    """Run ``(mode, argv)`` commands on both servers (flushed first); the differences."""
    ours = RawClient(node_port, protocol)
    ref = RawClient(oracle_port, protocol)
    diffs: list[str] = []
    try:
        ours.cmd("FLUSHALL")
        ref.cmd("FLUSHALL")
        for mode, argv in commands:
            a = ref.cmd(*argv)
            b = ours.cmd(*argv)
            if mode == "?":
                continue
            same = a == b if mode == "" else normalized(a) == normalized(b)
            if not same:
                shown = " ".join(x.decode("latin-1") if isinstance(x, bytes) else x for x in argv)
                diffs.append(f"RESP{protocol} {shown}\n  redis: {a!r}\n  ours:  {b!r}")
    finally:
        ours.close()
        ref.close()
    return diffs
