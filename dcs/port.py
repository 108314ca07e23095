"""The store port: the small interface the coordinator and sidecars use (tooz's
driver interface, Patroni's ``AbstractDCS``), and the values it speaks in.

Keys are text paths built by :class:`clusterstate.keys.Keys`; values are bytes
(JSON written by ``clusterstate``). Every read carries revisions so a later write
can be a compare-and-set against exactly what was read::

    snap = await store.load(keys.root)
    ok = await store.cas(
        [Compare.unchanged(keys.epoch, snap.get(keys.epoch))],
        [Put(keys.epoch, b"8"), Put(keys.node(node_id), record)],
    )

Errors: adapters raise only :mod:`dcs.errors` (``StoreUnavailable`` when the store
cannot be reached in time, ``LeaseLost``, ``WatchCompacted``, ``StoreError``); a
lost compare-and-set returns ``False``. Each call is one attempt: wrap it in
:func:`dcs.retry.retry` to retry.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease granted by the store: its id and the TTL (seconds) it was granted
    with, which may be longer than asked (etcd's minimum is 2 s)."""

    id: int
    ttl: int


LeaseRef = Lease | int
"""A lease or its id (a snapshot's :attr:`KeyValue.lease` is an id)."""


def lease_id(lease: LeaseRef | None) -> int:
    """The id of ``lease``; 0 (no lease) for ``None``."""
    if lease is None:
        return 0
    return lease.id if isinstance(lease, Lease) else int(lease)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored: value and the revisions that compare-and-sets use."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int = 1
    lease: int = 0  # 0: not bound to a lease


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key under ``prefix`` as of store ``revision``, read in one request.
    Compares by value; not hashable."""

    prefix: str
    revision: int
    entries: Mapping[str, KeyValue]  # by key, in key order; read-only

    @classmethod
    def of(cls, prefix: str, revision: int, kvs: Sequence[KeyValue]) -> Snapshot:
        ordered = dict(sorted(((kv.key, kv) for kv in kvs), key=lambda item: item[0]))
        return cls(prefix, revision, MappingProxyType(ordered))

    def get(self, key: str) -> KeyValue | None:
        return self.entries.get(key)

    def value(self, key: str) -> bytes | None:
        kv = self.entries.get(key)
        return None if kv is None else kv.value

    def under(self, prefix: str) -> Iterator[KeyValue]:
        """Entries whose key starts with ``prefix``, in key order."""
        return (kv for key, kv in self.entries.items() if key.startswith(prefix))

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[KeyValue]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


# --------------------------------------------------------------------------- transactions


class CompareTarget(enum.StrEnum):
    VALUE = "value"
    MOD_REVISION = "mod_revision"
    CREATE_REVISION = "create_revision"
    VERSION = "version"


class CompareOp(enum.StrEnum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction. A missing key has revisions and version 0,
    and fails every ``value`` comparison."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    def __post_init__(self) -> None:
        if self.target is CompareTarget.VALUE:
            if not isinstance(self.operand, bytes):
                raise TypeError(f"a value compare needs bytes, got {self.operand!r}")
        elif type(self.operand) is not int:
            raise TypeError(f"a {self.target} compare needs an int, got {self.operand!r}")

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, CompareTarget.CREATE_REVISION, CompareOp.EQUAL, 0)

    @classmethod
    def exists(cls, key: str) -> Compare:
        return cls(key, CompareTarget.CREATE_REVISION, CompareOp.GREATER, 0)

    @classmethod
    def value(cls, key: str, value: bytes) -> Compare:
        return cls(key, CompareTarget.VALUE, CompareOp.EQUAL, value)

    @classmethod
    def mod_revision(cls, key: str, revision: int) -> Compare:
        return cls(key, CompareTarget.MOD_REVISION, CompareOp.EQUAL, revision)

    @classmethod
    def create_revision(cls, key: str, revision: int) -> Compare:
        return cls(key, CompareTarget.CREATE_REVISION, CompareOp.EQUAL, revision)

    @classmethod
    def unchanged(cls, key: str, read: KeyValue | None) -> Compare:
        """``key`` is still as it was read: same ``mod_revision``, or still absent."""
        return cls.absent(key) if read is None else cls.mod_revision(key, read.mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: LeaseRef | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Op = Put | Delete


# --------------------------------------------------------------------------- watches


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: the new value, or ``None`` when the key was deleted."""

    key: str
    value: bytes | None
    mod_revision: int
    create_revision: int = 0
    lease: int = 0

    @property
    def deleted(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """All changes under the watched prefix made at one store ``revision`` (one
    transaction), in the order the store applied them."""

    revision: int
    events: tuple[WatchEvent, ...]


# --------------------------------------------------------------------------- the port


@runtime_checkable
class Store(Protocol):
    """The source-of-truth store (etcd in production)."""

    async def load(self, prefix: str) -> Snapshot:
        """Every key under ``prefix`` with the store revision, in one consistent read."""
        ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def put(self, key: str, value: bytes, lease: LeaseRef | None = None) -> int:
        """Write unconditionally; returns the revision of the write. Raises
        ``LeaseLost`` if ``lease`` is gone."""
        ...

    async def cas(self, compares: Sequence[Compare], ops: Sequence[Op]) -> bool:
        """Apply ``ops`` atomically if every compare holds; ``False`` (nothing
        written) otherwise."""
        ...

    async def create(self, key: str, value: bytes, lease: LeaseRef | None = None) -> bool:
        """Create ``key`` if absent (bound to ``lease``); ``False`` if it exists."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; ``False`` if it did not exist."""
        ...

    async def grant(self, ttl: int) -> Lease: ...

    async def keepalive_once(self, lease: LeaseRef) -> int:
        """One refresh round trip; returns the TTL restarted by it. The caller
        notes the send time itself (write permit = send time + TTL x 0.8).
        Raises ``LeaseLost`` if the lease expired or was revoked."""
        ...

    async def revoke(self, lease: LeaseRef) -> bool:
        """Revoke ``lease`` (its keys are deleted at once); ``False`` if it was
        already gone."""
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Changes under ``prefix`` from ``start_revision`` on, one batch per
        revision, in order. Survives reconnects (it resumes after the last
        revision delivered); raises ``WatchCompacted`` when the history it needs
        is gone: reload, then watch from the snapshot's revision + 1."""
        ...

    async def close(self) -> None: ...


__all__ = [
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "KeyValue",
    "Lease",
    "LeaseRef",
    "Op",
    "Put",
    "Snapshot",
    "Store",
    "WatchBatch",
    "WatchEvent",
    "lease_id",
]
