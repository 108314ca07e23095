"""The admin API on real servers: two coordinator services (leader and
standby) on free ports against a real etcd, a seeded cluster, aiohttp requests.

Every documented error code is checked, and that an erroneous request changes
nothing (etcd's revision does not move); writes go through intents and the loop.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from clusterstate.records import Status
from clusterstate.topology import NodeState, Role
from coordinator.config import Config
from coordinator.main import Service
from coordinator.openapi import ROUTES, document
from tests.support import EtcdServer, async_wait_until, free_port
from tests.test_coordinator_loop import seed
from tests.test_planner import Cluster, N, S, healthy

TOKEN = "s3cret"
_names = itertools.count()


@dataclass
class Running:
    cluster: Cluster
    leader: Service
    standby: Service
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.leader.config.api_url

    @property
    def standby_url(self) -> str:
        return self.standby.config.api_url

    async def revision(self) -> int:
        return (await self.leader.store.load(self.cluster.keys.root)).revision

    async def call(self, method: str, path: str, body: Any = None, *, url: str | None = None,
                   token: str | None = TOKEN, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with self.http.request(method, (url or self.url) + path, data=data,
                                     headers=h) as resp:
            ctype = resp.headers.get("Content-Type", "")
            doc = await resp.json() if "json" in ctype else await resp.text()
            return resp.status, doc

    async def status(self, i: int, **fields: Any) -> None:
        base = {"addr": f"10.0.0.{i}", "port": 7000, "admin_port": 17000}
        await self.leader.store.put(self.cluster.keys.status(N(i)),
                                    Status(**{**base, **fields}).to_json())


def service(etcd: EtcdServer, cluster: str, name: str, **overrides: Any) -> Service:
    config = Config(cluster=cluster, etcd=etcd.endpoint, http_port=free_port(), token=TOKEN,
                    instance_id=name, leader_ttl=2, etcd_timeout=0.5, loop_wait=0.2,
                    wait_timeout=5.0, **overrides)
    return Service(config)


@contextlib.asynccontextmanager
async def running(etcd: EtcdServer, c: Cluster, **overrides: Any) -> AsyncIterator[Running]:
    """A seeded cluster with a leading and a standby coordinator."""
    leader = service(etcd, c.keys.cluster, "coord-a", **overrides)
    standby = service(etcd, c.keys.cluster, "coord-b", **overrides)
    await seed(leader.store, c)
    await leader.start()
    try:
        await async_wait_until(leader.elector.is_leader, timeout=10, what="leadership")
        await standby.start()
        try:
            await async_wait_until(lambda: standby.elector.known_leader is not None, timeout=5)
            await async_wait_until(lambda: leader.coordinator.last_sentence.startswith("nothing"),
                                   timeout=5, what="a quiet cycle")
            async with aiohttp.ClientSession() as http:
                yield Running(c, leader, standby, http)
        finally:
            await standby.stop()
    finally:
        await leader.stop()


def fresh(c: Cluster) -> Cluster:
    out = Cluster(f"api{next(_names)}")
    out.values = {k.replace(c.keys.root, out.keys.root): v for k, v in c.values.items()}
    return out


@pytest.fixture
async def api(etcd: EtcdServer) -> AsyncIterator[Running]:
    c = fresh(healthy(shards=2, replicas=2))
    c.node(22, shard=2, role=Role.REPLICA, state=NodeState.STANDBY, nofailover=True)
    async with running(etcd, c) as r:
        yield r


# =========================================================================== reads


async def test_reads(api: Running) -> None:
    status, c = await api.call("GET", "/v1/cluster", token=None)
    assert status == 200
    assert (c["epoch"], c["paused"], c["leader"]["id"]) == (10, False, "coord-a")
    assert c["leader"]["api"] == api.url
    assert len(c["shards"]) == 2 and len(c["nodes"]) == 6
    assert c["counts"]["states"]["ACTIVE"] == 2
    status, nodes = await api.call("GET", "/v1/nodes")
    by_id = {n["id"]: n for n in nodes["nodes"]}
    assert by_id[N(10)]["role"] == "primary" and by_id[N(10)]["alive"] is True
    assert by_id[N(11)]["lag"] == 0 and by_id[N(11)]["status"]["repl_offset"] == 5000
    status, one = await api.call("GET", f"/v1/nodes/{N(11)}")
    assert status == 200 and one["node"]["shard"] == S(1)
    status, shards = await api.call("GET", "/v1/shards")
    assert {s["id"]: s["lease"] for s in shards["shards"]} == {S(1): N(10), S(2): N(20)}
    status, one = await api.call("GET", f"/v1/shards/{S(2)}")
    assert one["shard"]["slot_count"] == 8192
    assert (await api.call("GET", "/v1/migrations"))[1] == {"epoch": 10, "migrations": []}
    assert (await api.call("GET", "/v1/history"))[1] == {"epoch": 10, "history": []}
    status, s = await api.call("GET", "/v1/settings")
    assert s["settings"]["replicas"] == 2 and s["revision"] > 0
    status, h = await api.call("GET", "/health")
    assert (h["role"], h["id"]) == ("leader", "coord-a")
    # the standby serves reads too
    status, c2 = await api.call("GET", "/v1/cluster", url=api.standby_url)
    assert status == 200 and c2["epoch"] == 10 and c2["coordinator"]["leader"] is False
    status, page = await api.call("GET", "/")
    assert status == 200 and "<table id=\"shards\">" in page


async def test_metrics(api: Running) -> None:
    status, text = await api.call("GET", "/metrics")
    assert status == 200
    for line in ("slotkeeper_epoch 10.0", "slotkeeper_coordinator_leader 1.0",
                 'slotkeeper_nodes{health="online",state="ACTIVE"} 2.0',
                 'slotkeeper_failovers_total{kind="automatic"} 0.0', "slotkeeper_shards 2.0"):
        assert line in text, line
    for name in ("slotkeeper_cycle_seconds_bucket", "slotkeeper_etcd_errors_total",
                 "slotkeeper_cycles_total"):
        assert name in text
    status, text = await api.call("GET", "/metrics", url=api.standby_url)
    assert "slotkeeper_coordinator_leader 0.0" in text


async def test_openapi_matches_the_routes(api: Running) -> None:
    status, doc = await api.call("GET", "/v1/openapi.json")
    assert status == 200 and doc == document()
    served = {
        (r.method, r.resource.canonical)
        for r in api.leader.api.app().router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == described == {(r.method, r.path) for r in ROUTES}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if any(r.write for r in ROUTES if r.path == path and r.method.lower() == method):
                assert {"401", "403", "409", "503"} <= set(op["responses"]), (method, path)


# =========================================================================== errors


HIDE_11 = ("POST", f"/v1/nodes/{N(11)}/hide")

ERRORS: list[tuple[str, tuple[str, str], dict[str, Any], int, str]] = [
    ("no token", HIDE_11, {"token": None}, 401, "unauthorized"),
    ("wrong token", HIDE_11, {"token": "nope"}, 403, "forbidden"),
    ("bad json", HIDE_11, {"raw": b"{nope"}, 400, "bad_json"),
    ("not an object", HIDE_11, {"raw": b"[1]"}, 400, "bad_request"),
    ("unknown field", HIDE_11, {"body": {"colour": "red"}}, 400, "bad_request"),
    ("bad expected_epoch", HIDE_11, {"body": {"expected_epoch": "ten"}}, 400, "bad_request"),
    ("bad wait", ("POST", f"/v1/nodes/{N(11)}/hide?wait=x"), {}, 400, "bad_request"),
    ("unknown node", ("POST", f"/v1/nodes/{N(99)}/hide"), {}, 404, "unknown_node"),
    ("unknown node tag", ("PATCH", f"/v1/nodes/{N(99)}"), {"body": {"zone": "z"}}, 404,
     "unknown_node"),
    ("bad tag", ("PATCH", f"/v1/nodes/{N(11)}"), {"body": {"priority": "high"}}, 400,
     "bad_request"),
    ("no tag", ("PATCH", f"/v1/nodes/{N(11)}"), {"body": {}}, 400, "bad_request"),
    ("unknown shard", ("POST", f"/v1/shards/{S(9)}/failover"), {}, 404, "unknown_shard"),
    ("unknown target", ("POST", f"/v1/shards/{S(1)}/failover"), {"body": {"target": N(99)}},
     404, "unknown_node"),
    ("stale epoch", HIDE_11, {"body": {"expected_epoch": 3}}, 409, "stale_epoch"),
    ("stale If-Match", HIDE_11, {"headers": {"If-Match": '"9"'}}, 409, "stale_epoch"),
    ("hide a slot-owning primary", ("POST", f"/v1/nodes/{N(10)}/hide"), {}, 409,
     "primary_owns_slots"),
    ("remove a primary", ("POST", f"/v1/nodes/{N(20)}/remove"), {}, 409, "is_primary"),
    ("failover to the primary", ("POST", f"/v1/shards/{S(1)}/failover"),
     {"body": {"target": N(10)}}, 409, "not_eligible"),
    ("failover to a nofailover replica", ("POST", f"/v1/shards/{S(2)}/failover"),
     {"body": {"target": N(22)}}, 409, "not_eligible"),
    ("stale settings revision", ("PATCH", "/v1/settings"),
     {"body": {"replicas": 3, "expected_revision": 1}}, 409, "stale_settings"),
    ("bad settings", ("PATCH", "/v1/settings"), {"body": {"replicas": -1}}, 400, "bad_request"),
    ("unknown setting", ("PATCH", "/v1/settings"), {"body": {"colour": 1}}, 400, "bad_request"),
    ("timing rule", ("PATCH", "/v1/settings"), {"body": {"lease_ttl": 1, "keepalive_interval": 1}},
     400, "bad_request"),
    ("unknown route", ("GET", "/v1/nope"), {}, 404, "not_found"),
    ("wrong method", ("DELETE", "/v1/cluster"), {}, 405, "method_not_allowed"),
    ("unknown node read", ("GET", f"/v1/nodes/{N(99)}"), {}, 404, "unknown_node"),
    ("unknown intent", ("GET", "/v1/intents/1700000000000-00000000"), {}, 404, "not_found"),
]


@pytest.mark.parametrize(("what", "route", "kwargs", "status", "code"), ERRORS,
                         ids=[e[0] for e in ERRORS])
async def test_errors_have_their_code_and_change_nothing(
    api: Running, what: str, route: tuple[str, str], kwargs: dict[str, Any], status: int,
    code: str,
) -> None:
    before = await api.revision()
    kwargs = dict(kwargs)
    got, doc = await api.call(route[0], route[1], kwargs.pop("body", None), **kwargs)
    assert (got, doc["code"]) == (status, code), doc
    assert doc["status"] == status and doc["message"]
    if status == 409 and code != "stale_settings":
        assert doc["epoch"] == 10
    assert await api.revision() == before


async def test_a_standby_refuses_writes_with_the_leaders_address(api: Running) -> None:
    before = await api.revision()
    status, doc = await api.call("POST", f"/v1/nodes/{N(11)}/hide", url=api.standby_url)
    assert (status, doc["code"]) == (503, "not_leader")
    assert doc["leader"] == {"id": "coord-a", "api": api.url}
    assert api.url in doc["message"]
    status, doc = await api.call("POST", "/v1/pause", url=api.standby_url, token=None)
    assert status == 401  # the token is checked first
    assert await api.revision() == before


# =========================================================================== writes


async def test_hide_unhide_and_tag_go_through_intents(api: Running) -> None:
    status, doc = await api.call("POST", f"/v1/nodes/{N(11)}/hide", {"expected_epoch": 10})
    assert status == 200, doc
    assert (doc["epoch"], doc["intent"]["state"], doc["intent"]["kind"]) == (11, "done", "hide")
    node = (await api.call("GET", f"/v1/nodes/{N(11)}"))[1]["node"]
    assert (node["hidden"], node["hidden_by"]) == (True, "operator")
    status, doc = await api.call("POST", f"/v1/nodes/{N(11)}/unhide", headers={"If-Match": "11"})
    assert status == 200 and doc["epoch"] == 12
    status, doc = await api.call("PATCH", f"/v1/nodes/{N(12)}",
                                 {"zone": "z2", "priority": 3, "nofailover": True})
    assert status == 200
    node = (await api.call("GET", f"/v1/nodes/{N(12)}"))[1]["node"]
    assert (node["zone"], node["priority"], node["nofailover"]) == ("z2", 3, True)
    history = (await api.call("GET", "/v1/history?limit=2"))[1]["history"]
    assert [h["epoch"] for h in history] == [13, 12]
    assert history[0]["kind"] == "flags" and "tag node" in history[0]["why"]
    intents = (await api.call("GET", "/v1/intents"))[1]["intents"]
    assert [i["kind"] for i in intents] == ["tag", "unhide", "hide"]


async def test_remove_a_replica(api: Running) -> None:
    status, doc = await api.call("POST", f"/v1/nodes/{N(12)}/remove")
    assert status == 200 and "hidden spare" in doc["intent"]["message"]
    shard = (await api.call("GET", f"/v1/shards/{S(1)}"))[1]["shard"]
    assert shard["replicas"] == [N(11)]


async def test_settings_pause_and_resume(api: Running) -> None:
    status, s = await api.call("GET", "/v1/settings")
    status, doc = await api.call("PATCH", "/v1/settings",
                                 {"max_lag_bytes": 4096, "expected_revision": s["revision"]})
    assert status == 200 and doc["settings"]["max_lag_bytes"] == 4096
    assert doc["revision"] > s["revision"]
    status, doc = await api.call("POST", "/v1/pause")
    assert status == 200 and doc["settings"]["pause"] is True
    assert (await api.call("GET", "/v1/cluster"))[1]["paused"] is True
    status, doc = await api.call("POST", "/v1/resume")
    assert doc["settings"]["pause"] is False and doc["settings"]["max_lag_bytes"] == 4096


async def test_failover_answers_202_then_completes_once_caught_up(api: Running) -> None:
    status, doc = await api.call("POST", f"/v1/shards/{S(1)}/failover?wait=0",
                                 {"target": N(11)})
    assert status == 202, doc
    location = doc["location"]
    assert location.startswith("/v1/intents/")

    async def running_intent() -> dict[str, Any] | None:
        intent = (await api.call("GET", location))[1]["intent"]
        return intent if intent["state"] == "running" else None

    intent = await async_wait_until(running_intent, timeout=5)
    assert intent["chosen"] == N(11)
    shard = (await api.call("GET", f"/v1/shards/{S(1)}"))[1]["shard"]
    assert shard["handoff"]["target"] == N(11)
    # the primary's sidecar fences writes; the target catches up to its offset
    epoch = (await api.call("GET", "/v1/cluster"))[1]["epoch"]
    await api.status(10, role_applied="primary", writable=False, repl_offset=7000,
                     epoch_applied=epoch)
    await api.status(11, role_applied="replica", repl_offset=7000, epoch_applied=epoch)

    async def done() -> dict[str, Any] | None:
        intent = (await api.call("GET", location))[1]["intent"]
        return intent if intent["state"] == "done" else None

    intent = await async_wait_until(done, timeout=5)
    assert "took over" in intent["message"]
    shard = (await api.call("GET", f"/v1/shards/{S(1)}"))[1]["shard"]
    assert shard["primary"] == N(11) and N(10) in shard["replicas"] and shard["handoff"] is None
    status, text = await api.call("GET", "/metrics")
    assert 'slotkeeper_failovers_total{kind="transfer"} 1.0' in text


async def test_without_a_token_writes_are_open(etcd: EtcdServer) -> None:
    c = fresh(healthy())
    async with running(etcd, c) as r:
        r.leader.api.token = ""
        status, doc = await r.call("POST", f"/v1/nodes/{N(11)}/hide", token=None)
        assert status == 200, doc
