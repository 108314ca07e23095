"""SLOTKEEPER …: the admin-port commands the sidecar (and operators) use.

Accepted only on connections to the admin port. Subcommands:

- ``SLOTKEEPER TOPOLOGY SET <json>``: swap in a served view (validated whole;
  equal epoch and content is a no-op answering ``+NOOP``; a lower epoch or other
  content at the same epoch is refused and the current view stays).
- ``SLOTKEEPER TOPOLOGY GET``: the current view's JSON (null without one).
- ``SLOTKEEPER TOPOLOGY EPOCH``: the current view's epoch (-1 without one): what a
  source's sidecar polls on a target before it gives slots away.
- ``SLOTKEEPER NODEID``: this node's id.
- ``SLOTKEEPER SLOTSIZES``: ``[slot, keys, bytes, …]`` for every slot holding keys
  here; bytes are the keys times this node's mean memory per key (an estimate,
  for rebalancing plans: keys and bytes to move, weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import resp
from ..errors import CommandError
from .table import CommandGroup

if TYPE_CHECKING:
    from ..connection import Connection

group = CommandGroup()

ADMIN_ONLY = "ERR SLOTKEEPER commands are only accepted on the admin port"


def _meta(arity: int) -> dict[str, Any]:
    return {"arity": arity, "flags": ("admin", "noscript", "loading", "stale"),
            "keys": (0, 0, 0), "acl": ("@admin", "@slow", "@dangerous")}


group.container("slotkeeper", meta=_meta(-2))


def admin_only(c: Connection) -> None:
    if not c.admin:
        raise CommandError(ADMIN_ONLY)


@group.subcommand("slotkeeper", "topology", meta=_meta(-3))
def topology(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    from clusterstate.topology import Topology, TopologyError

    action = argv[2].upper()
    if action == b"GET" and len(argv) == 3:
        view = c.server.view
        if view is None or view.topology is None:
            return c.null
        return resp.bulk(view.topology.to_json())
    if action == b"SET" and len(argv) == 4:
        try:
            changed = c.server.set_topology(Topology.from_json(argv[3]))
        except TopologyError as exc:
            raise CommandError(f"ERR invalid topology: {exc}") from None
        return resp.OK if changed else b"+NOOP\r\n"
    if action == b"EPOCH" and len(argv) == 3:
        view = c.server.view
        topology = view.topology if view is not None else None
        return resp.integer(topology.epoch if topology is not None else -1)
    raise CommandError("ERR usage: SLOTKEEPER TOPOLOGY SET <json> | SLOTKEEPER TOPOLOGY GET | "
                       "SLOTKEEPER TOPOLOGY EPOCH")


@group.subcommand("slotkeeper", "slotsizes", meta=_meta(2))
def slotsizes(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    ks = c.server.ks
    sizes = [(slot, len(keys)) for slot, keys in enumerate(ks.slots) if keys]
    total = sum(n for _, n in sizes)
    mean = ks.mem / total if total else 0.0
    out: list[bytes] = []
    for slot, n in sizes:
        out += (resp.integer(slot), resp.integer(n), resp.integer(int(n * mean)))
    return resp.array(out)


@group.subcommand("slotkeeper", "nodeid", meta=_meta(2))
def nodeid(c: Connection, argv: list[bytes]) -> bytes:
    admin_only(c)
    return resp.bulk(c.server.node_id.encode())


@group.subcommand("slotkeeper", "write-permit", meta=_meta(-2))
def write_permit(c: Connection, argv: list[bytes]) -> bytes:
    """``WRITE-PERMIT UNTIL <monotonic-ms>`` | ``FOR <ms>`` | ``REVOKE`` | ``OFF`` | (status).

    The sidecar grants its primary writes until a deadline on the host's monotonic
    clock (CLOCK_MONOTONIC, shared by processes on one host); past it writes are
    refused. ``OFF`` returns to standalone use (no permit needed); ``REVOKE`` fences
    at once. Without arguments: the milliseconds left (-1 when off, 0 when fenced).
    """
    admin_only(c)
    import time

    from ..numbers import parse_int

    node = c.server
    if len(argv) == 2:
        deadline = node.permit_deadline
        if deadline is None:
            return resp.MINUS_ONE
        return resp.integer(max(0, int((deadline - time.monotonic()) * 1000)))
    action = argv[2].upper()
    if action == b"UNTIL" and len(argv) == 4:
        node.set_write_permit(parse_int(argv[3]) / 1000.0)
    elif action == b"FOR" and len(argv) == 4:
        node.set_write_permit(time.monotonic() + parse_int(argv[3]) / 1000.0)
    elif action == b"REVOKE" and len(argv) == 3:
        node.set_write_permit(0.0)
    elif action == b"OFF" and len(argv) == 3:
        node.set_write_permit(None)
    else:
        raise CommandError(
            "ERR usage: SLOTKEEPER WRITE-PERMIT [UNTIL <monotonic-ms> | FOR <ms> | REVOKE | OFF]"
        )
    return resp.OK
