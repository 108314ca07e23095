"""The cluster as etcd holds it, kept current by one watch on the cluster root.

:class:`Records` is one frozen value read at one store revision: the served view
(assembled from ``epoch``, ``shards/``, ``nodes/`` and ``migrations/`` at that
revision, DESIGN §1), the settings, every node's status, the slot leases and the
raw migration records (for compare-and-set progress writes).

:class:`RegistryWatcher` loads everything once, then follows one watch on the
cluster root: a coordinator transaction arrives as one batch, so a view is only
ever built at a revision boundary. After each batch ``on_records(records,
changed)`` gets the new value and the kinds of keys that changed. A compacted
watch reloads; an unreachable etcd is retried by the store's watch itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import orjson

from clusterstate.keys import KeyKind, Keys
from clusterstate.records import RecordError, Settings, Status, served_view
from clusterstate.topology import Topology
from dcs.errors import WatchCompacted
from dcs.port import KeyValue, Snapshot, Store, WatchBatch
from dcs.retry import RetryPolicy, retry

log = logging.getLogger(__name__)

_SERVED = frozenset({KeyKind.EPOCH, KeyKind.SHARD, KeyKind.NODE, KeyKind.MIGRATION})
_KEPT = _SERVED | {KeyKind.SETTINGS, KeyKind.STATUS, KeyKind.LEASE}


@dataclass(frozen=True, slots=True)
class SlotLease:
    """``leases/<shard>``: who holds it, on which etcd lease."""

    holder: str
    lease: int
    mod_revision: int


def lease_holder(raw: bytes) -> str:
    """The node id in a ``leases/<shard>`` value (plain, or a JSON string)."""
    text = raw.decode("utf-8", "replace").strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def handoff_target(raw: bytes) -> str:
    """The target of the ``handoff`` field of a ``shards/<id>`` value ("" for none)."""
    if b'"handoff"' not in raw:
        return ""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    handoff = doc.get("handoff") if isinstance(doc, dict) else None
    target = handoff.get("target") if isinstance(handoff, dict) else None
    return target if isinstance(target, str) else ""


@dataclass(frozen=True, slots=True)
class Records:
    revision: int = 0
    values: Mapping[str, KeyValue] = field(default_factory=lambda: MappingProxyType({}))
    view: Topology | None = None
    view_error: str = ""
    epoch_revision: int = 0  # mod_revision of the epoch key (0: absent)
    settings: Settings = field(default_factory=Settings)
    statuses: Mapping[str, Status] = field(default_factory=lambda: MappingProxyType({}))
    leases: Mapping[str, SlotLease] = field(default_factory=lambda: MappingProxyType({}))
    # shard -> target of a leadership transfer in progress (the coordinator's
    # ``handoff`` field of shards/<id>, not part of the served view)
    handoffs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def raw(self) -> dict[str, bytes]:
        return {k: kv.value for k, kv in self.values.items()}

    def migration(self, keys: Keys, migration_id: str) -> KeyValue | None:
        return self.values.get(keys.migration(migration_id))


class RecordsBuilder:
    """Folds snapshots and watch batches into :class:`Records` (pure apart from logging)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.current = Records()
        self._values: dict[str, KeyValue] = {}
        self._changed_statuses: set[str] = set()  # status keys of the batch being applied

    def load(self, snapshot: Snapshot) -> tuple[Records, set[KeyKind]]:
        self._values = {}
        for kv in snapshot:
            parsed = self.keys.parse(kv.key)
            if parsed is not None and parsed.kind in _KEPT:
                self._values[kv.key] = kv
        return self._rebuild(snapshot.revision, set(_KEPT), full=True)

    def apply(self, batch: WatchBatch) -> tuple[Records, set[KeyKind]]:
        changed: set[KeyKind] = set()
        self._changed_statuses = set()
        for ev in batch.events:
            parsed = self.keys.parse(ev.key)
            if parsed is None or parsed.kind not in _KEPT:
                continue
            changed.add(parsed.kind)
            if parsed.kind is KeyKind.STATUS:
                self._changed_statuses.add(ev.key)
            if ev.value is None:
                self._values.pop(ev.key, None)
            else:
                self._values[ev.key] = KeyValue(ev.key, ev.value, ev.mod_revision,
                                                ev.create_revision, lease=ev.lease)
        if not changed:
            self.current = replace(self.current, revision=batch.revision)
            return self.current, changed
        return self._rebuild(batch.revision, changed, full=False)

    def _rebuild(self, revision: int, changed: set[KeyKind], full: bool) -> tuple[Records, set[KeyKind]]:
        keys, cur = self.keys, self.current
        values = MappingProxyType(dict(self._values))
        view, view_error = cur.view, cur.view_error
        # The served view changes only with an epoch bump (the coordinator writes the
        # epoch in the same transaction): a batch that leaves the epoch alone (a
        # migration's progress, a leadership transfer's field) cannot change it.
        if full or KeyKind.EPOCH in changed or (changed & _SERVED and view is None):
            # In key order, as a fresh load reads them: the same records always give
            # the same view (the data node compares views at one epoch for equality).
            served = {k: kv.value for k, kv in sorted(self._values.items())
                      if (p := keys.parse(k)) is not None and p.kind in _SERVED}
            has_records = any(k.startswith((keys.shards, keys.nodes)) for k in served)
            try:
                built = served_view(keys, served, finished=False)
                view = built if (has_records or built.epoch) else None
                view_error = ""
            except RecordError as exc:
                view_error = str(exc)
                log.error("the records at revision %d do not form a valid view (%s): keeping "
                          "the last good one", revision, exc)
        handoffs = cur.handoffs
        if full or KeyKind.SHARD in changed:
            handoffs = MappingProxyType({
                p.id: target
                for key, kv in self._values.items()
                if (p := keys.parse(key)) is not None and p.kind is KeyKind.SHARD
                and (target := handoff_target(kv.value))
            })
        settings = cur.settings
        if full or KeyKind.SETTINGS in changed:
            raw = self._values.get(keys.settings)
            try:
                settings = Settings() if raw is None else Settings.from_json(raw.value)
            except (RecordError, ValueError) as exc:
                log.error("settings at revision %d unusable (%s): keeping the previous ones",
                          revision, exc)
        statuses = cur.statuses
        if full or KeyKind.STATUS in changed:
            # only the statuses this batch wrote are parsed again
            parsed_statuses: dict[str, Status] = {} if full else dict(cur.statuses)
            for key in (self._values if full else self._changed_statuses):
                p = keys.parse(key)
                if p is None or p.kind is not KeyKind.STATUS:
                    continue
                kv = self._values.get(key)
                parsed_statuses.pop(p.id, None)
                if kv is None:
                    continue
                try:
                    parsed_statuses[p.id] = Status.from_json(kv.value)
                except RecordError:
                    continue
            statuses = MappingProxyType(parsed_statuses)
        leases = cur.leases
        if full or KeyKind.LEASE in changed:
            leases = MappingProxyType({
                p.id: SlotLease(lease_holder(kv.value), kv.lease, kv.mod_revision)
                for key, kv in self._values.items()
                if (p := keys.parse(key)) is not None and p.kind is KeyKind.LEASE
            })
        epoch_kv = self._values.get(keys.epoch)
        self.current = Records(
            revision=revision,
            values=values,
            view=view,
            view_error=view_error,
            epoch_revision=epoch_kv.mod_revision if epoch_kv is not None else 0,
            settings=settings,
            statuses=statuses,
            leases=leases,
            handoffs=handoffs,
        )
        return self.current, changed


