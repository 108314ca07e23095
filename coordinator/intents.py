"""Operator intents: what the admin API asks for, recorded in etcd for the loop.

The API never changes the topology itself (STYLE §4): it validates a request
against the current view, writes an :class:`Intent` under
``/slotkeeper/<cluster>/intents/<id>`` with a compare-and-set, and wakes the
loop. The leader's planner turns pending intents into actions; the reconciler
writes the outcome (``done`` or ``failed`` with an HTTP status and an error code)
into the intent in the same transaction as the change. The API, or anyone
following ``GET /v1/intents/<id>``, reads that outcome.

Intent ids sort by creation time (``<ms since epoch>-<random>``), so the planner
handles them in the order they were made. Finished intents are forgotten after
a retention period (see :class:`coordinator.planner.Policy`).
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from clusterstate.keys import Keys

#: The key segment under the cluster root. Not yet in ``clusterstate.keys``:
#: intents are the coordinator's own bookkeeping, written and read only by it.
INTENTS = "intents"

_ID_RE = re.compile(r"[0-9]{13}-[0-9a-f]{8}")


class IntentError(ValueError):
    """A stored intent that cannot be read."""


class IntentKind(enum.StrEnum):
    HIDE = "hide"
    UNHIDE = "unhide"
    TAG = "tag"
    REMOVE = "remove"
    FAILOVER = "failover"  # leadership transfer (manual failover), optional target
    MOVE = "move"  # drain a node / move a shard: new members first, then the leaving ones go


class IntentState(enum.StrEnum):
    PENDING = "pending"  # waiting for the loop (or for its retry time)
    RUNNING = "running"  # a leadership transfer in progress
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (IntentState.DONE, IntentState.FAILED)


def intents_prefix(keys: Keys) -> str:
    return f"{keys.root}{INTENTS}/"


def intent_key(keys: Keys, intent_id: str) -> str:
    if not _ID_RE.fullmatch(intent_id):
        raise IntentError(f"bad intent id {intent_id!r}")
    return intents_prefix(keys) + intent_id


def parse_intent_key(keys: Keys, key: str) -> str | None:
    """The intent id of ``key``, or ``None`` if it is not an intent key."""
    prefix = intents_prefix(keys)
    if not key.startswith(prefix):
        return None
    ident = key[len(prefix) :]
    return ident if _ID_RE.fullmatch(ident) else None


def new_intent_id(now: float) -> str:
    return f"{int(now * 1000):013d}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Tags:
    """Node tags an operator changes at run time (``PATCH /v1/nodes/<id>``);
    ``None``: leave as is."""

    zone: str | None = None
    nofailover: bool | None = None
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, doc: Any) -> Tags:
        """From a request body; raises ``ValueError`` naming the bad field."""
        if not isinstance(doc, dict):
            raise ValueError("tags must be a JSON object")
        unknown = set(doc) - {"zone", "nofailover", "priority"}
        if unknown:
            raise ValueError(f"unknown tag(s): {', '.join(sorted(unknown))}")
        zone, nofailover, priority = doc.get("zone"), doc.get("nofailover"), doc.get("priority")
        if zone is not None and (not isinstance(zone, str) or any(c.isspace() for c in zone)):
            raise ValueError("zone must be a string without spaces")
        if nofailover is not None and not isinstance(nofailover, bool):
            raise ValueError("nofailover must be true or false")
        if priority is not None and (type(priority) is not int or not -1000 <= priority <= 1000):
            raise ValueError("priority must be an integer in -1000..1000")
        return cls(zone, nofailover, priority)

    @property
    def empty(self) -> bool:
        return not self.to_dict()


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """One operator request and, once handled, its outcome."""

    id: str
    kind: IntentKind
    node: str = ""  # hide, unhide, tag, remove
    shard: str = ""  # failover
    target: str = ""  # failover: the replica asked for ("" = the coordinator chooses)
    tags: Tags = field(default_factory=Tags)
    state: IntentState = IntentState.PENDING
    created: float = 0.0  # wall-clock seconds
    updated: float = 0.0
    attempts: int = 0  # failover: transfer attempts started
    not_before: float = 0.0  # failover: the next attempt waits until then (backoff)
    deadline: float = 0.0  # failover: the running attempt is abandoned then
    chosen: str = ""  # failover: the replica of the running attempt
    message: str = ""  # what happened, for people
    error: str = ""  # failed: an error code (e.g. "not_eligible")
    status: int = 0  # failed: the HTTP status the API answers with
    epoch: int = 0  # the epoch the outcome was written at (0: no topology change)
    nodes: tuple[str, ...] = ()  # move: the joining nodes ("" = the coordinator chooses)
    leaving: tuple[str, ...] = ()  # move: the members that leave the shard
    child: str = ""  # move: the leadership transfer intent it started

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["kind"] = self.kind.value
        doc["state"] = self.state.value
        doc["tags"] = self.tags.to_dict()
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Intent:
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict):
                raise IntentError("an intent must be a JSON object")
            names = set(cls.__dataclass_fields__)
            values = {k: v for k, v in doc.items() if k in names}
            values["kind"] = IntentKind(values["kind"])
            values["state"] = IntentState(values.get("state", "pending"))
            values["tags"] = Tags.from_dict(values.get("tags") or {})
            for name in ("nodes", "leaving"):
                values[name] = tuple(values.get(name) or ())
            return cls(**values)
        except IntentError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IntentError(f"unreadable intent: {exc}") from exc

    def with_(self, **changes: Any) -> Intent:
        return replace(self, **changes)

    def done(self, now: float, message: str) -> Intent:
        return replace(self, state=IntentState.DONE, updated=now, message=message)

    def failed(self, now: float, refusal: Refusal) -> Intent:
        return replace(
            self,
            state=IntentState.FAILED,
            updated=now,
            message=refusal.message,
            error=refusal.code,
            status=refusal.status,
        )

    @property
    def subject(self) -> str:
        """What the intent is about, for sentences: ``hide node 1a2b…``."""
        if self.kind is IntentKind.FAILOVER:
            to = f" to {short(self.target)}" if self.target else ""
            return f"failover of shard {short(self.shard)}{to}"
        if self.kind is IntentKind.MOVE:
            if self.node:
                return f"drain of node {short(self.node)}"
            return f"move of shard {short(self.shard)}"
        return f"{self.kind.value} node {short(self.node)}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request cannot be carried out: HTTP status, error code, message.
    The API answers with it at once when it can tell; the planner records it in
    the intent when it finds out later."""

    status: int
    code: str
    message: str


def short(ident: str) -> str:
    """The first 8 characters of a node or shard id, for sentences and tables."""
    return ident[:8]


__all__ = [
    "INTENTS",
    "Intent",
    "IntentError",
    "IntentKind",
    "IntentState",
    "Refusal",
    "Tags",
    "intent_key",
    "intents_prefix",
    "new_intent_id",
    "parse_intent_key",
    "short",
]
