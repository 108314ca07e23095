"""The JSON values stored in etcd besides the topology records: cluster settings and
node status, plus the served view assembled from the keys (pure, no I/O).

``nodes/<id>`` and ``shards/<id>`` hold the same objects as the served view's
``nodes`` and ``shards`` entries (plus the ``epoch`` that wrote them);
:func:`served_view` turns the values read at one revision into a :class:`Topology`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import orjson

from .keys import KeyKind, Keys
from .topology import NodeRecord, ShardRecord, Topology, TopologyError


class RecordError(ValueError):
    """A stored value is not a valid record."""


def _loads(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RecordError(f"{what} must be a JSON object")
    return doc


def _from_doc(cls: Any, doc: Mapping[str, Any], what: str) -> Any:
    """Build a dataclass from a dict: unknown fields ignored, types of defaults checked."""
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in doc.items():
        f = known.get(name)
        if f is None:
            continue
        default = f.default if f.default is not f.default_factory else None  # type: ignore[misc]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise RecordError(f"{what}.{name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"{what}.{name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise RecordError(f"{what}.{name} must be an integer, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise RecordError(f"{what}.{name} must be a string, got {value!r}")
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what}: {exc}") from exc


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Settings:
    """Cluster-wide tunables (``settings``), edited with CAS through the coordinator."""

    replicas: int = 1  # replicas per shard
    lease_ttl: float = 2.0  # seconds
    keepalive_interval: float = 0.0  # 0: lease_ttl / 3
    retry_timeout: float = 0.0  # 0: lease_ttl / 4
    min_replicas_to_ack: int = 0
    ack_timeout_ms: int = 1000
    hide_while_loading: bool = True
    max_lag_bytes: int = 1024 * 1024
    migration_concurrency: int = 2
    migration_batch: int = 64  # slots per migration record (each one commits on its own)
    pause: bool = False
    bootstrap_primaries: int = 3  # expected members at cold start: primaries …
    bootstrap_replicas: int = 1  # … and replicas per shard
    bootstrap_members: tuple[str, ...] = field(default=())  # or a static list of node ids

    def __post_init__(self) -> None:
        if self.lease_ttl <= 0:
            raise ValueError("lease_ttl must be > 0")
        if self.keepalive_interval <= 0:
            object.__setattr__(self, "keepalive_interval", self.lease_ttl / 3)
        if self.retry_timeout <= 0:
            object.__setattr__(self, "retry_timeout", self.lease_ttl / 4)
        if self.keepalive_interval + 2 * self.retry_timeout > self.lease_ttl + 1e-9:
            raise ValueError(
                f"timing rule broken: keepalive_interval ({self.keepalive_interval:g}) + "
                f"2 x retry_timeout ({self.retry_timeout:g}) > lease_ttl ({self.lease_ttl:g})"
            )
        for name in ("replicas", "min_replicas_to_ack", "ack_timeout_ms", "max_lag_bytes",
                     "bootstrap_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.migration_concurrency < 1 or self.bootstrap_primaries < 1:
            raise ValueError("migration_concurrency and bootstrap_primaries must be >= 1")
        if not 1 <= self.migration_batch <= 16384:
            raise ValueError("migration_batch must be within 1..16384")
        object.__setattr__(self, "bootstrap_members", tuple(self.bootstrap_members))

    @property
    def permit_fraction(self) -> float:
        """A primary's write permit lasts this share of the lease TTL (DESIGN §3)."""
        return 0.8

    @classmethod
    def from_json(cls, data: bytes | str) -> Settings:
        return _from_doc(cls, _loads(data, "settings"), "settings")  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["bootstrap_members"] = list(self.bootstrap_members)
        return orjson.dumps(doc)

    def merged(self, patch: Mapping[str, Any]) -> Settings:
        """A copy with ``patch`` applied (for ``PATCH /v1/settings``); validated."""
        unknown = set(patch) - {f.name for f in fields(self)}
        if unknown:
            raise RecordError(f"unknown settings: {', '.join(sorted(unknown))}")
        doc = asdict(self)
        doc.update(patch)
        return _from_doc(Settings, doc, "settings")  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class Status:
    """What a sidecar observes of its node (``status/<node_id>``, bound to its lease).

    Also how a node makes itself known: address, ports and zone travel here, and the
    coordinator creates ``nodes/<id>`` (ONLINE) for a status it has no record for."""

    addr: str = ""
    port: int = 0
    admin_port: int = 0
    http_port: int = 0
    zone: str = ""
    health: str = "online"  # observed: online | loading | fail
    role_applied: str = "none"  # primary | replica | none
    epoch_applied: int = 0
    repl_offset: int = 0
    replid: str = ""
    load_progress: float = 1.0  # 0..1 while a replica syncs
    writable: bool = False  # holds leases/<shard> and a live write permit
    conflict: str = ""  # role-at-boot rule 2: local epoch ahead of the registry
    last_error: str = ""

    @classmethod
    def from_json(cls, data: bytes | str) -> Status:
        return _from_doc(cls, _loads(data, "status"), "status")  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    def with_(self, **changes: Any) -> Status:
        return replace(self, **changes)


