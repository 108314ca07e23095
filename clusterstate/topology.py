"""The served view: one immutable, validated snapshot of the cluster's topology.

This is the contract the coordinator writes, the sidecar assembles and pushes, and
the data node routes by (DESIGN.md §1). A :class:`Topology` is only ever built
through one validating path (``Topology(...)``, :meth:`Topology.build`,
:meth:`Topology.from_json`, :meth:`Topology.from_dict` all run :func:`validate`),
so holding one means holding a consistent view. Every problem is reported as one
:class:`TopologyError` naming what is wrong. Pure: no I/O.

A static three-shard cluster, as ``--cluster-config`` reads it::

    >>> s1, s2, s3 = "a1" * 20, "a2" * 20, "a3" * 20
    >>> n1, n2, n3 = "b1" * 20, "b2" * 20, "b3" * 20
    >>> def node(nid, port, shard):
    ...     return {"id": nid, "addr": "127.0.0.1", "port": port, "admin_port": port + 10000,
    ...             "shard": shard, "role": "primary", "state": "ACTIVE", "health": "online"}
    >>> doc = {"epoch": 1,
    ...        "shards": [{"id": s1, "slots": [[0, 5460]], "primary": n1},
    ...                   {"id": s2, "slots": [[5461, 10922]], "primary": n2},
    ...                   {"id": s3, "slots": [[10923, 16383]], "primary": n3}],
    ...        "nodes": [node(n1, 7000, s1), node(n2, 7001, s2), node(n3, 7002, s3)]}
    >>> topo = Topology.from_dict(doc)
    >>> owners = slot_owners(topo)
    >>> owners[0] == s1, owners[5461] == s2, owners[16383] == s3
    (True, True, True)
    >>> Topology.from_json(topo.to_json()) == topo
    True
    >>> parse_ranges("0-5460,5461")
    [(0, 5460), (5461, 5461)]
    >>> slot_ranges([3, 1, 2, 7])
    [(1, 3), (7, 7)]
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import orjson

from .slots import SLOT_COUNT

SlotRange = tuple[int, int]

_ID_RE = re.compile(r"[0-9a-f]{40}")
_UINT64_MAX = 2**64 - 1


class TopologyError(ValueError):
    """A served view that cannot be accepted; the message says what and where."""


class Role(enum.StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    NONE = "none"


class NodeState(enum.StrEnum):
    OFFLINE = "OFFLINE"
    ONLINE = "ONLINE"
    MIGRATING = "MIGRATING"
    ACTIVE = "ACTIVE"
    RECOVERING = "RECOVERING"
    STANDBY = "STANDBY"


class Health(enum.StrEnum):
    ONLINE = "online"
    LOADING = "loading"
    FAIL = "fail"


class MigrationState(enum.StrEnum):
    """Migration states. Open: a state this build does not know (written by a newer
    coordinator) is kept as a pseudo-member carrying its text, so an older data node
    still accepts the view and round-trips it unchanged."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @classmethod
    def _missing_(cls, value: object) -> MigrationState | None:
        if not isinstance(value, str) or not value:
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as served (``nodes/<id>``). Fields after ``admin_port`` are keyword-only."""

    id: str
    addr: str
    port: int
    admin_port: int
    _: KW_ONLY
    zone: str = ""
    shard: str = ""
    role: Role
    state: NodeState
    health: Health
    hidden: bool = False
    nofailover: bool = False
    priority: int = 0
    replica_id: int = 0


@dataclass(frozen=True, slots=True)
class ShardRecord:
    id: str
    slots: tuple[SlotRange, ...]
    primary: str
    replicas: tuple[str, ...] = ()
    sync_replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    id: str
    slots: tuple[SlotRange, ...]
    from_shard: str
    to_shard: str
    state: MigrationState


@dataclass(frozen=True, slots=True)
class Topology:
    """The whole served view at one epoch. Constructing one validates it."""

    epoch: int
    shards: tuple[ShardRecord, ...]
    nodes: tuple[NodeRecord, ...]
    migrations: tuple[MigrationRecord, ...] = ()

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def build(
        cls,
        epoch: int,
        shards: Iterable[ShardRecord],
        nodes: Iterable[NodeRecord],
        migrations: Iterable[MigrationRecord] = (),
    ) -> Topology:
        """The validating constructor taking any iterables of records."""
        return cls(epoch, tuple(shards), tuple(nodes), tuple(migrations))

    @classmethod
    def from_json(cls, data: bytes | str) -> Topology:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise TopologyError(f"topology is not valid JSON: {exc}") from exc
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> Topology:
        """Build from the decoded DESIGN §1 document; unknown fields are ignored."""
        top = _obj(doc, "topology")
        return cls(
            _get(top, "epoch", "topology", int),
            tuple(
                _shard(s, f"shards[{i}]")
                for i, s in enumerate(_get(top, "shards", "topology", list))
            ),
            tuple(
                _node(n, f"nodes[{i}]") for i, n in enumerate(_get(top, "nodes", "topology", list))
            ),
            tuple(
                _migration(m, f"migrations[{i}]")
                for i, m in enumerate(_get(top, "migrations", "topology", list, []))
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "shards": [
                {
                    "id": s.id,
                    "slots": [list(r) for r in s.slots],
                    "primary": s.primary,
                    "replicas": list(s.replicas),
                    "sync_replicas": list(s.sync_replicas),
                }
                for s in self.shards
            ],
            "nodes": [
                {
                    "id": n.id,
                    "addr": n.addr,
                    "port": n.port,
                    "admin_port": n.admin_port,
                    "zone": n.zone,
                    "shard": n.shard,
                    "role": n.role.value,
                    "state": n.state.value,
                    "health": n.health.value,
                    "hidden": n.hidden,
                    "nofailover": n.nofailover,
                    "priority": n.priority,
                    "replica_id": n.replica_id,
                }
                for n in self.nodes
            ],
            "migrations": [
                {
                    "id": m.id,
                    "slots": [list(r) for r in m.slots],
                    "from_shard": m.from_shard,
                    "to_shard": m.to_shard,
                    "state": m.state.value,
                }
                for m in self.migrations
            ],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


# --------------------------------------------------------------------------- validation


def validate(topology: Topology) -> None:
    """Raise :class:`TopologyError` on the first rule the view breaks (DESIGN §1, §2)."""
    t = topology
    if not _is_int(t.epoch) or t.epoch < 0:
        raise TopologyError(f"epoch must be an integer >= 0, got {t.epoch!r}")
    for name in ("shards", "nodes", "migrations"):
        if not isinstance(getattr(t, name), tuple):
            raise TopologyError(f"topology {name} must be a tuple of records")
    nodes = _check_nodes(t.nodes)
    shards = _check_shards(t.shards)
    _check_membership(t.shards, nodes)
    _owners(t.shards)  # raises on a slot owned twice
    for s in t.shards:
        primary = nodes[s.primary]
        if primary.hidden and s.slots:
            raise TopologyError(
                f"node {primary.id} is hidden but is the primary of shard {s.id}, which owns "
                "slots: a slot-owning primary cannot be hidden"
            )
    _check_migrations(t.migrations, shards)


def _check_nodes(records: tuple[NodeRecord, ...]) -> dict[str, NodeRecord]:
    nodes: dict[str, NodeRecord] = {}
    for n in records:
        if not isinstance(n, NodeRecord):
            raise TopologyError(f"nodes must hold NodeRecord values, got {type(n).__name__}")
        _check_id(n.id, "node id")
        where = f"node {n.id}"
        if n.id in nodes:
            raise TopologyError(f"duplicate node id {n.id}")
        if not isinstance(n.addr, str) or not n.addr or any(c.isspace() for c in n.addr):
            raise TopologyError(
                f"{where}: addr must be a non-empty string without spaces, got {n.addr!r}"
            )
        for field in ("port", "admin_port"):
            value = getattr(n, field)
            if not _is_int(value) or not 1 <= value <= 65535:
                raise TopologyError(f"{where}: {field} {value!r} is out of range 1..65535")
        for field, kind in (("role", Role), ("state", NodeState), ("health", Health)):
            if not isinstance(getattr(n, field), kind):
                raise TopologyError(
                    f"{where}: {field} must be a {kind.__name__}, got {getattr(n, field)!r}"
                )
        for field in ("zone", "shard"):
            if not isinstance(getattr(n, field), str):
                raise TopologyError(f"{where}: {field} must be a string")
        for field in ("hidden", "nofailover"):
            if not isinstance(getattr(n, field), bool):
                raise TopologyError(f"{where}: {field} must be a boolean")
        if not _is_int(n.priority):
            raise TopologyError(f"{where}: priority must be an integer, got {n.priority!r}")
        if not _is_int(n.replica_id) or not 0 <= n.replica_id <= _UINT64_MAX:
            raise TopologyError(f"{where}: replica_id {n.replica_id!r} is not a uint64")
        nodes[n.id] = n
    return nodes


def _check_shards(records: tuple[ShardRecord, ...]) -> dict[str, ShardRecord]:
    shards: dict[str, ShardRecord] = {}
    for s in records:
        if not isinstance(s, ShardRecord):
            raise TopologyError(f"shards must hold ShardRecord values, got {type(s).__name__}")
        _check_id(s.id, "shard id")
        if s.id in shards:
            raise TopologyError(f"duplicate shard id {s.id}")
        _check_ranges(s.slots, f"shard {s.id}")
        for field in ("replicas", "sync_replicas"):
            ids = getattr(s, field)
            if not isinstance(ids, tuple) or not all(isinstance(i, str) for i in ids):
                raise TopologyError(f"shard {s.id}: {field} must be a tuple of node ids")
        shards[s.id] = s
    return shards


def _check_membership(records: tuple[ShardRecord, ...], nodes: dict[str, NodeRecord]) -> None:
    """Shards and nodes must agree: each member listed once, in one shard, with its role."""
    member_of: dict[str, str] = {}
    for s in records:
        for node_id, role in [(s.primary, Role.PRIMARY)] + [(r, Role.REPLICA) for r in s.replicas]:
            kind = "primary" if role is Role.PRIMARY else "replica"
            n = nodes.get(node_id)
            if n is None:
                raise TopologyError(f"shard {s.id}: {kind} {node_id!r} is not a known node")
            if member_of.get(node_id) == s.id:
                raise TopologyError(f"node {node_id} is listed twice in shard {s.id}")
            if node_id in member_of:
                raise TopologyError(
                    f"node {node_id} is listed in shard {member_of[node_id]} and again in shard {s.id}"
                )
            member_of[node_id] = s.id
            if n.role != role:
                raise TopologyError(
                    f"shard {s.id}: {kind} {node_id} has role {n.role}, expected {role}"
                )
            if n.shard != s.id:
                raise TopologyError(
                    f"shard {s.id}: {kind} {node_id} records shard {n.shard!r}, expected {s.id}"
                )
        for node_id in s.sync_replicas:
            if node_id not in s.replicas:
                raise TopologyError(
                    f"shard {s.id}: sync replica {node_id!r} is not one of its replicas"
                )
        if len(set(s.sync_replicas)) != len(s.sync_replicas):
            raise TopologyError(f"shard {s.id}: sync_replicas lists a node twice")
    for n in nodes.values():
        if n.id in member_of:
            continue
        if n.role is not Role.NONE:
            raise TopologyError(
                f"node {n.id} has role {n.role} but no shard lists it (shard {n.shard!r})"
            )
        if n.shard:
            raise TopologyError(f"node {n.id} has role none but records shard {n.shard!r}")


def _owners(records: Iterable[ShardRecord]) -> list[str | None]:
    """Slot → owning shard id; raises if a slot is owned twice."""
    owners: list[str | None] = [None] * SLOT_COUNT
    for s in records:
        for start, end in s.slots:
            segment = owners[start : end + 1]
            if segment.count(None) != len(segment):  # (C speed: this runs on every view)
                offset, other = next((i, o) for i, o in enumerate(segment) if o is not None)
                slot = start + offset
                if other == s.id:
                    raise TopologyError(f"slot {slot} is listed twice in shard {s.id}")
                raise TopologyError(f"slot {slot} is owned by both shard {other} and shard {s.id}")
            owners[start : end + 1] = [s.id] * (end - start + 1)
    return owners


def _check_migrations(records: tuple[MigrationRecord, ...], shards: dict[str, ShardRecord]) -> None:
    seen: set[str] = set()
    for m in records:
        if not isinstance(m, MigrationRecord):
            raise TopologyError(
                f"migrations must hold MigrationRecord values, got {type(m).__name__}"
            )
        if not isinstance(m.id, str) or not m.id:
            raise TopologyError(f"migration id must be a non-empty string, got {m.id!r}")
        where = f"migration {m.id}"
        if m.id in seen:
            raise TopologyError(f"duplicate migration id {m.id}")
        seen.add(m.id)
        _check_ranges(m.slots, where)
        open_ = m.state in (MigrationState.PENDING, MigrationState.RUNNING)
        for field in ("from_shard", "to_shard"):
            # a finished record may outlive its shards (a scale in dissolves the shard)
            if open_ and getattr(m, field) not in shards:
                raise TopologyError(f"{where}: {field} {getattr(m, field)!r} is not a known shard")
        if m.from_shard == m.to_shard:
            raise TopologyError(f"{where}: from_shard and to_shard are the same shard {m.to_shard}")
        if not isinstance(m.state, MigrationState):
            raise TopologyError(f"{where}: state must be a MigrationState, got {m.state!r}")


def _check_ranges(ranges: object, where: str) -> None:
    if not isinstance(ranges, tuple):
        raise TopologyError(f"{where}: slots must be a tuple of (start, end) pairs")
    for r in ranges:
        if not (isinstance(r, tuple) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1])):
            raise TopologyError(f"{where}: slot range {r!r} is not a (start, end) pair of integers")
        start, end = r
        if not 0 <= start <= end < SLOT_COUNT:
            raise TopologyError(
                f"{where}: slot range {start}-{end} is invalid (need 0 <= start <= end <= {SLOT_COUNT - 1})"
            )


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopologyError(f"{what} {value!r} is not 40 lowercase hex characters")


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool


# --------------------------------------------------------------------------- JSON decoding

_REQUIRED: Any = object()


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TopologyError(f"{path} must be a JSON object, got {type(value).__name__}")
    return value


def _get(obj: dict[str, Any], key: str, path: str, kind: type, default: Any = _REQUIRED) -> Any:
    if key not in obj:
        if default is _REQUIRED:
            raise TopologyError(f"{path}: missing required field {key!r}")
        return default
    value = obj[key]
    if type(value) is not kind:
        raise TopologyError(
            f"{path}.{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _enum(kind: type[enum.StrEnum], obj: dict[str, Any], key: str, path: str) -> Any:
    text = _get(obj, key, path, str)
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise TopologyError(f"{path}.{key}: {text!r} is not one of {allowed}") from None


def _ranges(obj: dict[str, Any], key: str, path: str) -> tuple[SlotRange, ...]:
    out = []
    for i, r in enumerate(_get(obj, key, path, list)):
        if not (isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r)):
            raise TopologyError(f"{path}.{key}[{i}]: expected a [start, end] pair, got {r!r}")
        out.append((r[0], r[1]))
    return tuple(out)


def _ids(obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    ids = _get(obj, key, path, list, [])
    for i, x in enumerate(ids):
        if not isinstance(x, str):
            raise TopologyError(f"{path}.{key}[{i}]: expected a node id string, got {x!r}")
    return tuple(ids)


def _shard(doc: Any, path: str) -> ShardRecord:
    d = _obj(doc, path)
    return ShardRecord(
        id=_get(d, "id", path, str),
        slots=_ranges(d, "slots", path),
        primary=_get(d, "primary", path, str),
        replicas=_ids(d, "replicas", path),
        sync_replicas=_ids(d, "sync_replicas", path),
    )


def _node(doc: Any, path: str) -> NodeRecord:
    d = _obj(doc, path)
    return NodeRecord(
        _get(d, "id", path, str),
        _get(d, "addr", path, str),
        _get(d, "port", path, int),
        _get(d, "admin_port", path, int),
        zone=_get(d, "zone", path, str, ""),
        shard=_get(d, "shard", path, str, ""),
        role=_enum(Role, d, "role", path),
        state=_enum(NodeState, d, "state", path),
        health=_enum(Health, d, "health", path),
        hidden=_get(d, "hidden", path, bool, False),
        nofailover=_get(d, "nofailover", path, bool, False),
        priority=_get(d, "priority", path, int, 0),
        replica_id=_get(d, "replica_id", path, int, 0),
    )


def _migration(doc: Any, path: str) -> MigrationRecord:
    d = _obj(doc, path)
    return MigrationRecord(
        id=_get(d, "id", path, str),
        slots=_ranges(d, "slots", path),
        from_shard=_get(d, "from_shard", path, str),
        to_shard=_get(d, "to_shard", path, str),
        state=_enum(MigrationState, d, "state", path),
    )


# --------------------------------------------------------------------------- helpers


def slot_owners(topology: Topology) -> list[str | None]:
    """16384 entries: the id of the shard owning each slot, or None."""
    return _owners(topology.shards)


def slot_ranges(slots: Iterable[int]) -> list[SlotRange]:
    """Sorted maximal runs of consecutive slots: ``[3, 1, 2, 7] → [(1, 3), (7, 7)]``."""
    out: list[SlotRange] = []
    for slot in sorted(set(slots)):
        if out and out[-1][1] == slot - 1:
            out[-1] = (out[-1][0], slot)
        else:
            out.append((slot, slot))
    return out


def parse_ranges(text: str) -> list[SlotRange]:
    """Parse ``"0-5460,5461"`` into ``[(0, 5460), (5461, 5461)]`` (order kept, not merged)."""
    out: list[SlotRange] = []
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        first, sep, last = token.partition("-")
        try:
            start = int(first)
            end = int(last) if sep else start
        except ValueError:
            raise TopologyError(f"bad slot range {token!r}: expected N or N-M") from None
        if not 0 <= start <= end < SLOT_COUNT:
            raise TopologyError(
                f"bad slot range {token!r}: need 0 <= start <= end <= {SLOT_COUNT - 1}"
            )
        out.append((start, end))
    return out


def node_by_id(topology: Topology, node_id: str) -> NodeRecord | None:
    return next((n for n in topology.nodes if n.id == node_id), None)


def shard_by_id(topology: Topology, shard_id: str) -> ShardRecord | None:
    return next((s for s in topology.shards if s.id == shard_id), None)


def new_id() -> str:
    """A fresh node or shard id: 40 random lowercase hex characters."""
    return secrets.token_hex(20)


__all__ = [
    "Health",
    "MigrationRecord",
    "MigrationState",
    "NodeRecord",
    "NodeState",
    "Role",
    "ShardRecord",
    "SlotRange",
    "Topology",
    "TopologyError",
    "new_id",
    "node_by_id",
    "parse_ranges",
    "shard_by_id",
    "slot_owners",
    "slot_ranges",
    "validate",
]
