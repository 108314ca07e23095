"""``leases/<shard>``: the slot lease of a shard's one writable primary (DESIGN §3).

The decision is pure (:func:`decide`); :func:`acquire` and :func:`release` are the
two etcd transactions:

- acquire: create ``leases/<shard>`` = node_id bound to our lease, only if it is
  absent **and** ``epoch`` is still the one whose view made us primary. A
  failover the coordinator committed in between (it bumps the epoch) makes the
  create fail, so a stale primary can never take the lease back. A claim of our
  own left by an earlier lease (a restarted sidecar) is replaced in one
  transaction.
- release: delete it only if it still names us.
"""

from __future__ import annotations

import enum
import logging

from clusterstate.keys import Keys
from dcs.port import Compare, Delete, KeyValue, Put, Store

from .watcher import SlotLease

log = logging.getLogger(__name__)


class Claim(enum.StrEnum):
    NONE = "none"  # not wanted and not held: nothing to do
    ACQUIRE = "acquire"  # wanted and free
    REPLACE = "replace"  # wanted, held by us on an older lease
    HOLD = "hold"  # wanted and held on our lease
    WAIT = "wait"  # wanted, another node holds it
    RELEASE = "release"  # held by us but not wanted


def decide(wanted: bool, record: SlotLease | None, node_id: str, lease_id: int) -> Claim:
    if record is None:
        return Claim.ACQUIRE if wanted else Claim.NONE
    ours = record.holder == node_id
    if not wanted:
        return Claim.RELEASE if ours else Claim.NONE
    if not ours:
        return Claim.WAIT
    return Claim.HOLD if record.lease == lease_id else Claim.REPLACE


async def acquire(
    store: Store,
    keys: Keys,
    shard: str,
    node_id: str,
    lease_id: int,
    epoch_revision: int,
    replace_value: bytes | None = None,
) -> KeyValue | None:
    """Take ``leases/<shard>``; the stored record on success, None if the compare
    failed (taken by someone else, or the epoch moved on)."""
    key = keys.lease(shard)
    guard = (
        Compare.absent(key) if replace_value is None else Compare.value(key, replace_value)
    )
    epoch_guard = (
        Compare.mod_revision(keys.epoch, epoch_revision)
        if epoch_revision
        else Compare.absent(keys.epoch)
    )
    ok = await store.cas([guard, epoch_guard], [Put(key, node_id.encode(), lease_id)])
    if not ok:
        return None
    return await store.get(key)


async def release(store: Store, keys: Keys, shard: str, node_id: str) -> bool:
    """Delete ``leases/<shard>`` if it still names us."""
    key = keys.lease(shard)
    return await store.cas([Compare.value(key, node_id.encode())], [Delete(key)])
