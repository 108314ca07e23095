"""The coordinator's own tunables that decisions depend on (pure values).

Cluster-wide tunables live in etcd (:class:`clusterstate.records.Settings`,
edited with CAS through the API); these come from the coordinator's flags and
are the same on every instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterstate.records import Settings


@dataclass(frozen=True, slots=True)
class Policy:
    transfer_timeout: float = 5.0  # s a leadership transfer waits for the target to catch up
    transfer_attempts: int = 3  # attempts before a transfer fails
    transfer_backoff: float = 1.0  # s before the 2nd attempt; doubles after each
    intent_retention: float = 600.0  # s a finished intent stays readable
    intents_kept: int = 200  # finished intents kept at most
    initial_settings: Settings | None = None  # written when etcd has no settings yet
    migration_attempts: int = 5  # starts of one migration before it stays FAILED
    migration_backoff: float = 1.0  # s before a failed migration's 2nd start; doubles
    migration_retention: float = 900.0  # s a finished plan's records stay in etcd

    def __post_init__(self) -> None:
        if self.transfer_timeout <= 0 or self.transfer_backoff < 0:
            raise ValueError("transfer timeout must be > 0 and backoff >= 0")
        if self.transfer_attempts < 1:
            raise ValueError("transfer attempts must be >= 1")
        if self.intent_retention < 0 or self.intents_kept < 1:
            raise ValueError("intent retention must be >= 0 and intents kept >= 1")

    def migration_retry_after(self, attempts: int) -> float:
        """Seconds a migration that failed its ``attempts``-th start waits (capped)."""
        return min(30.0, self.migration_backoff * 2 ** max(0, attempts - 1))

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``."""
        return self.transfer_backoff * 2 ** max(0, attempts - 1)


__all__ = ["Policy"]
