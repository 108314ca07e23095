"""The cluster as one immutable, typed snapshot: what every loop cycle decides on.

:func:`build_view` turns one ``Store.load(keys.root)`` snapshot (every key of the
cluster at one etcd revision) and, optionally, Consul's health of the data
nodes into a :class:`ClusterView`: settings, epoch, the served topology
(validated), each node and shard record with the revision it was read at,
sidecar statuses (present = the sidecar is alive), slot lease holders,
migrations, allocated replica ids, pending intents, history epochs and the
coordinator leader. The planner reads only this; the reconciler compares
against the revisions it carries.

Coordinator-only fields ride along in the ``nodes/`` and ``shards/`` values
(DESIGN §1: fields may be added): ``hidden_by`` on a node (``"policy"`` when the
coordinator hid a loading replica, ``"operator"`` for ``hide``, ``"removed"``
for a node taken out of its shard), ``handoff`` on a shard (a leadership
transfer in progress: ``{"target": node_id, "intent": id}``), and the ``epoch``
that wrote each record, with ``since`` on a node (the epoch its current role
and replica_id were assigned at) and ``primary_since`` on a shard (the epoch
its primary was): a sidecar status describes the current assignment only once
its ``epoch_applied`` reaches those.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from clusterstate.keys import KeyKind, Keys
from clusterstate.records import (
    RecordError,
    Settings,
    Status,
    node_to_json,
    served_view,
    shard_to_json,
)
from clusterstate.topology import (
    Health,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    Topology,
)
from dcs.consul import DATANODE_SERVICE, ConsulCatalog
from dcs.errors import StoreError
from dcs.port import KeyValue, Snapshot, Store

from .intents import Intent, IntentError, parse_intent_key

log = logging.getLogger(__name__)

#: ``hidden_by`` values.
HIDDEN_BY_POLICY = "policy"
HIDDEN_BY_OPERATOR = "operator"
HIDDEN_BY_REMOVAL = "removed"


class ViewError(Exception):
    """The records in etcd do not form a consistent cluster: the coordinator does
    not act on them (an operator must look)."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """A leadership transfer in progress on a shard: its primary stops writes
    and the coordinator waits for ``target`` to catch up."""

    target: str
    intent: str

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target, "intent": self.intent}


@dataclass(frozen=True, slots=True)
class NodeEntry:
    record: NodeRecord
    epoch: int = 0  # the epoch that last wrote the record
    hidden_by: str = ""
    since: int = 0  # the epoch its current role / replica_id was assigned at


@dataclass(frozen=True, slots=True)
class ShardEntry:
    record: ShardRecord
    epoch: int = 0  # the epoch that last wrote the record
    handoff: Handoff | None = None
    primary_since: int = 0  # the epoch its current primary was assigned at


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The value of ``coordinator/leader``: who leads and where its API is."""

    id: str
    api: str = ""
    term: str = ""  # a nonce per campaign: the leader's fencing compare uses the whole value

    def to_json(self) -> bytes:
        return orjson.dumps({"id": self.id, "api": self.api, "term": self.term})

    @classmethod
    def from_json(cls, data: bytes) -> LeaderInfo | None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            return None
        return cls(str(doc["id"]), str(doc.get("api", "")), str(doc.get("term", "")))

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "api": self.api}


def node_value(record: NodeRecord, epoch: int, hidden_by: str = "", since: int = 0) -> bytes:
    """The ``nodes/<id>`` value the coordinator writes."""
    doc = orjson.loads(node_to_json(record, epoch))
    if hidden_by and record.hidden:
        doc["hidden_by"] = hidden_by
    if since and record.role is not Role.NONE:
        doc["since"] = since
    return orjson.dumps(doc)


