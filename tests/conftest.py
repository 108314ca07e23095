"""Shared pytest fixtures for slotkeeper.

Sections, in order (append new fixtures to the matching section, or add a new
section at the end):

1. Environment: PATH so tests find the project's binaries.
2. Stores: real etcd and Consul processes (``etcd``, ``consul``).

Helpers that are not fixtures (free_port, wait_until, process starters) live in
tests/support.py so test modules can import them directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import TOOLS_BIN, ConsulAgent, EtcdServer, start_consul, start_etcd

# =========================================================================== 1. Environment

# `make test` already puts .tools/bin first on PATH; do the same here so a plain
# `.venv/bin/python -m pytest ...` uses the same etcd/consul binaries.
if TOOLS_BIN.is_dir() and str(TOOLS_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


# =========================================================================== 2. Stores
#
# One etcd and one Consul per test module: cheap enough (~1 s / ~3 s to start)
# and a module cannot leak state into the next one. Tests sharing them use their
# own key prefix / service names. A test that stops or pauses a store should
# restore it (``start()`` / ``resume()``) in a finally block, or start a private
# one with tests.support.start_etcd(tmp_path) / start_consul(tmp_path).


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real single-member etcd on free loopback ports.

    Attributes: ``endpoint`` ("127.0.0.1:PORT"), ``host``, ``port``, ``url``
    ("http://127.0.0.1:PORT"), ``pid``, ``peer_port``, ``data_dir``, ``log_path``.
    Faults: ``pause()`` (SIGSTOP), ``resume()`` (SIGCONT), ``stop()`` (SIGTERM),
    ``kill()`` (SIGKILL), ``start()`` (restart on the same ports and data).
    ``etcdctl(*args)`` runs etcdctl against it.
    """
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """A real Consul agent in dev mode (in-memory server and leader) on free ports.

    Attributes: ``http_addr`` ("127.0.0.1:PORT"), ``host``, ``http_port``, ``url``,
    ``ports`` (all its ports by name), ``pid``, ``log_path``; same fault methods
    as ``etcd`` (a restarted dev agent starts empty).
    """
    agent = start_consul(tmp_path_factory.mktemp("consul"))
    try:
        yield agent
    finally:
        agent.stop()


# --------------------------------------------------------------------------- data nodes

from tests.datanode_fixtures import DataNodeProcess, start_datanode  # noqa: E402


@pytest.fixture(scope="module")
def datanode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataNodeProcess]:
    """One data node shared by a test module (flush it in the tests that need it empty)."""
    node = start_datanode(tmp_path_factory.mktemp("datanode") / "data")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def r(datanode: DataNodeProcess) -> Iterator[Any]:
    """A RESP2 redis-py client on the shared node, which starts empty."""
    client = datanode.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()
