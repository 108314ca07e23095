"""Unmodified Redis tools against a data node: redis-cli (inline, pipe) and redis-benchmark."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None,
    reason="redis-tools not installed (make setup installs them as root)",
)

DEFAULT_TESTS = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange,mset"


def _cli(node, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(node.port), *args],
        input=stdin, capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout


def test_redis_cli_commands(datanode) -> None:
    datanode.client().flushall()
    assert _cli(datanode, "set", "greeting", "hello world").strip() == "OK"
    assert _cli(datanode, "get", "greeting").strip() == "hello world"
    assert _cli(datanode, "-3", "get", "nope").strip() == ""
    assert "redis_version:7.2" in _cli(datanode, "info", "server")


def test_redis_cli_pipes_inline_commands(datanode) -> None:
    datanode.client().flushall()
    script = "SET a 1\nINCR a\nINCRBY a 10\nGET a\nPING\n"
    out = _cli(datanode, stdin=script).split()
    assert out == ["OK", "2", "12", "12", "PONG"]
    # --pipe sends raw protocol and counts replies.
    out = _cli(datanode, "--pipe", stdin="SET p1 x\r\nSET p2 y\r\n")
    assert "errors: 0, replies: 2" in out


def test_redis_benchmark_default_set_runs_clean(datanode) -> None:
    datanode.client().flushall()
    proc = subprocess.run(
        ["redis-benchmark", "-p", str(datanode.port), "-n", "2000", "-c", "10", "-q",
         "-t", DEFAULT_TESTS],
        capture_output=True, text=True, timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "error" not in output.lower(), output
    for test in ("SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP",
                 "ZADD", "ZPOPMIN", "LRANGE_600", "MSET"):
        assert f"{test}:" in output or f"{test} (" in output, (test, output)


def test_redis_benchmark_inline_ping(datanode) -> None:
    proc = subprocess.run(
        ["redis-benchmark", "-p", str(datanode.port), "-n", "2000", "-q", "-t", "ping"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0
    assert "PING_INLINE" in proc.stdout and "PING_MBULK" in proc.stdout, proc.stdout
