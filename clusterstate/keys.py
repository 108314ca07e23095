"""The etcd key layout (DESIGN.md §1): every key path is built and parsed here.

All keys of a cluster live under ``/slotkeeper/<cluster>/``. Nothing else in the
code base spells a path: callers ask :class:`Keys` for a key or a prefix, and turn
a key seen in a snapshot or a watch back into ``(kind, id)`` with :meth:`Keys.parse`.
Numeric ids (replica ids, history epochs) are written as 20-digit zero-padded
decimals, so etcd's byte order is their numeric order. Pure: no I/O.

    >>> keys = Keys("prod")
    >>> keys.node("ab" * 20)
    '/slotkeeper/prod/nodes/abababababababababababababababababababab'
    >>> keys.history(7)
    '/slotkeeper/prod/history/00000000000000000007'
    >>> keys.parse("/slotkeeper/prod/replica-ids/00000000000000000042")
    ParsedKey(kind=<KeyKind.REPLICA_ID: 'replica-ids'>, id='42')
    >>> keys.parse("/slotkeeper/other/epoch") is None
    True
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ROOT = "/slotkeeper/"
UINT64_MAX = 2**64 - 1
_NUMBER_WIDTH = 20  # len(str(UINT64_MAX))

_CLUSTER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NUMBER_RE = re.compile(r"[0-9]{20}")


class KeyLayoutError(ValueError):
    """A cluster name, id or number that cannot be placed in the key layout."""


class KeyKind(enum.StrEnum):
    """What a key holds; the value is its path segment under the cluster root."""

    SETTINGS = "settings"
    EPOCH = "epoch"
    SHARD = "shards"
    NODE = "nodes"
    STATUS = "status"
    LEASE = "leases"
    MIGRATION = "migrations"
    REPLICA_ID = "replica-ids"
    COORDINATOR_LEADER = "coordinator/leader"
    HISTORY = "history"
    INTENT = "intents"  # operator intents recorded by the coordinator API

    @property
    def singleton(self) -> bool:
        """One key of this kind per cluster (no id)."""
        return self in _SINGLETONS

    @property
    def numeric(self) -> bool:
        """Ids of this kind are uint64 numbers, zero-padded in the key."""
        return self in _NUMERIC


_SINGLETONS = frozenset({KeyKind.SETTINGS, KeyKind.EPOCH, KeyKind.COORDINATOR_LEADER})
_NUMERIC = frozenset({KeyKind.REPLICA_ID, KeyKind.HISTORY})

#: The kinds a served view is assembled from (DESIGN §1: sidecars watch these).
SERVED_VIEW_KINDS = frozenset({KeyKind.EPOCH, KeyKind.SHARD, KeyKind.NODE, KeyKind.MIGRATION})


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key of the layout: its kind and id ("" for singletons; the plain decimal
    for numeric kinds, see :attr:`number`)."""

    kind: KeyKind
    id: str = ""

    @property
    def number(self) -> int:
        """The id of a numeric kind (replica id, history epoch) as an int."""
        if not self.kind.numeric:
            raise KeyLayoutError(f"{self.kind} keys have no numeric id")
        return int(self.id)


