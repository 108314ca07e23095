"""Cluster routing: which node must run a keyed command, decided before its handler.

Mirrors Redis's ``getNodeByQuery`` (PROTOCOL.md §3.2) on an immutable
:class:`ClusterView` plus the node's open slots. Returns the refusal reply
(MOVED, ASK, TRYAGAIN, CROSSSLOT, CLUSTERDOWN) or None to run the command here.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clusterstate.slots import key_slot

if TYPE_CHECKING:
    from .cluster_view import ClusterView
    from .commands.table import CommandSpec

CROSSSLOT = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
CLUSTERDOWN = b"-CLUSTERDOWN The cluster is down\r\n"
UNSERVED = b"-CLUSTERDOWN Hash slot not served\r\n"
TRYAGAIN_MIGRATING = b"-TRYAGAIN Slot is being migrated, writes resume on its new owner\r\n"
TRYAGAIN_MULTIKEY = b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"


def slot_of(keys: Sequence[bytes]) -> int:
    """The one slot of ``keys``; -1 if they span several."""
    k = keys[0]
    slot = crc_hqx(k, 0) & 16383 if 123 not in k else key_slot(k)
    for k in keys[1:]:
        if (crc_hqx(k, 0) & 16383 if 123 not in k else key_slot(k)) != slot:
            return -1
    return slot


def route(
    view: ClusterView | None,
    spec: CommandSpec,
    argv: list[bytes],
    asking: bool,
    readonly: bool,
    migrating: Mapping[int, str],
    importing: Mapping[int, str],
    exists: Any,
    handed: Mapping[int, bytes] = {},  # noqa: B006 - read only
    adopted: Container[int] = frozenset(),
) -> bytes | None:
    keys = spec.keys(argv)
    if not keys:
        return None
    slot = slot_of(keys)
    if slot < 0:
        return CROSSSLOT
    if view is None or view.topology is None:
        return CLUSTERDOWN
    owner = view.owner[slot]
    if owner is None:
        return UNSERVED
    if not view.ok:
        return CLUSTERDOWN
    mine = view.my_shard is not None and owner.id == view.my_shard.id
    if mine and view.is_primary:
        target = migrating.get(slot)
        if target is None:
            return None
        moved = handed.get(slot)
        if moved is not None:
            return moved  # copied and handed off: the target serves it already
        # Being copied to another shard: reads are served while all keys are here,
        # writes wait for the new owner (the copy must not change under the transfer).
        if spec.write:
            return TRYAGAIN_MIGRATING
        present = sum(1 for k in keys if exists(k))
        if present == len(keys):
            return None
        if present == 0:
            addr = view.addr_of(target)
            return b"-ASK %d %s\r\n" % (slot, addr) if addr else TRYAGAIN_MULTIKEY
        return TRYAGAIN_MULTIKEY
    if slot in adopted and view.is_primary:
        return None  # handed off to this node: its own until the topology says so
    if slot in importing and (asking or "asking" in spec.flags):
        if len(keys) > 1 and not all(exists(k) for k in keys):
            return TRYAGAIN_MULTIKEY
        return None
    if mine and readonly and not spec.write:
        return None
    return b"-MOVED %d %s\r\n" % (slot, view.moved[slot])
