"""Server commands: INFO, CONFIG, TIME, DBSIZE, FLUSHDB/FLUSHALL, SHUTDOWN, DEBUG."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import info, resp
from ..config import POLICIES, ConfigError, parse_memory
from ..errors import SYNTAX, CommandError
from ..glob import compile_glob
from ..numbers import parse_float, parse_int
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection
    from ..server import DataNode

group = CommandGroup()
command = group.command
subcommand = group.subcommand


@command("info")
def info_(c: Connection, argv: list[bytes]) -> bytes:
    text = info.render(c.server, [a.decode("latin-1") for a in argv[1:]])
    return resp.verbatim(text.encode(), c.resp3)


@command("time")
def time_(c: Connection, argv: list[bytes]) -> bytes:
    now = time.time_ns() // 1000
    return resp.bulk_array([b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)])


@command("dbsize")
def dbsize(c: Connection, argv: list[bytes]) -> bytes:
    return resp.integer(c.ks.count)


def _flush(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(SYNTAX)
    c.ks.flush()
    return resp.OK


@command("flushdb")
def flushdb(c: Connection, argv: list[bytes]) -> bytes:
    return _flush(c, argv)


@command("flushall")
def flushall(c: Connection, argv: list[bytes]) -> bytes:
    return _flush(c, argv)


@command("shutdown")
def shutdown(c: Connection, argv: list[bytes]) -> bytes:
    save = True
    for opt in (a.upper() for a in argv[1:]):
        if opt == b"NOSAVE":
            save = False
        elif opt == b"SAVE":
            save = True
        elif opt in (b"NOW", b"FORCE"):
            pass
        elif opt == b"ABORT":
            raise CommandError("ERR No shutdown in progress.")
        else:
            raise CommandError(SYNTAX)
    if not c.server.request_shutdown(save):
        raise CommandError("ERR Errors trying to SHUTDOWN. Check logs.")
    c.closing = True
    return b""


@command("debug")
def debug(c: Connection, argv: list[bytes]) -> bytes:
    sub = argv[1].lower()
    if sub == b"sleep" and len(argv) == 3:
        time.sleep(parse_float(argv[2]))
        return resp.OK
    if sub == b"set-active-expire" and len(argv) == 3:
        c.server.active_expire = parse_int(argv[2]) != 0
        return resp.OK
    if sub == b"reload":
        from ..snapshot import SnapshotError

        node = c.server
        try:
            node.snapshots.save()
            node.ks.flush()
            node.snapshots.load()
        except SnapshotError as exc:
            raise CommandError(f"ERR Error trying to reload the snapshot: {exc}") from None
        return resp.OK
    if sub == b"help":
        return resp.bulk_array([b"DEBUG SLEEP <seconds>", b"DEBUG SET-ACTIVE-EXPIRE <0|1>", b"DEBUG RELOAD"])
    raise CommandError(
        f"ERR unknown subcommand '{argv[1].decode('utf-8', 'replace')}'. Try DEBUG HELP."
    )


# ---------------------------------------------------------------------- CONFIG
group.container("config")


def _memory_param(attr: str) -> tuple[Callable[[DataNode], bytes], Callable[[DataNode, bytes], None]]:
    def get(node: DataNode) -> bytes:
        return b"%d" % getattr(node, attr)

    def set_(node: DataNode, raw: bytes) -> None:
        setattr(node, attr, parse_memory(raw.decode("latin-1")))

    return get, set_


def _set_maxmemory(node: DataNode, raw: bytes) -> None:
    node.ks.set_policy(parse_memory(raw.decode("latin-1")), node.ks.policy)
    node.update_gates()


def _set_policy(node: DataNode, raw: bytes) -> None:
    policy = raw.decode("latin-1").lower()
    if policy not in POLICIES:
        raise ConfigError(f"argument must be one of {', '.join(POLICIES)}")
    node.ks.set_policy(node.ks.maxmemory, policy)


def _set_requirepass(node: DataNode, raw: bytes) -> None:
    node.requirepass = raw.decode("latin-1")


def _set_maxclients(node: DataNode, raw: bytes) -> None:
    n = int(raw)
    if n < 1:
        raise ConfigError("argument must be between 1 and 4294967295 inclusive")
    node.maxclients = n


def _set_snapshot_interval(node: DataNode, raw: bytes) -> None:
    value = float(raw)
    if value < 0:
        raise ConfigError("argument must be >= 0")
    node.snapshot_interval = value


def _set_save(node: DataNode, raw: bytes) -> None:
    # Redis's "save <seconds> <changes> …": we keep the shortest interval.
    parts = raw.split()
    if not parts:
        node.snapshot_interval = 0.0
        return
    if len(parts) % 2 or not all(p.isdigit() for p in parts):
        raise ConfigError("Invalid save parameters")
    node.snapshot_interval = float(min(int(p) for p in parts[::2]))


def _get_save(node: DataNode) -> bytes:
    return b"%d 1" % int(node.snapshot_interval) if node.snapshot_interval > 0 else b""


def _set_appendonly(node: DataNode, raw: bytes) -> None:
    if raw.lower() != b"no":
        raise ConfigError("appendonly is not supported (snapshots only)")


def _readonly(name: str) -> Callable[[DataNode, bytes], None]:
    def refuse(node: DataNode, raw: bytes) -> None:
        raise ConfigError(f"can't set immutable config '{name}'")

    return refuse


PARAMS: dict[str, tuple[Callable[[DataNode], bytes], Callable[[DataNode, bytes], None]]] = {
    "maxmemory": (lambda n: b"%d" % n.ks.maxmemory, _set_maxmemory),
    "maxmemory-policy": (lambda n: n.ks.policy.encode(), _set_policy),
    "requirepass": (lambda n: n.requirepass.encode(), _set_requirepass),
    "maxclients": (lambda n: b"%d" % n.maxclients, _set_maxclients),
    "proto-max-bulk-len": _memory_param("proto_max_bulk_len"),
    "client-output-buffer-limit": _memory_param("client_output_buffer_limit"),
    "snapshot-interval": (lambda n: b"%g" % n.snapshot_interval, _set_snapshot_interval),
    "save": (_get_save, _set_save),
    "appendonly": (lambda n: b"no", _set_appendonly),
    "databases": (lambda n: b"1", _readonly("databases")),
    "port": (lambda n: b"%d" % n.settings.port, _readonly("port")),
    "bind": (lambda n: n.settings.bind.encode(), _readonly("bind")),
    "dir": (lambda n: n.settings.dir.encode(), _readonly("dir")),
    "cluster-enabled": (lambda n: b"yes" if n.cluster_mode else b"no", _readonly("cluster-enabled")),
}


@subcommand("config", "get")
def config_get(c: Connection, argv: list[bytes]) -> bytes:
    found: dict[str, bytes] = {}
    for pattern in argv[2:]:
        match = compile_glob(pattern.lower())
        for name, (getter, _) in PARAMS.items():
            if name not in found and match(name.encode()):
                found[name] = getter(c.server)
    return resp.bulk_map([(k.encode(), v) for k, v in found.items()], c.resp3)


@subcommand("config", "set")
def config_set(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) % 2:
        raise CommandError(SYNTAX)
    pairs: list[tuple[str, bytes]] = []
    for i in range(2, len(argv), 2):
        name = argv[i].decode("latin-1").lower()
        if name not in PARAMS:
            raise CommandError(
                f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            )
        pairs.append((name, argv[i + 1]))
    node = c.server
    for name, value in pairs:
        try:
            PARAMS[name][1](node, value)
        except (ConfigError, ValueError) as exc:
            raise CommandError(
                f"ERR CONFIG SET failed (possibly related to argument '{name}') - {exc}"
            ) from None
    return resp.OK


@subcommand("config", "resetstat")
def config_resetstat(c: Connection, argv: list[bytes]) -> bytes:
    node = c.server
    node.stats.commands = 0
    node.stats.total_connections = 0
    node.stats.rejected_connections = 0
    ks = node.ks
    ks.hits = ks.misses = ks.expired_keys = ks.evicted_keys = 0
    return resp.OK


@subcommand("config", "rewrite")
def config_rewrite(c: Connection, argv: list[bytes]) -> bytes:
    raise CommandError("ERR The server is running without a config file")


@subcommand("config", "help")
def config_help(c: Connection, argv: list[bytes]) -> bytes:
    return resp.bulk_array(
        [b"CONFIG GET <pattern>", b"CONFIG SET <directive> <value>", b"CONFIG RESETSTAT"]
    )