class Keys:
    """Key paths of one cluster. Instances are cheap, immutable and comparable."""

    __slots__ = ("cluster", "root")

    def __init__(self, cluster: str) -> None:
        if not isinstance(cluster, str) or not _CLUSTER_RE.fullmatch(cluster):
            raise KeyLayoutError(
                f"cluster name {cluster!r} must be letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit)"
            )
        self.cluster = cluster
        #: ``/slotkeeper/<cluster>/``: the prefix of every key of the cluster.
        self.root = f"{ROOT}{cluster}/"

    def __repr__(self) -> str:
        return f"Keys({self.cluster!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keys) and other.cluster == self.cluster

    def __hash__(self) -> int:
        return hash(self.cluster)

    # ----------------------------------------------------------------- singletons

    @property
    def settings(self) -> str:
        return self.root + KeyKind.SETTINGS

    @property
    def epoch(self) -> str:
        return self.root + KeyKind.EPOCH

    @property
    def coordinator_leader(self) -> str:
        return self.root + KeyKind.COORDINATOR_LEADER

    # ----------------------------------------------------------------- per id

    def shard(self, shard_id: str) -> str:
        return self.prefix(KeyKind.SHARD) + _segment(shard_id, "shard id")

    def node(self, node_id: str) -> str:
        return self.prefix(KeyKind.NODE) + _segment(node_id, "node id")

    def status(self, node_id: str) -> str:
        return self.prefix(KeyKind.STATUS) + _segment(node_id, "node id")

    def lease(self, shard_id: str) -> str:
        """``leases/<shard_id>``: the slot lease of a shard."""
        return self.prefix(KeyKind.LEASE) + _segment(shard_id, "shard id")

    def migration(self, migration_id: str) -> str:
        return self.prefix(KeyKind.MIGRATION) + _segment(migration_id, "migration id")

    def replica_id(self, replica_id: int) -> str:
        return self.prefix(KeyKind.REPLICA_ID) + _number(replica_id, "replica id")

    def history(self, epoch: int) -> str:
        return self.prefix(KeyKind.HISTORY) + _number(epoch, "epoch")

    # ----------------------------------------------------------------- prefixes

    def prefix(self, kind: KeyKind) -> str:
        """The prefix of every key of ``kind`` (ends with "/"); for a singleton kind,
        its key itself."""
        if kind.singleton:
            return self.root + kind
        return f"{self.root}{kind}/"

    @property
    def shards(self) -> str:
        return self.prefix(KeyKind.SHARD)

    @property
    def nodes(self) -> str:
        return self.prefix(KeyKind.NODE)

    @property
    def statuses(self) -> str:
        return self.prefix(KeyKind.STATUS)

    @property
    def leases(self) -> str:
        return self.prefix(KeyKind.LEASE)

    @property
    def migrations(self) -> str:
        return self.prefix(KeyKind.MIGRATION)

    @property
    def replica_ids(self) -> str:
        return self.prefix(KeyKind.REPLICA_ID)

    @property
    def histories(self) -> str:
        return self.prefix(KeyKind.HISTORY)

    # ----------------------------------------------------------------- parsing

    def parse(self, key: str | bytes) -> ParsedKey | None:
        """``(kind, id)`` of a key of this cluster; ``None`` for any key outside the
        layout (another cluster, an unknown kind written by a newer version, a
        malformed id), which callers ignore."""
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                return None
        if not key.startswith(self.root):
            return None
        rest = key[len(self.root) :]
        for kind in _SINGLETONS:
            if rest == kind:
                return ParsedKey(kind)
        kind_text, sep, ident = rest.partition("/")
        if not sep:
            return None
        try:
            kind = KeyKind(kind_text)
        except ValueError:
            return None
        if kind.singleton or not ident or "/" in ident:
            return None
        if kind.numeric:
            if not _NUMBER_RE.fullmatch(ident) or int(ident) > UINT64_MAX:
                return None
            return ParsedKey(kind, str(int(ident)))
        if not _valid_segment(ident):
            return None
        return ParsedKey(kind, ident)


def _valid_segment(ident: str) -> bool:
    return (
        bool(ident)
        and "/" not in ident
        and ident.isprintable()
        and not any(c.isspace() for c in ident)
    )


def _segment(ident: str, what: str) -> str:
    if not isinstance(ident, str) or not _valid_segment(ident):
        raise KeyLayoutError(
            f"{what} {ident!r} must be a non-empty string without '/', spaces or control characters"
        )
    return ident


def _number(value: int, what: str) -> str:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise KeyLayoutError(f"{what} {value!r} is not a uint64")
    return f"{value:0{_NUMBER_WIDTH}d}"


__all__ = [
    "ROOT",
    "SERVED_VIEW_KINDS",
    "KeyKind",
    "KeyLayoutError",
    "Keys",
    "ParsedKey",
]
