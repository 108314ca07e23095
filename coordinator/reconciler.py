"""Applies a plan's actions to etcd, one transaction per action (DESIGN §1).

Every transaction compares:

- ``epoch`` with the value read (the view's for the first action of a cycle,
  the one this reconciler wrote for the next), so no two writers interleave;
- every node, shard and intent it replaces or deletes with the revision in the
  view (absent when new), ``settings`` likewise when it writes them;
- ``replica-ids/<id>`` absent for every id it allocates;
- ``leases/<shard>`` absent for a failover, or as read for a transfer;
- ``coordinator/leader`` equal to this coordinator's campaign value (the
  fence: a coordinator whose leadership lapsed writes nothing).

A topology change puts its records with ``epoch + 1``, the new ``epoch``, and
``history/<epoch>`` (what changed and why), and deletes history entries more
than ``history_limit`` epochs old. A lost compare-and-set stops the cycle: the
loop reloads and plans again.

Transaction builders are looked up by action type along the class hierarchy
(:data:`BUILDERS`), so the migration actions of the next issue can bring their
own (migration records are not topology records).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from clusterstate.keys import Keys
from dcs.port import Compare, Delete, Op, Put, Store

from .actions import Action, MigrationAction
from .intents import intent_key
from .migrations import migration_txn
from .view import ClusterView, node_value, shard_value

log = logging.getLogger(__name__)

Fence = Callable[[], Compare | None]


@dataclass(slots=True)
class Chain:
    """What the actions applied so far in this cycle changed, as later ones
    must see it."""

    epoch: int
    epoch_value: bytes | None  # the epoch key's value now (None: absent)
    history: list[int]


@dataclass(frozen=True, slots=True)
class Txn:
    compares: tuple[Compare, ...]
    ops: tuple[Op, ...]
    epoch: int  # the epoch after this transaction


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`Reconciler.apply` did: the actions applied (in order), the
    epoch after them, and the action whose compare-and-set was lost, if any."""

    applied: tuple[Action, ...] = ()
    epoch: int = 0
    lost: Action | None = None
    epochs: tuple[int, ...] = field(default=())  # the epoch each applied action left

    @property
    def complete(self) -> bool:
        return self.lost is None


Builder = Callable[["Reconciler", ClusterView, Chain, Action], Txn]


