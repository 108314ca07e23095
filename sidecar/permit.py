"""The write permit rule (DESIGN §3), pure.

After each acknowledged keepalive the sidecar grants its primary writes until
*(send time of that keepalive) + TTL × 0.8*, on the host's monotonic clock (the
data node reads the same CLOCK_MONOTONIC). The lease cannot expire at etcd before
*send time + TTL*, so the data node stops writing at least TTL × 0.2 before
another primary can be promoted. A sidecar that cannot renew grants nothing and
the permit lapses by itself.

Writes are granted only to a primary that holds ``leases/<shard>``, is not in a
registry conflict, and is not shutting down. Everyone else is fenced (``REVOKE``),
never switched ``OFF`` (which means standalone: no fencing at all).
"""

from __future__ import annotations

from dataclasses import dataclass

PERMIT_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class WriterFacts:
    """What decides whether this node may write."""

    primary: bool  # the applied role is primary
    slot_lease: bool  # holds leases/<shard> on its current lease
    conflict: bool  # boot rule 2: the registry is behind the local snapshot
    shutting_down: bool
    datanode_up: bool
    handoff: bool = False  # a leadership transfer away from this primary is in progress


@dataclass(frozen=True, slots=True)
class Grant:
    deadline: float  # monotonic seconds

    @property
    def until_ms(self) -> int:
        """The ``WRITE-PERMIT UNTIL`` argument: monotonic milliseconds, rounded down."""
        return int(self.deadline * 1000)


@dataclass(frozen=True, slots=True)
class Revoke:
    reason: str


PermitAction = Grant | Revoke


def deadline(send_time: float, ttl: float, fraction: float = PERMIT_FRACTION) -> float:
    """The permit earned by a keepalive sent at ``send_time`` that restarted ``ttl``."""
    return send_time + ttl * fraction


def refusal(facts: WriterFacts) -> str:
    """Why this node may not write ("" when it may)."""
    if facts.shutting_down:
        return "shutting down"
    if not facts.datanode_up:
        return "data node down"
    if facts.conflict:
        return "registry conflict (local snapshot ahead)"
    if not facts.primary:
        return "not a primary"
    if not facts.slot_lease:
        return "does not hold leases/<shard>"
    if facts.handoff:
        return "leadership transfer in progress: writes stopped"
    return ""


def after_keepalive(
    facts: WriterFacts, send_time: float, ttl: float, now: float
) -> PermitAction | None:
    """The permit command to send after a keepalive sent at ``send_time`` was
    acknowledged (``ttl`` restarted); None when there is nothing to send (a node
    that may not write was already fenced when it lost the right)."""
    if refusal(facts):
        return None
    until = deadline(send_time, ttl)
    if until <= now:
        return None  # the acknowledgement came too late to be worth anything
    return Grant(until)


def on_change(facts: WriterFacts, last_send: float | None, ttl: float, now: float) -> PermitAction:
    """The permit command when the right to write changes (slot lease taken or
    lost, role changed): grant at once from the last acknowledged keepalive if it is
    still good, else fence."""
    why = refusal(facts)
    if why:
        return Revoke(why)
    if last_send is None:
        return Revoke("no acknowledged keepalive yet")
    until = deadline(last_send, ttl)
    if until <= now:
        return Revoke("last acknowledged keepalive too old")
    return Grant(until)


def release_delay(fate: str, granted_until: float, now: float) -> float:
    """How long to wait before revoking the lease of a data node that stopped
    answering, so that no write permit it may still hold outlives the lease.

    ``fate``: ``"gone"`` (its port refuses connections: the process is dead),
    ``"fenced"`` (it answered a REVOKE), or ``"unknown"`` (hung, unreachable).
    Revoking at once lets the coordinator promote another primary right away, which
    is only safe if this one can no longer write; otherwise wait until the last
    permit granted has run out (at most TTL x 0.8).
    """
    if fate in ("gone", "fenced"):
        return 0.0
    return max(0.0, granted_until - now)
