"""The admin API (aiohttp), DESIGN §7. Routes: :data:`coordinator.openapi.ROUTES`.

Reads are served by every instance from a fresh read of etcd. Writes:

1. need the token when one is configured (``Authorization: Bearer <token>`` or
   ``X-Slotkeeper-Token``): 401 when missing, 403 when wrong;
2. are refused by a standby with 503 ``not_leader`` and the leader's address;
3. are checked against the current view: 400 for bad input, 404 for an
   unknown node or shard, 409 (with the current epoch) when ``expected_epoch``
   (or ``If-Match``) is stale or the request conflicts with the cluster (e.g.
   hiding a slot-owning primary) — answered at once, nothing written;
4. record an intent (``intents/<id>``, compare-and-set fenced by the leader
   key) and wake the loop, which alone changes the topology; then wait (``?wait=``
   seconds, default 10) for the outcome: 200 with the intent when done, its
   recorded status and error when refused, 202 with ``Location:
   /v1/intents/<id>`` when still under way.

Settings (``PATCH /v1/settings``, ``/v1/pause``, ``/v1/resume``) are written
directly with a compare-and-set on their revision (Patroni's ``PATCH /config``):
they are the operator's desired configuration, not a topology change.

Every error is JSON: ``{"status", "code", "message"}`` (+ ``epoch`` on 409,
``leader`` on 503).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from clusterstate.records import RecordError
from clusterstate.topology import TopologyError
from dcs.errors import StoreError
from dcs.port import Compare, Put

from .dashboard import PAGE
from .documents import (
    cluster_doc,
    history_doc,
    intent_doc,
    migrations_doc,
    node_doc,
    shard_doc,
)
from .intents import Intent, IntentKind, IntentState, Tags, intent_key, new_intent_id
from .loop import Coordinator
from .manual import refusal
from .metrics import CONTENT_TYPE
from .migrations import (
    StartPlan,
    epoch_ops,
    migration_records,
    new_migration_docs,
    plan_txn,
    plan_writes,
    progress,
    to_cancel,
    unfinished,
)
from .openapi import ROUTES, document
from .planner import fold
from .rebalance import PlanError, plan_from_view
from .sizes import measure
from .view import ClusterView, ViewError, load_view

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RESERVED = ("expected_epoch", "expected_revision")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> web.Response:
        body = {"status": self.status, "code": self.code, "message": self.message, **self.extra}
        return _json(body, self.status)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason).response()
    except StoreError as exc:
        return ApiError(503, "store_unavailable", f"etcd: {exc}").response()
    except ViewError as exc:
        return ApiError(503, "inconsistent", f"the records in etcd are inconsistent: {exc}").response()
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return ApiError(500, "internal", f"{type(exc).__name__}: {exc}").response()


class Api:
    """Handlers of one coordinator instance (see :data:`ROUTES`)."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        token: str = "",
        wait_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coordinator = coordinator
        self.store = coordinator.store
        self.keys = coordinator.keys
        self.elector = coordinator.elector
        self.token = token
        self.wait_timeout = wait_timeout
        self.clock = clock

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        for route in ROUTES:
            handler: Handler = getattr(self, route.name)
            if route.write:
                handler = self._guarded(handler)
            app.router.add_route(route.method, route.path, handler, name=route.name)
        return app

    # ----------------------------------------------------------------- guards

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            self._authorize(request)
            await self._require_leader()
            return await handler(request)

        return guarded

    def _authorize(self, request: web.Request) -> None:
        if not self.token:
            return
        given = request.headers.get("X-Slotkeeper-Token")
        auth = request.headers.get("Authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise ApiError(401, "unauthorized", "this endpoint needs the coordinator's token "
                           "(Authorization: Bearer <token>)")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ApiError(403, "forbidden", "wrong token")

    async def _require_leader(self) -> None:
        if self.elector.is_leader():
            return
        leader = await self.elector.refresh_known_leader()
        where = f"; the leader is {leader.id} at {leader.api}" if leader else "; no leader yet"
        raise ApiError(
            503,
            "not_leader",
            f"this coordinator ({self.elector.instance_id}) is a standby{where}",
            leader=leader.to_dict() if leader else None,
        )

    async def _view(self) -> ClusterView:
        return await load_view(self.store, self.keys, await self.coordinator.consul_health())

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return doc

    def _expected_epoch(self, request: web.Request, body: dict[str, Any]) -> int | None:
        value = body.get("expected_epoch")
        header = request.headers.get("If-Match")
        if value is None and header:
            value = header.strip().strip('"')
            try:
                value = int(value)
            except ValueError:
                raise ApiError(400, "bad_request", "If-Match must be an epoch number") from None
        if value is not None and type(value) is not int:
            raise ApiError(400, "bad_request", "expected_epoch must be an integer")
        return value

    @staticmethod
    def _check_epoch(view: ClusterView, expected: int | None) -> None:
        if expected is not None and expected != view.epoch:
            raise ApiError(
                409,
                "stale_epoch",
                f"the cluster is at epoch {view.epoch}, not {expected}: reload and retry",
                epoch=view.epoch,
            )

    def _wait(self, request: web.Request) -> float:
        text = request.query.get("wait")
        if text is None:
            return self.wait_timeout
        try:
            value = float(text)
        except ValueError:
            raise ApiError(400, "bad_request", "wait must be a number of seconds") from None
        if not 0 <= value <= 300:
            raise ApiError(400, "bad_request", "wait must be within 0..300 seconds")
        return value

    # ----------------------------------------------------------------- reads

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def health(self, request: web.Request) -> web.Response:
        leader = self.elector.leader()
        return _json({
            "status": "ok",
            "id": self.elector.instance_id,
            "role": "leader" if self.elector.is_leader() else "standby",
            "leader": leader.to_dict() if leader else None,
            "last_cycle": self.coordinator.last_sentence,
        })

    async def metrics(self, request: web.Request) -> web.Response:
        self.coordinator.metrics.leader.set(1 if self.elector.is_leader() else 0)
        return web.Response(
            body=self.coordinator.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(document())

    async def cluster(self, request: web.Request) -> web.Response:
        view = await self._view()
        this = {"id": self.elector.instance_id, "leader": self.elector.is_leader()}
        return _json(cluster_doc(view, self.elector.leader() or view.leader, this))

    async def nodes(self, request: web.Request) -> web.Response:
        view = await self._view()
        return _json({"epoch": view.epoch, "nodes": [node_doc(view, n) for n in view.nodes]})

    async def node(self, request: web.Request) -> web.Response:
        view = await self._view()
        node_id = request.match_info["node_id"]
        if node_id not in view.nodes:
            raise ApiError(404, "unknown_node", f"no node {node_id!r} in the cluster")
        return _json({"epoch": view.epoch, "node": node_doc(view, node_id)})

    async def shards(self, request: web.Request) -> web.Response:
        view = await self._view()
        return _json({"epoch": view.epoch, "shards": [shard_doc(view, s) for s in view.shards]})

    async def shard(self, request: web.Request) -> web.Response:
        view = await self._view()
        shard_id = request.match_info["shard_id"]
        if shard_id not in view.shards:
            raise ApiError(404, "unknown_shard", f"no shard {shard_id!r} in the cluster")
        return _json({"epoch": view.epoch, "shard": shard_doc(view, shard_id)})

    async def migrations(self, request: web.Request) -> web.Response:
        view = await self._view()
        now = self.clock()
        docs = migrations_doc(view, now)
        body: dict[str, Any] = {"epoch": view.epoch, "migrations": docs}
        if request.query.get("progress", "") not in ("", "0", "false"):
            body["progress"] = progress(docs, int(now * 1000))
        return _json(body)

    async def cancel_migration(self, request: web.Request) -> web.Response:
        """``DELETE /v1/migrations/<id>``: cancel the plan's pending migrations;
        a running one finishes (its slots are committed)."""
        mid = request.match_info["migration_id"]
        view = await self._view()
        if mid not in view.migrations:
            raise ApiError(404, "unknown_migration", f"no migration {mid!r}")
        ids = to_cancel(view, mid)
        running = [m.id for m in view.topology.migrations
                   if m.id == mid and m.state.value == "RUNNING"]
        if not ids and not running:
            raise ApiError(409, "finished", f"migration {mid} is finished", epoch=view.epoch)
        if not ids:
            return _json({"epoch": view.epoch, "cancelled": [], "finishing": running})
        docs = {cid: {**view.migrations[cid], "state": "CANCELLED"} for cid in ids}
        compares, ops, epoch = epoch_ops(
            self.keys, view, docs, "migration-cancel",
            f"operator cancelled {len(ids)} pending migration(s)", self.elector.instance_id,
            self.clock())
        fence = self.elector.fence()
        if fence is not None:
            compares.append(fence)
        if not await self.store.cas(compares, ops):
            raise ApiError(409, "conflict", "the cluster changed meanwhile: retry",
                           epoch=view.epoch)
        self.coordinator.wake()
        return _json({"epoch": epoch, "cancelled": ids, "finishing": running})

    async def history(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise ApiError(400, "bad_request", "limit must be an integer") from None
        if limit < 1:
            raise ApiError(400, "bad_request", "limit must be >= 1")
        view = await self._view()
        return _json({"epoch": view.epoch, "history": history_doc(view, limit)})

    async def intents(self, request: web.Request) -> web.Response:
        view = await self._view()
        return _json({"intents": [intent_doc(i) for i in reversed(list(view.intents.values()))]})

    async def intent(self, request: web.Request) -> web.Response:
        intent_id = request.match_info["intent_id"]
        try:
            kv = await self.store.get(intent_key(self.keys, intent_id))
        except ValueError:
            kv = None
        if kv is None:
            raise ApiError(404, "not_found", f"no intent {intent_id!r}")
        return _json({"intent": intent_doc(Intent.from_json(kv.value))})

    async def settings(self, request: web.Request) -> web.Response:
        kv = await self.store.get(self.keys.settings)
        view = await self._view()
        return _json({
            "settings": orjson.loads(view.settings.to_json()),
            "revision": kv.mod_revision if kv is not None else 0,
            "epoch": view.epoch,
        })

    # ----------------------------------------------------------------- intents

    async def hide(self, request: web.Request) -> web.Response:
        return await self._node_intent(request, IntentKind.HIDE)

    async def unhide(self, request: web.Request) -> web.Response:
        return await self._node_intent(request, IntentKind.UNHIDE)

    async def remove(self, request: web.Request) -> web.Response:
        return await self._node_intent(request, IntentKind.REMOVE)

    async def tag(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            tags = Tags.from_dict({k: v for k, v in body.items() if k not in _RESERVED})
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return await self._node_intent(request, IntentKind.TAG, body, tags)

    async def drain(self, request: web.Request) -> web.Response:
        """``POST /v1/nodes/<id>/drain``: replace the node in its shard (a new
        replica first, leadership moved if it is the primary), then take it out
        as a hidden spare; a spare is just hidden."""
        body = await self._body(request)
        unknown = set(body) - {"to", *_RESERVED}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        to = body.get("to") or ""
        if not isinstance(to, str):
            raise ApiError(400, "bad_request", "to must be a node id")
        node_id = request.match_info["node_id"]
        view = await self._view()
        shard = view.node(node_id).shard if node_id in view.nodes else ""
        now = self.clock()
        intent = Intent(id=new_intent_id(now), kind=IntentKind.MOVE, node=node_id, shard=shard,
                        nodes=(to,) if to else (), created=now, updated=now)
        return await self._submit(request, body, intent)

    async def move_shard(self, request: web.Request) -> web.Response:
        """``POST /v1/shards/<id>/move``: the shard's members replaced by
        ``nodes`` (spares; the first takes the primary's role)."""
        body = await self._body(request)
        unknown = set(body) - {"nodes", *_RESERVED}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        nodes = body.get("nodes")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
            raise ApiError(400, "bad_request", "nodes must be a non-empty list of node ids")
        now = self.clock()
        intent = Intent(id=new_intent_id(now), kind=IntentKind.MOVE,
                        shard=request.match_info["shard_id"], nodes=tuple(nodes), created=now,
                        updated=now)
        return await self._submit(request, body, intent)

    async def failover(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        target = body.get("target") or ""
        if not isinstance(target, str):
            raise ApiError(400, "bad_request", "target must be a node id")
        unknown = set(body) - {"target", *_RESERVED}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        now = self.clock()
        intent = Intent(
            id=new_intent_id(now),
            kind=IntentKind.FAILOVER,
            shard=request.match_info["shard_id"],
            target=target,
            created=now,
            updated=now,
        )
        return await self._submit(request, body, intent)

    async def rebalance(self, request: web.Request) -> web.Response:
        """``POST /v1/rebalance``: the plan of a scale out / scale in / rebalance.
        With ``dry_run`` it answers the plan; otherwise it writes it (202)."""
        body = await self._body(request)
        unknown = set(body) - {"kind", "nodes", "shard", "threshold", "dry_run", "by",
                               "measure", *_RESERVED}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        kind = body.get("kind")
        nodes = body.get("nodes") or []
        shard = body.get("shard") or ""
        threshold = body.get("threshold", 0.0)
        dry_run = body.get("dry_run", False)
        by = body.get("by", "slots")
        if by not in ("slots", "keys", "bytes"):
            raise ApiError(400, "bad_request", "by must be slots, keys or bytes")
        measure_sizes = body.get("measure", False)
        if type(measure_sizes) is not bool:
            raise ApiError(400, "bad_request", "measure must be a boolean")
        if kind not in ("scale_out", "scale_in", "rebalance"):
            raise ApiError(400, "bad_request", "kind must be scale_out, scale_in or rebalance")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ApiError(400, "bad_request", "nodes must be a list of node ids")
        if not isinstance(shard, str):
            raise ApiError(400, "bad_request", "shard must be a shard id")
        if type(threshold) not in (int, float) or not 0 <= threshold < 1:
            raise ApiError(400, "bad_request", "threshold must be a number within [0, 1)")
        if type(dry_run) is not bool:
            raise ApiError(400, "bad_request", "dry_run must be a boolean")
        expected = self._expected_epoch(request, body)
        view = await self._view()
        self._check_epoch(view, expected)
        # keys and bytes per slot: asked of the primaries when wanted (by, measure)
        sizes = await measure(view) if measure_sizes or by != "slots" else None
        try:
            planned = plan_from_view(view, kind, nodes=nodes, shard=shard,
                                     threshold=float(threshold),
                                     keys=sizes.keys if sizes else None,
                                     bytes_=sizes.bytes if sizes else None, by=by)
        except PlanError as exc:
            status = 404 if exc.code in ("unknown_node", "unknown_shard") else (
                400 if exc.code == "bad_request" else 409)
            raise ApiError(status, exc.code, str(exc), epoch=view.epoch) from None
        if dry_run:
            return _json({"epoch": view.epoch, "dry_run": True, "plan": planned.to_dict()})
        busy = unfinished(view, self.clock(), self.coordinator.policy)
        if busy:
            raise ApiError(409, "migration_in_progress",
                           f"{len(busy)} migration(s) not finished yet", epoch=view.epoch)
        return await self._start_plan(view, planned)

    async def _start_plan(self, view: ClusterView, planned: Any) -> web.Response:
        """Write the plan in one transaction (epoch bump): its ``PENDING``
        migrations, the new shards of a scale out, the leaving primaries of a
        scale in (``MIGRATING``). The loop runs them."""
        epoch = view.epoch + 1
        records = migration_records(planned.moves, epoch, view.settings.migration_batch)
        if not records and not planned.new_shards:
            return _json({"epoch": view.epoch, "dry_run": False, "plan": planned.to_dict(),
                          "migrations": []})
        docs = new_migration_docs(records, int(self.clock() * 1000), epoch, planned.kind)
        writes = plan_writes(view, view.settings, planned)
        action = StartPlan(
            why=f"operator: {planned.kind}: {len(planned.moves)} slot(s) in {len(records)} "
            f"migration(s)" + (f", {len(planned.new_shards)} new shard(s)"
                               if planned.new_shards else ""),
            writes=writes, plan_kind=planned.kind, migrations=tuple(m.id for m in records),
        )
        try:
            fold(view, view.topology, writes)
        except TopologyError as exc:
            raise ApiError(409, "invalid_plan", f"the plan would give an invalid view: {exc}",
                           epoch=view.epoch) from None
        if self.elector.fence() is None:
            await self._require_leader()
        txn = plan_txn(self.coordinator.reconciler, view, action, docs)
        if not await self.store.cas(txn.compares, txn.ops):
            current = await self._view()
            raise ApiError(409, "conflict", "the cluster changed meanwhile: retry",
                           epoch=current.epoch)
        log.info("planned %s: %d migration(s) at epoch %d", planned.kind, len(records), txn.epoch)
        self.coordinator.wake()
        return _json({"epoch": txn.epoch, "dry_run": False, "plan": planned.to_dict(),
                      "migrations": [m.id for m in records]}, status=202)

    async def _node_intent(
        self,
        request: web.Request,
        kind: IntentKind,
        body: dict[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> web.Response:
        if body is None:
            body = await self._body(request)
            unknown = set(body) - set(_RESERVED)
            if unknown:
                raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        now = self.clock()
        intent = Intent(
            id=new_intent_id(now),
            kind=kind,
            node=request.match_info["node_id"],
            tags=tags or Tags(),
            created=now,
            updated=now,
        )
        return await self._submit(request, body, intent)

    async def _submit(
        self, request: web.Request, body: dict[str, Any], intent: Intent
    ) -> web.Response:
        expected = self._expected_epoch(request, body)
        wait = self._wait(request)
        view = await self._view()
        self._check_epoch(view, expected)
        refused = refusal(view, intent)
        if refused is not None:
            raise ApiError(refused.status, refused.code, refused.message, epoch=view.epoch)
        key = intent_key(self.keys, intent.id)
        compares = [Compare.absent(key)]
        fence = self.elector.fence()
        if fence is None:
            await self._require_leader()
        else:
            compares.append(fence)
        if expected is not None:
            compares.append(Compare.unchanged(self.keys.epoch, view.kv(self.keys.epoch)))
        if not await self.store.cas(compares, [Put(key, intent.to_json())]):
            current = await self._view()
            self._check_epoch(current, expected)
            await self._require_leader()
            raise ApiError(409, "conflict", "the cluster changed meanwhile: retry",
                           epoch=current.epoch)
        log.info("recorded intent %s: %s", intent.id, intent.subject)
        self.coordinator.wake()
        return await self._outcome(intent, wait)

    async def _outcome(self, intent: Intent, wait: float) -> web.Response:
        key = intent_key(self.keys, intent.id)
        location = f"/v1/intents/{intent.id}"
        current = intent
        deadline = time.monotonic() + wait
        while True:
            kv = await self.store.get(key)
            if kv is not None:
                current = Intent.from_json(kv.value)
            if current.state is IntentState.DONE:
                return _json({"intent": intent_doc(current), "epoch": current.epoch},
                             headers={"Location": location})
            if current.state is IntentState.FAILED:
                raise ApiError(current.status or 409, current.error or "failed", current.message,
                               intent=intent_doc(current))
            if time.monotonic() >= deadline:
                return _json({"intent": intent_doc(current), "location": location,
                              "message": "recorded; not finished yet"},
                             status=202, headers={"Location": location})
            await asyncio.sleep(0.05)

    # ----------------------------------------------------------------- settings

    async def patch_settings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        patch = {k: v for k, v in body.items() if k not in _RESERVED}
        if "bootstrap_members" in patch and isinstance(patch["bootstrap_members"], list):
            patch["bootstrap_members"] = tuple(patch["bootstrap_members"])
        return await self._write_settings(request, body, patch)

    async def pause(self, request: web.Request) -> web.Response:
        return await self._write_settings(request, {}, {"pause": True})

    async def resume(self, request: web.Request) -> web.Response:
        return await self._write_settings(request, {}, {"pause": False})

    async def _write_settings(
        self, request: web.Request, body: dict[str, Any], patch: dict[str, Any]
    ) -> web.Response:
        expected = self._expected_epoch(request, body)
        expected_rev = body.get("expected_revision")
        if expected_rev is not None and type(expected_rev) is not int:
            raise ApiError(400, "bad_request", "expected_revision must be an integer")
        view = await self._view()
        self._check_epoch(view, expected)
        kv = view.kv(self.keys.settings)
        revision = kv.mod_revision if kv is not None else 0
        if expected_rev is not None and expected_rev != revision:
            raise ApiError(409, "stale_settings",
                           f"settings are at revision {revision}, not {expected_rev}",
                           epoch=view.epoch, revision=revision)
        try:
            merged = view.settings.merged(patch)
        except (RecordError, ValueError) as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        compares = [Compare.unchanged(self.keys.settings, kv)]
        fence = self.elector.fence()
        if fence is not None:
            compares.append(fence)
        if expected is not None:
            compares.append(Compare.unchanged(self.keys.epoch, view.kv(self.keys.epoch)))
        if not await self.store.cas(compares, [Put(self.keys.settings, merged.to_json())]):
            raise ApiError(409, "stale_settings", "settings or the cluster changed meanwhile: "
                           "reload and retry", epoch=view.epoch)
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in patch.items()))
        self.coordinator.wake()
        kv = await self.store.get(self.keys.settings)
        return _json({
            "settings": orjson.loads(merged.to_json()),
            "revision": kv.mod_revision if kv is not None else 0,
            "epoch": view.epoch,
        })


__all__ = ["Api", "ApiError"]
