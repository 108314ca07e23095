"""CLUSTER commands, ASKING, READONLY, READWRITE: the topology as clients see it.

The topology itself is owned by the control plane (or a static ``--cluster-config``):
the commands that would change it in Redis Cluster are refused with a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterstate.slots import SLOT_COUNT, key_slot

from .. import resp
from ..errors import CommandError
from ..numbers import parse_int
from .table import CommandGroup

if TYPE_CHECKING:
    from ..cluster_view import ClusterView
    from ..connection import Connection

group = CommandGroup()
command = group.command
subcommand = group.subcommand

DISABLED = "ERR This instance has cluster support disabled"
OWNED_BY_COORDINATOR = (
    "ERR CLUSTER {} is not available: slotkeeper's coordinator owns the topology "
    "(use the slotkeeper admin API)"
)


def _view(c: Connection) -> ClusterView:
    server = c.server
    if not server.cluster_mode or server.view is None:
        raise CommandError(DISABLED)
    return server.view


group.container("cluster")


@subcommand("cluster", "slots")
def cluster_slots(c: Connection, argv: list[bytes]) -> bytes:
    return _view(c).slots_reply(c.resp3, c.admin)


@subcommand("cluster", "shards")
def cluster_shards(c: Connection, argv: list[bytes]) -> bytes:
    return _view(c).shards_reply(c.resp3, c.admin, c.server.replication_offsets())


@subcommand("cluster", "nodes")
def cluster_nodes(c: Connection, argv: list[bytes]) -> bytes:
    server = c.server
    return _view(c).nodes_reply(c.resp3, c.admin, server.migrating, server.importing)


@subcommand("cluster", "info")
def cluster_info(c: Connection, argv: list[bytes]) -> bytes:
    return _view(c).info_reply(c.resp3, c.admin)


@subcommand("cluster", "myid")
def cluster_myid(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    return resp.bulk(c.server.node_id.encode())


@subcommand(
    "cluster",
    "myshardid",
    meta={"arity": 2, "flags": ("loading", "stale"), "keys": (0, 0, 0), "acl": ("@slow",),
          "tips": ("nondeterministic_output",)},
)
def cluster_myshardid(c: Connection, argv: list[bytes]) -> bytes:
    view = _view(c)
    shard = view.my_shard.id if view.my_shard is not None else c.server.node_id
    return resp.bulk(shard.encode())


@subcommand("cluster", "keyslot")
def cluster_keyslot(c: Connection, argv: list[bytes]) -> bytes:
    return resp.integer(key_slot(argv[2]))


def _slot_arg(raw: bytes, message: str) -> int:
    slot = parse_int(raw)
    if slot < 0 or slot >= SLOT_COUNT:
        raise CommandError(message)
    return slot


@subcommand("cluster", "countkeysinslot")
def cluster_countkeysinslot(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    slot = _slot_arg(argv[2], "ERR Invalid slot")
    return resp.integer(c.ks.count_in_slot(slot))


@subcommand("cluster", "getkeysinslot")
def cluster_getkeysinslot(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    slot = parse_int(argv[2])
    count = parse_int(argv[3])
    if slot < 0 or slot >= SLOT_COUNT or count < 0:
        raise CommandError("ERR Invalid slot or number of keys")
    return resp.bulk_array(c.ks.keys_in_slot(slot, count))


def _replicas(c: Connection, argv: list[bytes]) -> bytes:
    view = _view(c)
    return view.replicas_reply(argv[2].decode("latin-1"), c.resp3, c.admin)


@subcommand("cluster", "replicas")
def cluster_replicas(c: Connection, argv: list[bytes]) -> bytes:
    return _replicas(c, argv)


@subcommand("cluster", "slaves")
def cluster_slaves(c: Connection, argv: list[bytes]) -> bytes:
    return _replicas(c, argv)


@subcommand("cluster", "links")
def cluster_links(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    return resp.EMPTY_ARRAY


@subcommand("cluster", "help")
def cluster_help(c: Connection, argv: list[bytes]) -> bytes:
    return resp.bulk_array(
        [b"CLUSTER <subcommand> [<arg> ...]. Subcommands are:", b"INFO", b"MYID", b"MYSHARDID",
         b"NODES", b"REPLICAS <node-id>", b"SHARDS", b"SLOTS", b"KEYSLOT <key>",
         b"COUNTKEYSINSLOT <slot>", b"GETKEYSINSLOT <slot> <count>", b"LINKS",
         b"Topology changes go through the slotkeeper coordinator, not CLUSTER commands."]
    )


def _refuse(name: str):  # type: ignore[no-untyped-def]
    def handler(c: Connection, argv: list[bytes]) -> bytes:
        _view(c)
        raise CommandError(OWNED_BY_COORDINATOR.format(name.upper()))

    return handler


for _name in ("setslot", "addslots", "addslotsrange", "delslots", "delslotsrange", "failover",
              "meet", "forget", "reset", "replicate", "flushslots", "bumpepoch", "saveconfig",
              "set-config-epoch", "count-failure-reports"):
    subcommand("cluster", _name)(_refuse(_name))


@command("asking")
def asking(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    c.asking = True
    return resp.OK


@command("readonly")
def readonly(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    c.readonly = True
    return resp.OK


@command("readwrite")
def readwrite(c: Connection, argv: list[bytes]) -> bytes:
    _view(c)
    c.readonly = False
    return resp.OK
