"""The admin API's routes, in one table, and the OpenAPI document built from it.

:data:`ROUTES` is the only list of routes: :mod:`coordinator.api` registers
exactly these (handler = the route's ``name``), and :func:`document` describes
exactly these, so the document matches the routes by construction (a test
checks it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterstate.records import Settings

ERROR_CODES = {
    "400": "Bad input: bad_json, bad_request",
    "401": "Token missing: unauthorized",
    "403": "Token wrong: forbidden",
    "404": "Unknown node, shard, migration, intent or route: unknown_node, unknown_shard, "
    "unknown_migration, not_found",
    "409": (
        "Conflict, with the current epoch: stale_epoch, stale_settings, primary_owns_slots, "
        "is_primary, not_eligible, no_candidate, transfer_in_progress, transfer_failed, "
        "interrupted, conflict, no_spare, last_shard, migration_in_progress, finished"
    ),
    "503": "This coordinator is a standby (not_leader, with the leader's address) or etcd is "
    "unreachable (store_unavailable)",
}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    name: str  # the handler's name on the API object
    summary: str
    write: bool = False  # needs the token (when one is set) and the leader
    body: dict[str, Any] | None = None  # JSON schema of the request body
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    responses: dict[str, str] = field(default_factory=dict)
    content: str = "application/json"


_EXPECTED_EPOCH = {
    "type": "integer",
    "description": "Refuse with 409 stale_epoch unless the cluster is at this epoch "
    "(also accepted as an If-Match header)",
}
_WAIT = ("wait", "number", "Seconds to wait for the outcome before answering 202 (default 10)")
_INTENT_WRITE = {
    "200": "Done: the intent with its outcome and the epoch it was written at",
    "202": "Recorded, not finished yet: follow the Location (GET /v1/intents/{intent_id})",
}
_SETTINGS_PROPERTIES: dict[str, Any] = {
    name: {"type": {"bool": "boolean", "int": "integer", "float": "number"}.get(
        type(default).__name__, "array" if isinstance(default, tuple) else "string")}
    for name, default in (
        (f, getattr(Settings(), f)) for f in Settings.__dataclass_fields__
    )
}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "dashboard", "Dashboard page (HTML, refreshed from /v1/cluster)",
          content="text/html"),
    Route("GET", "/health", "health", "Liveness of this coordinator, and whether it leads"),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", content="text/plain"),
    Route("GET", "/v1/openapi.json", "openapi", "This document"),
    Route("GET", "/v1/cluster", "cluster",
          "The whole cluster: epoch, leader, settings, shards, nodes, migrations, intents"),
    Route("GET", "/v1/nodes", "nodes", "Nodes with their records, statuses and Consul health"),
    Route("GET", "/v1/nodes/{node_id}", "node", "One node"),
    Route("GET", "/v1/shards", "shards", "Shards with their slot lease holders"),
    Route("GET", "/v1/shards/{shard_id}", "shard", "One shard"),
    Route("GET", "/v1/migrations", "migrations",
          "Slot migrations with the sidecars' progress fields",
          query=(("progress", "boolean", "Add totals: migrations, slots, slots_done, "
                  "keys_moved, bytes_moved, by_state"),)),
    Route("DELETE", "/v1/migrations/{migration_id}", "cancel_migration",
          "Cancel a plan: its pending migrations become CANCELLED; a running one finishes "
          "(its slots are committed)", write=True,
          responses={"200": "The migrations cancelled and those left to finish"}),
    Route("GET", "/v1/history", "history", "What changed at each epoch and why, newest first",
          query=(("limit", "integer", "Entries to return (default 50)"),)),
    Route("GET", "/v1/intents", "intents", "Operator intents, newest first"),
    Route("GET", "/v1/intents/{intent_id}", "intent", "One intent and its outcome"),
    Route("GET", "/v1/settings", "settings", "Cluster settings with their revision"),
    Route("POST", "/v1/nodes/{node_id}/hide", "hide",
          "Hide a replica or spare from clients (a slot-owning primary: 409)", write=True,
          body={"type": "object", "properties": {"expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/nodes/{node_id}/unhide", "unhide", "Show a hidden node again", write=True,
          body={"type": "object", "properties": {"expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/nodes/{node_id}/remove", "remove",
          "Take a node out of its shard (a primary: 409); a gone node is forgotten", write=True,
          body={"type": "object", "properties": {"expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/nodes/{node_id}/drain", "drain",
          "Drain a node: a spare (or 'to') joins its shard as a replica and catches up, "
          "leadership moves if the node is the primary, then the node leaves as a hidden "
          "spare (its replica_id retired); a spare is just hidden", write=True,
          body={"type": "object", "properties": {
              "to": {"type": "string", "description": "node id of the spare taking its place"},
              "expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/shards/{shard_id}/move", "move_shard",
          "Move a shard to other nodes: they join as replicas and catch up, leadership moves "
          "to the first, then the old members leave as hidden spares", write=True,
          body={"type": "object", "required": ["nodes"], "properties": {
              "nodes": {"type": "array", "items": {"type": "string"}},
              "expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("PATCH", "/v1/nodes/{node_id}", "tag", "Change tags live: zone, nofailover, priority",
          write=True,
          body={"type": "object", "properties": {
              "zone": {"type": "string"}, "nofailover": {"type": "boolean"},
              "priority": {"type": "integer"}, "expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/shards/{shard_id}/failover", "failover",
          "Leadership transfer (best effort, no loss) to target or to the least-loaded "
          "eligible replica; promotes at once if the primary is already lost", write=True,
          body={"type": "object", "properties": {
              "target": {"type": "string", "description": "node id of a replica"},
              "expected_epoch": _EXPECTED_EPOCH}},
          query=(_WAIT,), responses=_INTENT_WRITE),
    Route("POST", "/v1/rebalance", "rebalance",
          "Plan a scale out, scale in or rebalance; dry_run answers the plan (rows as "
          "ranges, slots per shard before/after, keys and bytes to move when measured) and "
          "changes nothing. Otherwise the plan is written in one transaction: its migrations "
          "PENDING, a scale out's new shards (primary MIGRATING, replicas RECOVERING), a scale "
          "in's leaving primary MIGRATING; the loop runs them (202)",
          write=True,
          body={"type": "object", "required": ["kind"], "properties": {
              "kind": {"type": "string", "enum": ["scale_out", "scale_in", "rebalance"]},
              "nodes": {"type": "array", "items": {"type": "string"},
                        "description": "scale_out: the spare nodes forming the new shard "
                        "(default: every spare ONLINE node)"},
              "shard": {"type": "string", "description": "scale_in: the shard to remove"},
              "threshold": {"type": "number", "description": "rebalance: fraction of the mean "
                            "load under which nothing moves (default 0)"},
              "by": {"type": "string", "enum": ["slots", "keys", "bytes"],
                     "description": "rebalance: what to balance (keys and bytes are measured "
                     "on the primaries with SLOTKEEPER SLOTSIZES)"},
              "measure": {"type": "boolean", "description": "measure keys and bytes per slot "
                          "on the primaries, so the plan says how many move (default false)"},
              "dry_run": {"type": "boolean"},
              "expected_epoch": _EXPECTED_EPOCH}},
          responses={"200": "dry_run: the plan",
                     "202": "The plan and the ids of its migrations (GET /v1/migrations)",
                     "409": "not_eligible, no_spare, last_shard, migration_in_progress, "
                     "stale_epoch, conflict"}),
    Route("PATCH", "/v1/settings", "patch_settings",
          "Change settings (compare-and-set on their revision)", write=True,
          body={"type": "object", "properties": {
              **_SETTINGS_PROPERTIES,
              "expected_revision": {"type": "integer",
                                    "description": "409 stale_settings unless settings are at "
                                    "this revision"},
              "expected_epoch": _EXPECTED_EPOCH}},
          responses={"200": "The settings written, with their revision"}),
    Route("POST", "/v1/pause", "pause",
          "Maintenance: no automatic action (failover, repair, bootstrap); manual ones work",
          write=True, responses={"200": "The settings written, with their revision"}),
    Route("POST", "/v1/resume", "resume", "End maintenance", write=True,
          responses={"200": "The settings written, with their revision"}),
)


def document(title: str = "slotkeeper coordinator", version: str = "1") -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"operationId": r.name, "summary": r.summary}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(r.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "schema": {"type": t},
             "description": d}
            for n, t, d in r.query
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": r.body}},
            }
        responses: dict[str, Any] = {
            code: {"description": text} for code, text in (r.responses or {"200": "OK"}).items()
        }
        if r.content != "application/json":
            responses["200"] = {"description": "OK", "content": {r.content: {}}}
        codes = ("400", "401", "403", "404", "409", "503") if r.write else ("404", "503")
        for code in codes:
            responses.setdefault(code, {
                "description": ERROR_CODES[code],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            })
        op["responses"] = responses
        if r.write:
            op["security"] = [{"token": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "Admin API of the slotkeeper coordinator. Reads are served by every "
            "instance; writes only by the leader (others answer 503 with its address). Writes "
            "record an intent and wake the loop; they answer when the outcome is known, or 202.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer",
                          "description": "Needed for writes when the coordinator has a --token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["status", "code", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "epoch": {"type": "integer", "description": "409: the current epoch"},
                        "leader": {"type": "object",
                                   "description": "503 not_leader: {id, api} of the leader"},
                    },
                },
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


__all__ = ["ERROR_CODES", "ROUTES", "Route", "document"]
