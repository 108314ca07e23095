"""The one error family of the store layer (STYLE.md §8).

Adapters translate every library error at the edge (``raise StoreUnavailable(...)
from exc``), so callers above ``dcs`` handle only these. A compare-and-set that
loses is not an error: it returns ``False``.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store layer raises: a request the store refused
    (bad argument, permission), or a misuse such as a closed store."""


class StoreUnavailable(StoreError):
    """The store did not answer in time or could not be reached (connection
    refused, timeout, no leader). Transient: the retry policy retries these only."""


class LeaseLost(StoreError):
    """The lease is gone (expired or revoked): keys bound to it are deleted and it
    cannot be refreshed or attached to a key any more."""

    def __init__(self, lease_id: int, message: str = "") -> None:
        self.lease_id = lease_id
        super().__init__(message or f"lease {lease_id:x} not found (expired or revoked)")


class WatchCompacted(StoreError):
    """A watch asked for history the store already compacted: the caller must
    reload a snapshot and watch again from its revision + 1."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(
            f"watch history compacted up to revision {compact_revision}: reload and watch again"
        )


__all__ = ["LeaseLost", "StoreError", "StoreUnavailable", "WatchCompacted"]