# --------------------------------------------------------------------------- node and shard records


def node_to_json(node: NodeRecord, epoch: int) -> bytes:
    return orjson.dumps({**_node_dict(node), "epoch": epoch})


def shard_to_json(shard: ShardRecord, epoch: int) -> bytes:
    return orjson.dumps(
        {
            "id": shard.id,
            "slots": [list(r) for r in shard.slots],
            "primary": shard.primary,
            "replicas": list(shard.replicas),
            "sync_replicas": list(shard.sync_replicas),
            "epoch": epoch,
        }
    )


def _node_dict(node: NodeRecord) -> dict[str, Any]:
    return {
        "id": node.id, "addr": node.addr, "port": node.port, "admin_port": node.admin_port,
        "zone": node.zone, "shard": node.shard, "role": node.role.value,
        "state": node.state.value, "health": node.health.value, "hidden": node.hidden,
        "nofailover": node.nofailover, "priority": node.priority, "replica_id": node.replica_id,
    }


#: Migration states after which a record is history: kept in etcd (and the API)
#: until forgotten, but of no use to a data node.
FINISHED = frozenset({"DONE", "FAILED", "CANCELLED"})


def served_view(keys: Keys, values: Mapping[str, bytes], *, finished: bool = True) -> Topology:
    """The served view from the values of ``epoch``, ``shards/``, ``nodes/`` and
    ``migrations/`` read at one revision (key → raw value). With ``finished=False``
    (the sidecars: the view they push to their data node) finished migrations are
    left out: a large rebalance leaves a hundred of them in etcd for 15 minutes, and
    parsing them made up most of the cost of every new view on every node."""
    epoch_raw = values.get(keys.epoch)
    try:
        epoch = int(epoch_raw) if epoch_raw is not None else 0
    except ValueError as exc:
        raise RecordError(f"{keys.epoch} is not an integer: {epoch_raw!r}") from exc
    doc: dict[str, Any] = {"epoch": epoch, "shards": [], "nodes": [], "migrations": []}
    for key, raw in values.items():
        parsed = keys.parse(key)
        if parsed is None:
            continue
        target = {KeyKind.SHARD: "shards", KeyKind.NODE: "nodes",
                  KeyKind.MIGRATION: "migrations"}.get(parsed.kind)
        if target is not None:
            record = _loads(raw, key)
            if not finished and target == "migrations" and isinstance(record, dict) \
                    and record.get("state") in FINISHED:
                continue
            doc[target].append(record)
    try:
        return Topology.from_dict(doc)
    except TopologyError as exc:
        raise RecordError(f"the records in etcd do not form a valid view: {exc}") from exc
