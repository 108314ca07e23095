"""Run command handlers in-process on a real Keyspace (no sockets), for unit tests.

``FakeConn`` carries what handlers use (``ks``, ``null``, ``resp3``, ``effects``,
``server.proto_max_bulk_len``); ``call`` checks arity and turns a raised
CommandError into its error reply, like the connection does. ``check_memory``
asserts that the keyspace's running estimate equals a fresh recount and that no
empty collection was left behind.
"""

from __future__ import annotations

from typing import Any

from datanode import resp
from datanode.commands import TABLE
from datanode.errors import CommandError, unknown_command, wrong_args
from datanode.keyspace import Keyspace, estimate_size
from datanode.zset import ZSet


class _Server:
    proto_max_bulk_len = 512 * 1024 * 1024


class FakeConn:
    def __init__(self, protocol: int = 2, ks: Keyspace | None = None) -> None:
        self.ks = ks if ks is not None else Keyspace()
        self.resp3 = protocol == 3
        self.null = resp.NULL3 if self.resp3 else resp.NULL2
        self.effects: list[list[bytes]] | None = None
        self.server = _Server()

    def call(self, *args: str | bytes) -> bytes:
        argv = [a.encode() if isinstance(a, str) else a for a in args]
        spec = TABLE.get(argv[0].lower())
        if spec is None:
            return resp.error(unknown_command(argv))
        if spec.fail_arity(argv):
            return resp.error(wrong_args(spec.name))
        self.effects = None
        try:
            return spec.handler(self, argv)  # type: ignore[arg-type]
        except CommandError as exc:
            self.effects = None
            return resp.error(exc.message)


def check_memory(ks: Keyspace) -> None:
    items: list[tuple[bytes, Any]] = [(k, v) for k, v, _ in ks.iter_items()]
    assert ks.mem == sum(estimate_size(k, v) for k, v in items)
    assert ks.count == len(items)
    for key, value in items:
        if type(value) is not bytes:
            assert len(value) > 0, f"empty collection left at {key!r}"
        if type(value) is ZSet:
            assert value.order == sorted((s, m) for m, s in value.scores.items())