class RegistryWatcher:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        on_records: Callable[[Records, set[KeyKind]], Awaitable[None] | None],
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.on_records = on_records
        self.builder = RecordsBuilder(keys)
        self.policy = policy or RetryPolicy(attempts=1_000_000, timeout=3600.0)

    @property
    def records(self) -> Records:
        return self.builder.current

    def seed(self, snapshot: Snapshot) -> Records:
        """Start from a snapshot read at boot (no callback)."""
        records, _ = self.builder.load(snapshot)
        return records

    async def _notify(self, records: Records, changed: set[KeyKind]) -> None:
        result = self.on_records(records, changed)
        if result is not None:
            await result

    async def run(self) -> None:
        """Follow the cluster root forever (cancel to stop)."""
        start = self.builder.current.revision + 1 if self.builder.current.revision else 0
        while True:
            if not start:
                snapshot = await retry(lambda: self.store.load(self.keys.root),
                                       policy=self.policy, what="load the cluster records")
                records, changed = self.builder.load(snapshot)
                await self._notify(records, changed)
                start = snapshot.revision + 1
            try:
                async for batch in self.store.watch(self.keys.root, start):
                    records, changed = self.builder.apply(batch)
                    start = batch.revision + 1
                    if changed:
                        await self._notify(records, changed)
            except WatchCompacted as exc:
                log.warning("%s: reloading the cluster records", exc)
                start = 0
