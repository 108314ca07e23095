"""Replication commands: REPLICAOF/SLAVEOF, ROLE, WAIT, REPLCONF, PSYNC, SYNC, and the
sidecar's SLOTKEEPER subcommands (admin port only).

- ``SLOTKEEPER REPLICATE <host> <admin-port> <epoch> <replica_id>``: be (or stay) a
  replica of that primary. ``+OK``; ``+NOOP`` for a repeat of the applied
  instruction; ``-STALE …`` for an older epoch or another instruction at the same
  epoch. A replica_id other than the applied one forces a full sync.
- ``SLOTKEEPER PROMOTE <epoch> <replica_id>``: become the primary, keeping the
  replication history (the shard's other replicas resume from here). In cluster
  mode the node starts fenced: writes wait for ``SLOTKEEPER WRITE-PERMIT``.
- ``SLOTKEEPER REPLICATION``: the replication status as a map (RESP2: flat array).
- ``SLOTKEEPER MIN-REPLICAS-TO-ACK [<n> [<ack-timeout-ms>]]``: set (or read) how many
  replicas must acknowledge a write before it is answered.
- ``SLOTKEEPER DIGEST``: ``[<32 hex digest>, <keys>, <offset>]`` of the whole
  keyspace (order-independent, TTL deadlines included): equal on a primary and its
  replicas at the same offset.

The handlers parse and encode; :mod:`datanode.replication` does the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import resp
from ..errors import SYNTAX, CommandError
from ..numbers import parse_int
from ..replication import Role
from .admin import admin_only
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection
    from ..replication import Replication

group = CommandGroup()
command = group.command
subcommand = group.subcommand

REPLICAOF_CLUSTER = "ERR REPLICAOF not allowed in cluster mode."
WAIT_ON_REPLICA = (
    "ERR WAIT cannot be used with replica instances. Please also note that writes to "
    "replicas are just local and are not propagated."
)
CHAINED = "ERR this node is a replica: chained replication is not supported"
NOOP = b"+NOOP\r\n"


def _repl(c: Connection) -> Replication:
    return c.server.replication


def _admin_meta(arity: int) -> dict[str, Any]:
    return {"arity": arity, "flags": ("admin", "noscript", "loading", "stale"),
            "keys": (0, 0, 0), "acl": ("@admin", "@slow", "@dangerous")}


# --------------------------------------------------------------------------- REPLICAOF


def _replicaof(c: Connection, argv: list[bytes]) -> bytes:
    repl = _repl(c)
    if c.server.cluster_mode:
        raise CommandError(REPLICAOF_CLUSTER)
    if argv[1].upper() == b"NO" and argv[2].upper() == b"ONE":
        repl.become_primary(fence=False)
        return resp.OK
    host = argv[1].decode("utf-8", "replace")
    port = parse_int(argv[2], "ERR Invalid master port")
    if not 0 < port < 65536:
        raise CommandError("ERR Invalid master port")
    if repl.role is Role.REPLICA and repl.primary_addr == (host, port):
        return b"+OK Already connected to specified master\r\n"
    repl.become_replica(host, port, via_client_port=True)
    return resp.OK


@command("replicaof")
def replicaof(c: Connection, argv: list[bytes]) -> bytes:
    return _replicaof(c, argv)


@command("slaveof")
def slaveof(c: Connection, argv: list[bytes]) -> bytes:
    return _replicaof(c, argv)


# --------------------------------------------------------------------------- ROLE


@command("role")
def role(c: Connection, argv: list[bytes]) -> bytes:
    repl = _repl(c)
    link = repl.link
    if repl.role is Role.REPLICA and link is not None:
        return resp.array([
            resp.bulk(b"slave"),
            resp.bulk(link.host.encode()),
            resp.integer(link.port),
            resp.bulk(str(link.state).encode()),
            resp.integer(repl.offset),
        ])
    replicas = [
        resp.bulk_array([f.addr.encode(), b"%d" % f.listening_port, b"%d" % max(f.ack, 0)])
        for f in repl.primary.followers.values()
        if f.state != "handshake"
    ]
    return resp.array([resp.bulk(b"master"), resp.integer(repl.offset), resp.array(replicas)])


# --------------------------------------------------------------------------- WAIT


@command("wait")
def wait(c: Connection, argv: list[bytes]) -> bytes:
    count = parse_int(argv[1])
    timeout = parse_int(argv[2], "ERR timeout is not an integer or out of range")
    if timeout < 0:
        raise CommandError("ERR timeout is negative")
    repl = _repl(c)
    if repl.role is Role.REPLICA:
        raise CommandError(WAIT_ON_REPLICA)
    if repl.backlog is None:
        return resp.ZERO  # no replica ever attached
    return repl.primary.wait(c, count, timeout)


# --------------------------------------------------------------------------- replica handshake


@command("replconf")
def replconf(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) % 2 == 0:
        raise CommandError(SYNTAX)
    repl = _repl(c)
    primary = repl.primary
    for i in range(1, len(argv), 2):
        opt, val = argv[i].lower(), argv[i + 1]
        if opt == b"ack":
            primary.on_ack(c, parse_int(val))
            return b""  # acknowledgements get no reply
        if opt == b"getack":
            continue  # only meaningful on the stream a replica receives
        f = primary.follower(c)
        if opt == b"listening-port":
            port = parse_int(val)
            if not 0 < port < 65536:
                raise CommandError("ERR invalid listening-port")
            f.listening_port = port
        elif opt == b"node-id":
            f.node_id = val.decode("latin-1")
        elif opt == b"ip-address":
            f.ip = val.decode("latin-1")
        elif opt in (b"capa", b"rdb-only", b"rdb-filter-only"):
            pass
        else:
            raise CommandError(f"ERR Unrecognized REPLCONF option: {opt.decode('latin-1')}")
    return resp.OK


def _sync(c: Connection, replid: str, offset: int, legacy: bool) -> bytes:
    repl = _repl(c)
    if repl.role is Role.REPLICA:
        raise CommandError(CHAINED)
    if c.multi is not None:
        raise CommandError("ERR Command not allowed inside a transaction")
    repl.ensure_backlog()
    return repl.primary.psync(c, replid, offset, legacy)


@command("psync")
def psync(c: Connection, argv: list[bytes]) -> bytes:
    if len(argv) != 3:
        raise CommandError(SYNTAX)
    offset = parse_int(argv[2])
    return _sync(c, argv[1].decode("latin-1"), offset, legacy=False)


@command("sync")
def sync(c: Connection, argv: list[bytes]) -> bytes:
    return _sync(c, "?", -1, legacy=True)


# --------------------------------------------------------------------------- SLOTKEEPER (sidecar)


_UINT64_MAX = 2**64 - 1


def _uint64(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > 20 or int(raw) > _UINT64_MAX:
        raise CommandError(f"ERR {what} must be an unsigned 64-bit integer")
    return int(raw)


def _epoch_and_id(raw_epoch: bytes, raw_id: bytes) -> tuple[int, int]:
    return _uint64(raw_epoch, "epoch"), _uint64(raw_id, "replica_id")


@subcommand("slotkeeper", "replicate", meta=_admin_meta(6))
def sk_replicate(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    host = argv[2].decode("utf-8", "replace")
    port = parse_int(argv[3], "ERR invalid primary port")
    if not 0 < port < 65536:
        raise CommandError("ERR invalid primary port")
    epoch, replica_id = _epoch_and_id(argv[4], argv[5])
    changed = _repl(c).instruct_replicate(host, port, epoch, replica_id)
    return resp.OK if changed else NOOP


@subcommand("slotkeeper", "promote", meta=_admin_meta(4))
def sk_promote(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    epoch, replica_id = _epoch_and_id(argv[2], argv[3])
    changed = _repl(c).instruct_promote(epoch, replica_id, fence=c.server.cluster_mode)
    return resp.OK if changed else NOOP


@subcommand("slotkeeper", "replication", meta=_admin_meta(2))
def sk_replication(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    return encode_value(_repl(c).status(), c.resp3)


@subcommand("slotkeeper", "min-replicas-to-ack", meta=_admin_meta(-2))
def sk_min_replicas(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    repl = _repl(c)
    primary = repl.primary
    if len(argv) == 2:
        return resp.array([resp.integer(primary.min_acks),
                           resp.integer(int(primary.ack_timeout * 1000))])
    if len(argv) > 4:
        raise CommandError("ERR usage: SLOTKEEPER MIN-REPLICAS-TO-ACK [<n> [<ack-timeout-ms>]]")
    n = parse_int(argv[2])
    timeout = None
    if len(argv) == 4:
        ms = parse_int(argv[3])
        if ms <= 0:
            raise CommandError("ERR ack-timeout-ms must be positive")
        timeout = ms / 1000.0
    if n < 0:
        raise CommandError("ERR min-replicas-to-ack must be >= 0")
    primary.set_min_acks(n, timeout)
    if n and repl.role is Role.PRIMARY:
        repl.ensure_backlog()
    c.server.update_gates()
    return resp.OK


@subcommand("slotkeeper", "digest", meta=_admin_meta(2))
def sk_digest(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    repl = _repl(c)
    digest, keys = repl.digest()
    return resp.array([resp.bulk(digest.encode()), resp.integer(keys), resp.integer(repl.offset)])


# --------------------------------------------------------------------------- encoding


def encode_value(value: Any, resp3: bool) -> bytes:
    """A plain Python value (dict, list, str, int, float) as RESP."""
    if isinstance(value, dict):
        return resp.map_of(
            [(resp.bulk(str(k).encode()), encode_value(v, resp3)) for k, v in value.items()],
            resp3,
        )
    if isinstance(value, (list, tuple)):
        return resp.array([encode_value(v, resp3) for v in value])
    if isinstance(value, bool):
        return resp.integer(int(value))
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return resp.integer(value)  # (a uint64 replica_id goes as a bulk string)
    if value is None:
        return resp.null(resp3)
    return resp.bulk(str(value).encode())