def shard_value(
    record: ShardRecord, epoch: int, handoff: Handoff | None = None, primary_since: int = 0
) -> bytes:
    """The ``shards/<id>`` value the coordinator writes."""
    doc = orjson.loads(shard_to_json(record, epoch))
    if handoff is not None:
        doc["handoff"] = handoff.to_dict()
    if primary_since:
        doc["primary_since"] = primary_since
    return orjson.dumps(doc)


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(mapping)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Everything one cycle decides on, read at one etcd revision. Immutable."""

    keys: Keys
    snapshot: Snapshot
    settings: Settings
    topology: Topology
    nodes: Mapping[str, NodeEntry]
    shards: Mapping[str, ShardEntry]
    statuses: Mapping[str, Status]  # present = the node's sidecar holds its lease
    leases: Mapping[str, str]  # shard id -> node id holding leases/<shard>
    migrations: Mapping[str, Mapping[str, Any]]  # raw documents (with progress)
    replica_ids: frozenset[int]
    intents: Mapping[str, Intent]  # by id, oldest first
    history: tuple[int, ...]  # epochs with a history/<epoch> entry, ascending
    leader: LeaderInfo | None = None
    consul: Mapping[str, str] | None = None  # node id -> passing | warning | critical
    problems: tuple[str, ...] = field(default=())  # unreadable keys, ignored

    # ----------------------------------------------------------------- scalars

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    @property
    def epoch(self) -> int:
        return self.topology.epoch

    @property
    def settings_present(self) -> bool:
        return self.keys.settings in self.snapshot

    def kv(self, key: str) -> KeyValue | None:
        """The key as read, for compare-and-sets."""
        return self.snapshot.get(key)

    # ----------------------------------------------------------------- lookups

    def node(self, node_id: str) -> NodeRecord:
        return self.nodes[node_id].record

    def shard(self, shard_id: str) -> ShardRecord:
        return self.shards[shard_id].record

    def status(self, node_id: str) -> Status | None:
        return self.statuses.get(node_id)

    def alive(self, node_id: str) -> bool:
        return node_id in self.statuses

    def members(self, shard_id: str) -> tuple[str, ...]:
        s = self.shard(shard_id)
        return (s.primary, *s.replicas)

    def spares(self) -> list[NodeRecord]:
        """Nodes in no shard, in id order."""
        return [e.record for e in self.nodes.values() if e.record.role is Role.NONE]

    def primaries_on_host(self, addr: str) -> int:
        return sum(1 for s in self.shards.values() if self.node(s.record.primary).addr == addr)

    def counts(self) -> dict[str, Any]:
        """Nodes by state and by health, for metrics and ``/v1/cluster``."""
        states = {s.value: 0 for s in NodeState}
        healths = {h.value: 0 for h in Health}
        for e in self.nodes.values():
            states[e.record.state.value] += 1
            healths[e.record.health.value] += 1
        return {"states": states, "health": healths}


# --------------------------------------------------------------------------- building


def build_view(
    keys: Keys, snapshot: Snapshot, consul: Mapping[str, str] | None = None
) -> ClusterView:
    """The view of ``snapshot`` (every key under ``keys.root``). Raises
    :class:`ViewError` when the topology records are not consistent; other
    unreadable values (a status, an intent) are skipped and listed in
    ``problems``."""
    problems: list[str] = []
    values = {kv.key: kv.value for kv in snapshot}
    try:
        topology = served_view(keys, values)
    except RecordError as exc:
        raise ViewError(str(exc)) from exc
    raw = snapshot.value(keys.settings)
    try:
        settings = Settings() if raw is None else Settings.from_json(raw)
    except (RecordError, ValueError) as exc:
        raise ViewError(f"settings are unreadable: {exc}") from exc

    by_node = {n.id: n for n in topology.nodes}
    by_shard = {s.id: s for s in topology.shards}
    nodes: dict[str, NodeEntry] = {}
    shards: dict[str, ShardEntry] = {}
    statuses: dict[str, Status] = {}
    leases: dict[str, str] = {}
    migrations: dict[str, Mapping[str, Any]] = {}
    replica_ids: set[int] = set()
    intents: dict[str, Intent] = {}
    history: list[int] = []
    leader: LeaderInfo | None = None

    for kv in snapshot:
        intent_id = parse_intent_key(keys, kv.key)
        if intent_id is not None:
            try:
                intents[intent_id] = Intent.from_json(kv.value)
            except IntentError as exc:
                problems.append(f"{kv.key}: {exc}")
            continue
        parsed = keys.parse(kv.key)
        if parsed is None:
            continue
        kind, ident = parsed.kind, parsed.id
        if kind is KeyKind.NODE and ident in by_node:
            doc = orjson.loads(kv.value)
            epoch = _int(doc.get("epoch"))
            nodes[ident] = NodeEntry(
                by_node[ident],
                epoch,
                str(doc.get("hidden_by") or "") if by_node[ident].hidden else "",
                _int(doc.get("since")) or epoch,
            )
        elif kind is KeyKind.SHARD and ident in by_shard:
            doc = orjson.loads(kv.value)
            epoch = _int(doc.get("epoch"))
            shards[ident] = ShardEntry(
                by_shard[ident], epoch, _handoff(doc), _int(doc.get("primary_since")) or epoch
            )
        elif kind is KeyKind.STATUS:
            try:
                statuses[ident] = Status.from_json(kv.value)
            except RecordError as exc:
                problems.append(f"{kv.key}: {exc}")
        elif kind is KeyKind.LEASE:
            leases[ident] = _lease_holder(kv.value)
        elif kind is KeyKind.MIGRATION:
            try:
                migrations[ident] = _frozen(orjson.loads(kv.value))
            except orjson.JSONDecodeError as exc:
                problems.append(f"{kv.key}: {exc}")
        elif kind is KeyKind.REPLICA_ID:
            replica_ids.add(parsed.number)
        elif kind is KeyKind.HISTORY:
            history.append(parsed.number)
        elif kind is KeyKind.COORDINATOR_LEADER:
            leader = LeaderInfo.from_json(kv.value)

    for n in topology.nodes:  # in topology order, then sorted below
        nodes.setdefault(n.id, NodeEntry(n))
    for s in topology.shards:
        shards.setdefault(s.id, ShardEntry(s))
    for node in nodes.values():
        if node.record.replica_id:
            replica_ids.add(node.record.replica_id)  # never reuse even an unrecorded id
    return ClusterView(
        keys=keys,
        snapshot=snapshot,
        settings=settings,
        topology=topology,
        nodes=_frozen(dict(sorted(nodes.items()))),
        shards=_frozen(dict(sorted(shards.items()))),
        statuses=_frozen(dict(sorted(statuses.items()))),
        leases=_frozen(leases),
        migrations=_frozen(migrations),
        replica_ids=frozenset(replica_ids),
        intents=_frozen(dict(sorted(intents.items()))),
        history=tuple(sorted(history)),
        leader=leader,
        consul=None if consul is None else _frozen(dict(consul)),
        problems=tuple(problems),
    )


async def load_view(
    store: Store, keys: Keys, consul: Mapping[str, str] | None = None
) -> ClusterView:
    """One consistent read of the cluster, with Consul's health of the data
    nodes when given (see :func:`consul_health`)."""
    return build_view(keys, await store.load(keys.root), consul)


async def consul_health(catalog: ConsulCatalog) -> dict[str, str] | None:
    """Node id → worst check status of its ``slotkeeper-datanode`` instance;
    ``None`` when Consul does not answer (it is only an early signal)."""
    try:
        instances = await catalog.instances(DATANODE_SERVICE)
    except StoreError as exc:
        log.warning("consul health of %s unavailable: %s", DATANODE_SERVICE, exc)
        return None
    return {i.id: i.status.value for i in instances}


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def _handoff(doc: Mapping[str, Any]) -> Handoff | None:
    h = doc.get("handoff")
    if isinstance(h, dict) and isinstance(h.get("target"), str) and h["target"]:
        return Handoff(h["target"], str(h.get("intent", "")))
    return None


def _lease_holder(value: bytes) -> str:
    """``leases/<shard>`` holds the node id: plain text, a JSON string, or a JSON
    object with ``node_id``."""
    text = value.decode("utf-8", "replace").strip()
    if text[:1] in ('"', "{"):
        try:
            loaded = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(loaded, str):
            return loaded
        if isinstance(loaded, dict):
            for name in ("node_id", "node", "id"):
                if isinstance(loaded.get(name), str):
                    return str(loaded[name])
    return text


__all__ = [
    "HIDDEN_BY_OPERATOR",
    "HIDDEN_BY_POLICY",
    "HIDDEN_BY_REMOVAL",
    "ClusterView",
    "Handoff",
    "LeaderInfo",
    "NodeEntry",
    "ShardEntry",
    "ViewError",
    "build_view",
    "consul_health",
    "load_view",
    "node_value",
    "shard_value",
]
