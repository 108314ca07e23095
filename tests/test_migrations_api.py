"""``POST /v1/rebalance`` dry runs and the ``rebalance|add-shard|remove-shard
--dry-run`` commands against a real coordinator and a real etcd: the plan is
answered and etcd does not change."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest

from coordinator import cli
from coordinator.openapi import document
from tests.support import EtcdServer
from tests.test_coordinator_api import TOKEN, Running, fresh, running
from tests.test_planner import N, S, healthy


@pytest.fixture
async def api(etcd: EtcdServer) -> AsyncIterator[Running]:
    c = healthy(shards=2, replicas=1)
    for i in (40, 41):  # two spare ONLINE nodes on their own hosts
        c.node(i).status(i)
    async with running(etcd, fresh(c)) as r:
        yield r


async def dry(api: Running, **body: object) -> tuple[int, dict]:
    before = await api.revision()
    status, doc = await api.call("POST", "/v1/rebalance", {"dry_run": True, **body})
    assert await api.revision() == before, "a dry run changed etcd"
    return status, doc


async def test_scale_out_dry_run_plans_a_new_shard_and_changes_nothing(api: Running) -> None:
    status, doc = await dry(api, kind="scale_out")
    assert status == 200, doc
    plan = doc["plan"]
    assert doc["dry_run"] is True and doc["epoch"] == 10
    assert plan["kind"] == "scale_out" and len(plan["new_shards"]) == 1
    new = plan["new_shards"][0]
    assert {new["primary"], *new["replicas"]} == {N(40), N(41)}
    counts = {s["id"]: (s["before"], s["after"]) for s in plan["shards"]}
    assert counts[S(1)] == (8192, 5462) and counts[S(2)] == (8192, 5461)
    assert counts[new["id"]] == (0, 5461)
    assert plan["slots_to_move"] == 5461 == sum(m["count"] for m in plan["moves"])
    assert all(m["to_shard"] == new["id"] for m in plan["moves"])
    assert plan["keys_to_move"] is None and plan["bytes_to_move"] is None


async def test_scale_out_with_given_nodes(api: Running) -> None:
    status, doc = await dry(api, kind="scale_out", nodes=[N(41)])
    assert status == 200, doc
    assert doc["plan"]["new_shards"][0]["primary"] == N(41)
    assert doc["plan"]["new_shards"][0]["replicas"] == []
    status, doc = await dry(api, kind="scale_out", nodes=[N(10)])
    assert (status, doc["code"]) == (409, "not_eligible")
    status, doc = await dry(api, kind="scale_out", nodes=[N(99)])
    assert (status, doc["code"]) == (404, "unknown_node")


async def test_scale_in_and_rebalance_dry_runs(api: Running) -> None:
    status, doc = await dry(api, kind="scale_in", shard=S(2))
    assert status == 200, doc
    plan = doc["plan"]
    assert plan["leaving"] == [S(2)] and plan["slots_to_move"] == 8192
    assert plan["moves"] == [{"from_shard": S(2), "to_shard": S(1), "slots": [[8192, 16383]],
                              "count": 8192}]
    status, doc = await dry(api, kind="rebalance")
    assert status == 200 and doc["plan"]["slots_to_move"] == 0 and doc["plan"]["notes"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "grow"}, 400, "bad_request"),
        ({"kind": "scale_in"}, 400, "bad_request"),
        ({"kind": "scale_in", "shard": S(9)}, 404, "unknown_shard"),
        ({"kind": "rebalance", "threshold": 2}, 400, "bad_request"),
        ({"kind": "rebalance", "colour": 1}, 400, "bad_request"),
        ({"kind": "rebalance", "expected_epoch": 3}, 409, "stale_epoch"),
    ],
)
async def test_rebalance_errors_change_nothing(api: Running, body: dict, status: int,
                                               code: str) -> None:
    got, doc = await dry(api, **body)
    assert (got, doc["code"]) == (status, code), doc


async def test_running_a_scale_out_writes_the_new_shard_and_its_migrations(
    api: Running,
) -> None:
    from coordinator.view import load_view

    status, doc = await api.call("POST", "/v1/rebalance", {"kind": "scale_out"})
    assert status == 202, doc
    new = doc["plan"]["new_shards"][0]
    v = await load_view(api.leader.store, api.cluster.keys)
    assert doc["epoch"] >= 11 and v.epoch >= doc["epoch"]
    shard = v.shard(new["id"])
    assert shard is not None and shard.primary == new["primary"]
    assert shard.replicas == tuple(new["replicas"])
    primary = v.node(new["primary"])
    assert primary.role.value == "primary" and primary.state.value == "MIGRATING"
    assert primary.replica_id > 0 and primary.shard == new["id"]
    for r in new["replicas"]:
        rec = v.node(r)
        assert (rec.role.value, rec.state.value, rec.health.value) == (
            "replica", "RECOVERING", "loading")
    # 5461 slots in migrations of settings.migration_batch (64) slots, from two sources
    mine = [m for m in v.topology.migrations if m.id in set(doc["migrations"])]
    assert len(mine) == len(doc["migrations"]) == -(-2731 // 64) + -(-2730 // 64)
    assert all(m.to_shard == new["id"] for m in mine)
    assert sum(hi - lo + 1 for m in mine for lo, hi in m.slots) == 5461
    assert all(v.migrations[m.id]["plan_kind"] == "scale_out" for m in mine)
    # a second plan waits for this one
    status, doc = await api.call("POST", "/v1/rebalance", {"kind": "rebalance"})
    assert (status, doc["code"]) == (409, "migration_in_progress")


async def test_running_a_balanced_rebalance_writes_nothing(api: Running) -> None:
    before = await api.revision()
    status, doc = await api.call("POST", "/v1/rebalance", {"kind": "rebalance"})
    assert status == 200 and doc["migrations"] == [] and doc["plan"]["slots_to_move"] == 0
    assert await api.revision() == before


async def test_rebalance_needs_the_token_and_is_documented(api: Running) -> None:
    status, doc = await api.call("POST", "/v1/rebalance", {"kind": "rebalance"}, token=None)
    assert status == 401
    op = document()["paths"]["/v1/rebalance"]["post"]
    assert op["operationId"] == "rebalance" and "202" in op["responses"]


# --------------------------------------------------------------------------- CLI


async def sk(command: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(cli.run, command, list(argv), out)
    return code, out.getvalue()


def flags(api: Running) -> list[str]:
    return ["--coordinator", api.url, "--token", TOKEN]


async def test_cli_dry_runs_print_the_plan(api: Running) -> None:
    before = await api.revision()
    code, text = await sk("add-shard", *flags(api), "--dry-run")
    assert code == 0, text
    assert text.startswith("scale_out: 5461 slot(s) to move, keys unknown, bytes unknown")
    assert "FROM" in text and "BEFORE" in text and "new shard" in text
    code, text = await sk("add-shard", *flags(api), "--dry-run", "--nodes", N(40)[:6])
    assert code == 0 and f"primary {N(40)[:8]}" in text
    code, text = await sk("remove-shard", *flags(api), "--dry-run", S(2)[:6])
    assert code == 0 and "8192-16383" in text and "leaves" in text
    code, text = await sk("rebalance", *flags(api), "--dry-run", "--json")
    assert code == 0 and json.loads(text)["plan"]["slots_to_move"] == 0
    assert await api.revision() == before
