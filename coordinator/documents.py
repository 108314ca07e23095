"""The JSON documents the admin API answers with, built from a view (pure)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from .intents import Intent
from .replication import lag
from .view import ClusterView, LeaderInfo


def node_doc(view: ClusterView, node_id: str) -> dict[str, Any]:
    entry = view.nodes[node_id]
    r = entry.record
    st = view.status(node_id)
    return {
        "id": r.id,
        "addr": r.addr,
        "port": r.port,
        "admin_port": r.admin_port,
        "zone": r.zone,
        "shard": r.shard,
        "role": r.role.value,
        "state": r.state.value,
        "health": r.health.value,
        "hidden": r.hidden,
        "hidden_by": entry.hidden_by,
        "nofailover": r.nofailover,
        "priority": r.priority,
        "replica_id": r.replica_id,
        "epoch": entry.epoch,
        "alive": st is not None,
        "status": asdict(st) if st is not None else None,
        "lag": lag(view, node_id) if r.shard and st is not None else None,
        "consul": view.consul.get(node_id) if view.consul is not None else None,
    }


def shard_doc(view: ClusterView, shard_id: str) -> dict[str, Any]:
    entry = view.shards[shard_id]
    s = entry.record
    return {
        "id": s.id,
        "slots": [list(r) for r in s.slots],
        "slot_count": sum(end - start + 1 for start, end in s.slots),
        "primary": s.primary,
        "replicas": list(s.replicas),
        "sync_replicas": list(s.sync_replicas),
        "lease": view.leases.get(shard_id),
        "handoff": entry.handoff.to_dict() if entry.handoff is not None else None,
        "epoch": entry.epoch,
    }


def migrations_doc(view: ClusterView, now: float = 0.0) -> list[dict[str, Any]]:
    """The records with the sidecars' progress fields, and ``final``: the
    migration will not run again (DONE, CANCELLED, or FAILED with its retries
    used up)."""
    from .migrations import retry_due
    from .policy import Policy

    policy = Policy()
    out = []
    for mid, doc in sorted(view.migrations.items()):
        state = doc.get("state")
        final = state in ("DONE", "CANCELLED") or (
            state == "FAILED" and retry_due(doc, now, policy) is None)
        out.append({"id": mid, **dict(doc), "final": final})
    return out


def intent_doc(intent: Intent) -> dict[str, Any]:
    return intent.to_dict()


def history_doc(view: ClusterView, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for kv in reversed(list(view.snapshot.under(view.keys.histories))):
        if len(entries) >= limit:
            break
        try:
            doc = orjson.loads(kv.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            entries.append(doc)
    return entries


def cluster_doc(
    view: ClusterView, leader: LeaderInfo | None, this: dict[str, Any]
) -> dict[str, Any]:
    return {
        "cluster": view.keys.cluster,
        "epoch": view.epoch,
        "revision": view.revision,
        "leader": leader.to_dict() if leader is not None else None,
        "coordinator": this,
        "paused": view.settings.pause,
        "settings": orjson.loads(view.settings.to_json()),
        "counts": view.counts(),
        "shards": [shard_doc(view, s) for s in view.shards],
        "nodes": [node_doc(view, n) for n in view.nodes],
        "migrations": migrations_doc(view),
        "intents": [intent_doc(i) for i in view.intents.values() if not i.state.finished],
        "problems": list(view.problems),
    }


__all__ = [
    "cluster_doc",
    "history_doc",
    "intent_doc",
    "migrations_doc",
    "node_doc",
    "shard_doc",
]