class Reconciler:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        *,
        fence: Fence | None = None,
        history_limit: int = 1000,
        leader_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1")
        self.store = store
        self.keys = keys
        self.fence = fence or (lambda: None)
        self.history_limit = history_limit
        self.leader_id = leader_id
        self.clock = clock

    async def apply(self, view: ClusterView, actions: Sequence[Action]) -> Outcome:
        """Apply ``actions`` in order; stop at the first lost compare-and-set.
        Store errors propagate (nothing after the failed action is tried)."""
        kv = view.kv(self.keys.epoch)
        chain = Chain(view.epoch, None if kv is None else kv.value, list(view.history))
        applied: list[Action] = []
        epochs: list[int] = []
        for action in actions:
            txn = builder_for(action)(self, view, chain, action)
            if not await self.store.cas(txn.compares, txn.ops):
                log.info(
                    "lost compare-and-set on %s (%s): reloading and planning again",
                    action.kind,
                    action.why,
                )
                return Outcome(tuple(applied), chain.epoch, action, tuple(epochs))
            if txn.epoch != chain.epoch:
                chain.epoch = txn.epoch
                chain.epoch_value = str(txn.epoch).encode()
                chain.history.append(txn.epoch)
            applied.append(action)
            epochs.append(chain.epoch)
        return Outcome(tuple(applied), chain.epoch, None, tuple(epochs))

    # ----------------------------------------------------------------- the generic builder

    def records_txn(self, view: ClusterView, chain: Chain, action: Action) -> Txn:
        w = action.writes
        k = self.keys
        compares: list[Compare] = [self._epoch_compare(chain)]
        fence = self.fence()
        if fence is not None:
            compares.append(fence)
        ops: list[Op] = []
        topology = w.topology
        epoch = (w.epoch if w.epoch is not None else chain.epoch + 1) if topology else chain.epoch
        if topology and epoch <= chain.epoch:
            raise ValueError(f"{action.kind}: the epoch must grow (from {chain.epoch} to {epoch})")

        for nw in w.nodes:
            key = k.node(nw.record.id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            since = epoch if nw.since is None else nw.since
            ops.append(Put(key, node_value(nw.record, epoch, nw.hidden_by, since)))
        for node_id in w.forget_nodes:
            key = k.node(node_id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            ops.append(Delete(key))
        for sw in w.shards:
            key = k.shard(sw.record.id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            since = epoch if sw.primary_since is None else sw.primary_since
            ops.append(Put(key, shard_value(sw.record, epoch, sw.handoff, since)))
        for shard_id in w.forget_shards:
            key = k.shard(shard_id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            ops.append(Delete(key))
        for migration_id in w.forget_migrations:
            key = k.migration(migration_id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            ops.append(Delete(key))
        for rid in w.replica_ids:
            key = k.replica_id(rid)
            compares.append(Compare.absent(key))
            ops.append(Put(key, orjson.dumps({"epoch": epoch, "at": self.clock()})))
        for shard_id in w.lease_absent:
            compares.append(Compare.absent(k.lease(shard_id)))
        for shard_id in w.lease_as_read:
            key = k.lease(shard_id)
            compares.append(Compare.unchanged(key, view.kv(key)))
        for intent in w.intents:
            key = intent_key(k, intent.id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            written = replace(intent, epoch=epoch) if topology else intent
            ops.append(Put(key, written.to_json()))
        for intent_id in w.forget_intents:
            key = intent_key(k, intent_id)
            compares.append(Compare.unchanged(key, view.kv(key)))
            ops.append(Delete(key))
        if w.settings is not None:
            compares.append(Compare.unchanged(k.settings, view.kv(k.settings)))
            ops.append(Put(k.settings, w.settings.to_json()))
        if topology:
            ops.append(Put(k.epoch, str(epoch).encode()))
            ops.append(Put(k.history(epoch), self._history_entry(view, chain, action, epoch)))
            horizon = epoch - self.history_limit
            ops.extend(Delete(k.history(e)) for e in chain.history if e <= horizon)
            chain.history[:] = [e for e in chain.history if e > horizon]
        return Txn(tuple(compares), tuple(ops), epoch)

    def _epoch_compare(self, chain: Chain) -> Compare:
        if chain.epoch_value is None:
            return Compare.absent(self.keys.epoch)
        return Compare.value(self.keys.epoch, chain.epoch_value)

    def _history_entry(self, view: ClusterView, chain: Chain, action: Action, epoch: int) -> bytes:
        entry: dict[str, Any] = {
            "epoch": epoch,
            "previous": chain.epoch,
            "time": self.clock(),
            "kind": action.kind,
            "why": action.why,
            "automatic": action.automatic,
            "leader": self.leader_id,
            **action.subjects(),
        }
        return orjson.dumps(entry)


def _records(rec: Reconciler, view: ClusterView, chain: Chain, action: Action) -> Txn:
    return rec.records_txn(view, chain, action)


#: Transaction builder per action type; the most specific class wins.
BUILDERS: dict[type[Action], Builder] = {Action: _records, MigrationAction: migration_txn}


def builder_for(action: Action) -> Builder:
    for cls in type(action).__mro__:
        builder = BUILDERS.get(cls)  # type: ignore[arg-type]
        if builder is not None:
            return builder
    raise TypeError(f"no transaction builder for {type(action).__name__}")


__all__ = ["BUILDERS", "Chain", "Outcome", "Reconciler", "Txn", "builder_for"]
