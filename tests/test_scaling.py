"""Scale out, scale in and cancel on the whole stack (DESIGN §5; docs/rebalancing.md),
real processes as `slotkeeper up --primaries 2 --replicas 1 --spares 2` runs them,
under a continuous redis-py ``RedisCluster`` workload whose every acknowledged
write is read back afterwards.

Each test starts and ends with 2 shards and 2 spare nodes (a scale out makes the
spares a third shard, a scale in dissolves it again). Faults: kill -9 of the
source primary, of the target primary and of the leading coordinator while a plan
runs; the plan still ends with every slot moved and nothing lost. The settings
use 512 slots per migration so a plan is about a dozen migrations, and
``min_replicas_to_ack 1`` so that killing a primary loses nothing to replication lag.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.cluster

from tests.stack_fixtures import Stack, start_stack
from tests.support import LOOPBACK, wait_until

TOKEN = "scaling-test-token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("scaling"), primaries=2, replicas=1, spares=2,
                     token=TOKEN) as s:
        s.wait_healthy()
        # min_replicas_to_ack 1: a primary killed mid-plan loses no acknowledged write
        # to replication lag, so anything lost would be the migration's fault
        status, doc = s.write("PATCH", "/v1/settings",
                              {"migration_batch": 512, "min_replicas_to_ack": 1})
        assert status == 200, doc
        s.wait_healthy()
        s.record_processes()
        yield s


@pytest.fixture
def whole(stack: Stack) -> Iterator[Stack]:
    """The shared stack with 2 shards and 2 spares before and after the test."""
    stack.heal()
    stack.wait_healthy(timeout=90)
    yield stack
    stack.heal()
    _back_to_two_shards(stack)
    stack.wait_healthy(timeout=90)


def _cluster_client(s: Stack) -> redis.cluster.RedisCluster:
    """A cluster client that knows every node (any of them may be down a while)."""
    nodes = [redis.cluster.ClusterNode(LOOPBACK, s.port(i)) for i in range(s.nodes_count)]
    return redis.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5)


class Workload(threading.Thread):
    """SETs new keys and GETs written ones through RedisCluster until stopped;
    remembers every acknowledged write and checks every read."""

    def __init__(self, s: Stack, prefix: str) -> None:
        super().__init__(daemon=True)
        self.rc = _cluster_client(s)
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self.unsure: set[str] = set()  # a write that raised: either value may be there
        self.errors: list[str] = []
        self.stale: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            key, value = f"{self.prefix}:{i % 4000}", f"v{i}"
            try:
                self.rc.set(key, value)
                self.acked[key] = value
                self.unsure.discard(key)
            except redis.RedisError as exc:
                self.errors.append(repr(exc))
                self.unsure.add(key)
            if i % 7 == 0 and self.acked:
                probe = f"{self.prefix}:{(i * 31) % min(i + 1, 4000)}"
                if probe in self.acked and probe not in self.unsure:
                    try:
                        got = self.rc.get(probe)
                        if got is not None and got.decode() != self.acked[probe]:
                            self.stale.append(probe)
                    except redis.RedisError as exc:
                        self.errors.append(repr(exc))
            i += 1
            time.sleep(0.002)

    def stop_and_verify(self, s: Stack) -> None:
        self.halt.set()
        self.join(timeout=30)
        rc = _cluster_client(s)
        try:
            keys = sorted(self.acked)
            pipe = rc.pipeline()
            for k in keys:
                pipe.get(k)
            got = dict(zip(keys, pipe.execute(), strict=True))
        finally:
            rc.close()
            self.rc.close()
        lost = [k for k in keys if k not in self.unsure
                and (got[k] is None or got[k].decode() != self.acked[k])]
        assert len(keys) > 20, "the workload wrote too little"
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
        assert not self.stale, f"stale reads: {self.stale[:3]}"


def _write(s: Stack, method: str, path: str, body: Any) -> tuple[int, Any]:
    """An API write, again after a lost compare-and-set (409 ``conflict``: the loop
    wrote meanwhile, as an operator's script would retry)."""
    for _ in range(10):
        status, doc = s.write(method, path, body)
        if not (status == 409 and isinstance(doc, dict) and doc.get("code") == "conflict"):
            break
        time.sleep(0.2)
    return status, doc


def _plan(s: Stack, body: dict[str, Any]) -> dict[str, Any]:
    status, doc = _write(s, "POST", "/v1/rebalance", body)
    assert status == 202, doc
    return doc


def _states(s: Stack, ids: list[str]) -> dict[str, str]:
    docs = s.request("GET", "/v1/migrations")[1]["migrations"]
    return {m["id"]: m["state"] for m in docs if m["id"] in set(ids)}


def _wait_plan(s: Stack, ids: list[str], timeout: float = 180) -> dict[str, str]:
    def over() -> dict[str, str] | None:
        states = _states(s, ids)
        if len(states) == len(ids) and all(v in ("DONE", "CANCELLED") for v in states.values()):
            return states
        return None

    result: dict[str, str] = wait_until(over, timeout=timeout, interval=0.2,
                                        what="the plan's migrations to finish")
    return result


def _wait_some_done(s: Stack, ids: list[str]) -> None:
    wait_until(lambda: list(_states(s, ids).values()).count("DONE") >= 2
               and "RUNNING" in _states(s, ids).values(), timeout=60, interval=0.05,
               what="a plan half-way")


def _running(s: Stack, ids: list[str]) -> dict[str, Any]:
    """A migration of the plan while it runs."""
    def one() -> dict[str, Any] | None:
        return next((m for m in s.request("GET", "/v1/migrations")[1]["migrations"]
                     if m["id"] in set(ids) and m["state"] == "RUNNING"), None)

    found: dict[str, Any] = wait_until(one, timeout=60, interval=0.02,
                                       what="a running migration")
    return found


def _slot_owners(s: Stack) -> dict[str, int]:
    return {sh["id"]: sum(hi - lo + 1 for lo, hi in sh["slots"]) for sh in s.cluster()["shards"]}


def _new_shard(s: Stack, before: set[str]) -> str:
    return next(sid for sid in _slot_owners(s) if sid not in before)


def _back_to_two_shards(s: Stack) -> None:
    """Scale in until 2 shards are left (after a failed test too)."""
    for _ in range(3):
        try:
            owners = _slot_owners(s)
        except Exception:
            return
        if len(owners) <= 2:
            return
        ids = [m["id"] for m in s.request("GET", "/v1/migrations")[1]["migrations"]
               if m["state"] in ("PENDING", "RUNNING")]
        if ids:
            _wait_plan(s, ids)
            continue
        victim = min(owners, key=lambda sid: owners[sid])
        status, doc = s.write("POST", "/v1/rebalance", {"kind": "scale_in", "shard": victim})
        if status == 202:
            _wait_plan(s, doc["migrations"])
        wait_until(lambda: len(_slot_owners(s)) <= 2, timeout=60, what="the shard dissolved")


def _settled(s: Stack, timeout: float = 90) -> None:
    """Every node alive and online, every shard led by its lease holder (any
    number of shards)."""
    def ok() -> bool:
        doc = s.cluster()
        return all(n.get("alive") and n["health"] == "online" for n in doc["nodes"]) and all(
            sh["lease"] == sh["primary"] for sh in doc["shards"])

    wait_until(ok, timeout=timeout, interval=0.1, what="every node online, every shard leased")


def _scale_out_in(s: Stack, during: Callable[[list[str], str], None] | None = None,
                  prefix: str = "wl") -> None:
    """Scale out under the workload (``during(ids, phase)`` runs once the plan is
    half-way), check, scale back in, check."""
    before = set(_slot_owners(s))
    work = Workload(s, prefix)
    work.start()
    try:
        doc = _plan(s, {"kind": "scale_out"})
        assert len(doc["plan"]["new_shards"]) == 1
        if during is not None:
            _wait_some_done(s, doc["migrations"])
            during(doc["migrations"], "out")
        states = _wait_plan(s, doc["migrations"])
        assert set(states.values()) == {"DONE"}
        new = _new_shard(s, before)
        wait_until(lambda: {n["state"] for n in s.cluster()["nodes"]
                            if n["shard"] == new and n["role"] == "primary"} == {"ACTIVE"},
                   timeout=30, what="the new shard's primary ACTIVE")
        assert sorted(_slot_owners(s).values()) == [5461, 5461, 5462]
    finally:
        work.stop_and_verify(s)
    s.heal()
    _settled(s)
    work = Workload(s, prefix + "-in")
    work.start()
    try:
        doc = _plan(s, {"kind": "scale_in", "shard": new})
        states = _wait_plan(s, doc["migrations"])
        assert set(states.values()) == {"DONE"}
        wait_until(lambda: new not in _slot_owners(s), timeout=60, what="the shard dissolved")
        roles = {n["id"]: (n["role"], n["state"]) for n in s.cluster()["nodes"]}
        assert sorted(r for r, _ in roles.values()).count("none") == 2
    finally:
        work.stop_and_verify(s)


# --------------------------------------------------------------------------- tests


def test_scale_out_then_in_under_a_cluster_client_workload(whole: Stack) -> None:
    _scale_out_in(whole)
    # the spares went back to role none with a retired replica_id: a new shard
    # made of them again gets new replica_ids (never reused)
    spares = [n for n in whole.cluster()["nodes"] if n["role"] == "none"]
    assert len(spares) == 2 and all(n["replica_id"] == 0 for n in spares)


def test_kill_the_source_primary_mid_migration(whole: Stack) -> None:
    s = whole

    def kill_source(ids: list[str], phase: str) -> None:
        source = s.shards()[_running(s, ids)["from_shard"]]
        i = s.index(s.node(source["primary"]))
        pid = s.datanode_pid(i)
        assert pid is not None
        s.kill(pid)
        wait_until(lambda: s.shards()[source["id"]]["primary"] != source["primary"],
                   timeout=30, what="the source shard failed over")
        s.heal()

    _scale_out_in(s, kill_source, prefix="src")


def test_kill_the_target_primary_mid_migration(whole: Stack) -> None:
    s = whole

    def kill_target(ids: list[str], phase: str) -> None:
        target = _running(s, ids)["to_shard"]
        primary = s.shards()[target]["primary"]
        pid = s.datanode_pid(s.index(s.node(primary)))
        assert pid is not None
        s.kill(pid)
        wait_until(lambda: s.shards()[target]["primary"] != primary, timeout=30,
                   what="the target shard failed over")
        s.heal()

    _scale_out_in(s, kill_target, prefix="dst")


def test_kill_the_leading_coordinator_mid_migration(whole: Stack) -> None:
    s = whole

    def kill_leader(ids: list[str], phase: str) -> None:
        leader = s.leader_url()
        pid = s.coordinator_pid(s.coordinator_index(leader))
        assert pid is not None
        s.kill(pid)
        wait_until(lambda: s.leader_url() != leader, timeout=30, what="a new leader")
        s.heal()

    _scale_out_in(s, kill_leader, prefix="coord")


def _admin(s: Stack, i: int) -> redis.Redis:
    return redis.Redis(host=LOOPBACK, port=s.admin_port(i), socket_timeout=5)


def test_a_handed_off_migration_rolls_forward_when_its_target_dies(whole: Stack) -> None:
    """With every coordinator stopped (so nothing commits), a running migration's
    copy completes, is recorded, and the source hands the slots off: writes go on
    against the target. The target primary is then killed: once the coordinators
    resume, the migration is committed all the same (rolled forward, not retried),
    the target shard fails over, and every write acknowledged — those the target
    took before any topology named it the owner included — is read back."""
    s = whole
    before = set(_slot_owners(s))
    work = Workload(s, "roll")
    work.start()
    coordinators = [pid for c in (0, 1) if (pid := s.coordinator_pid(c)) is not None]
    try:
        doc = _plan(s, {"kind": "scale_out"})
        m = _running(s, doc["migrations"])
        shards = s.shards()
        src = s.index(s.node(shards[m["from_shard"]]["primary"]))
        dst_primary = shards[m["to_shard"]]["primary"]
        dst = s.index(s.node(dst_primary))
        for pid in coordinators:
            s.stop(pid)
        with _admin(s, src) as adm:
            def handed_off() -> bool:
                # a window ended (the handoff) while the slots are still marked
                # migrating: no topology moved them (the coordinators are stopped)
                return bool(adm.execute_command("SLOTKEEPER", "TRANSFER-WINDOWS")) and bool(
                    adm.execute_command("SLOTKEEPER", "MIGRATING"))
            wait_until(handed_off, timeout=30, interval=0.02, what="the source hands off")
        n0 = len(work.acked)
        wait_until(lambda: len(work.acked) > n0 + 50, timeout=30, what="writes after the handoff")
        pid = s.datanode_pid(dst)
        assert pid is not None
        s.kill(pid)
        for pid in coordinators:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: s.shards()[m["to_shard"]]["primary"] != dst_primary, timeout=60,
                   what="the target shard failed over")
        s.heal()
        states = _wait_plan(s, doc["migrations"])
        assert set(states.values()) == {"DONE"}
        record = next(r for r in s.request("GET", "/v1/migrations")[1]["migrations"]
                      if r["id"] == m["id"])
        assert record["state"] == "DONE" and int(record.get("attempts", 1)) == 1, record
    finally:
        for pid in coordinators:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        work.stop_and_verify(s)
    assert _new_shard(s, before)


def test_cancel_stops_the_plan_and_nothing_is_lost(whole: Stack) -> None:
    s = whole
    before = set(_slot_owners(s))
    work = Workload(s, "cancel")
    work.start()
    try:
        doc = _plan(s, {"kind": "scale_out"})
        ids = doc["migrations"]
        _wait_some_done(s, ids)
        status, out = _write(s, "DELETE", f"/v1/migrations/{ids[-1]}", None)
        assert status == 200, out
        states = _wait_plan(s, ids)
        assert "CANCELLED" in states.values() and "DONE" in states.values()
        owners = _slot_owners(s)
        new = _new_shard(s, before)
        done = sum(1 for v in states.values() if v == "DONE")
        assert 0 < owners[new] < 5461 and done >= 2
        assert sum(owners.values()) == 16384
    finally:
        work.stop_and_verify(s)


def test_dry_runs_measure_keys_and_bytes_on_the_primaries(whole: Stack) -> None:
    s = whole
    rc = _cluster_client(s)
    try:
        pipe = rc.pipeline()
        for i in range(3000):
            pipe.set(f"measured:{i}", "x" * 16)
        pipe.execute()
        total = sum(int(s.client(s.index(s.node(sh["primary"]))).dbsize())
                    for sh in s.cluster()["shards"])
    finally:
        rc.close()
    before = s.cluster()["epoch"]
    status, doc = s.write("POST", "/v1/rebalance", {"kind": "scale_out", "dry_run": True,
                                                    "measure": True})
    assert status == 200, doc
    plan = doc["plan"]
    # a third of the slots move: about a third of the keys, and bytes with them
    assert total * 0.25 < plan["keys_to_move"] < total * 0.42, (plan["keys_to_move"], total)
    assert plan["bytes_to_move"] > 16 * plan["keys_to_move"]
    status, doc = s.write("POST", "/v1/rebalance", {"kind": "rebalance", "by": "keys",
                                                    "threshold": 0.2, "dry_run": True})
    assert status == 200 and doc["plan"]["slots_to_move"] == 0, doc  # balanced within 20 %
    assert s.cluster()["epoch"] == before  # dry runs change nothing


# --------------------------------------------------------------------------- drain, move-shard


def _drain(s: Stack, node: str, **body: Any) -> dict[str, Any]:
    status, doc = _write(s, "POST", f"/v1/nodes/{node}/drain?wait=120", body)
    assert status == 200, doc
    assert doc["intent"]["state"] == "done", doc
    return doc


def _unhide(s: Stack, node: str) -> None:
    status, doc = _write(s, "POST", f"/v1/nodes/{node}/unhide?wait=30", {})
    assert status == 200, doc


@pytest.mark.parametrize("role", ["replica", "primary"])
def test_drain_a_node_under_load(whole: Stack, role: str) -> None:
    s = whole
    shard = sorted(s.cluster()["shards"], key=lambda x: x["slots"][0][0])[0]
    node = shard["primary"] if role == "primary" else shard["replicas"][0]
    old = s.node(node)
    work = Workload(s, f"drain-{role}")
    work.start()
    try:
        _drain(s, node)
        after = s.shards()[shard["id"]]
        assert node not in (after["primary"], *after["replicas"])
        assert len(after["replicas"]) == 1
        if role == "primary":
            assert after["primary"] != node
        gone = s.node(node)
        assert (gone["role"], gone["hidden"], gone["replica_id"]) == ("none", True, 0)
        assert old["replica_id"] != 0
    finally:
        work.stop_and_verify(s)
    _unhide(s, node)


def test_a_drained_node_rejoins_with_a_new_replica_id(whole: Stack) -> None:
    s = whole
    shard = sorted(s.cluster()["shards"], key=lambda x: x["slots"][0][0])[1]
    node = shard["replicas"][0]
    first = s.node(node)["replica_id"]
    _drain(s, node)
    _unhide(s, node)
    replacement = s.shards()[shard["id"]]["replicas"][0]
    s.wait_healthy(timeout=90)
    _drain(s, replacement, to=node)  # the drained node comes back in its place
    back = s.node(node)
    assert back["shard"] == shard["id"] and back["role"] == "replica"
    assert back["replica_id"] not in (0, first)
    _unhide(s, replacement)
    wait_until(lambda: s.node(node)["state"] == "STANDBY", timeout=60,
               what="the rejoined node caught up")


def test_move_shard_and_the_cli(whole: Stack) -> None:
    s = whole
    shard = sorted(s.cluster()["shards"], key=lambda x: x["slots"][0][0])[0]
    spares = [n["id"] for n in s.cluster()["nodes"] if n["role"] == "none"]
    old = [shard["primary"], *shard["replicas"]]
    work = Workload(s, "move")
    work.start()
    try:
        done = s.sk("move-shard", shard["id"][:10], "--to", ",".join(x[:10] for x in spares),
                    "--wait", "120", timeout=150)
        assert done.returncode == 0, done.stderr + done.stdout
        after = s.shards()[shard["id"]]
        assert after["primary"] == spares[0] and after["replicas"] == [spares[1]]
    finally:
        work.stop_and_verify(s)
    for n in old:
        _unhide(s, n)


def test_two_new_shards_fill_in_parallel(whole: Stack) -> None:
    """With replicas 0 the two spares make two new shards: their migrations run at
    the same time (one per target shard, settings.migration_concurrency 2).
    min_replicas_to_ack goes to 0 meanwhile: a shard without replicas could not
    acknowledge a copy (its migrations would wait)."""
    s = whole
    status, doc = _write(s, "PATCH", "/v1/settings", {"replicas": 0, "min_replicas_to_ack": 0})
    assert status == 200, doc
    before = set(_slot_owners(s))
    work = Workload(s, "two")
    work.start()
    try:
        doc = _plan(s, {"kind": "scale_out"})
        assert len(doc["plan"]["new_shards"]) == 2
        ids = doc["migrations"]
        targets: set[str] = set()

        def two_at_once() -> bool:
            running = [m for m in s.request("GET", "/v1/migrations")[1]["migrations"]
                       if m["id"] in set(ids) and m["state"] == "RUNNING"]
            if len({m["to_shard"] for m in running}) == 2:
                targets.update(m["to_shard"] for m in running)
                return True
            return False

        wait_until(two_at_once, timeout=60, interval=0.02,
                   what="migrations to both new shards running at once")
        assert _wait_plan(s, ids) and set(_states(s, ids).values()) == {"DONE"}
        owners = _slot_owners(s)
        assert len(owners) == 4 and sorted(owners.values()) == [4096] * 4
        assert targets == set(owners) - before
    finally:
        work.stop_and_verify(s)
    # the new shards have no replica: they still give their slots away (only a target
    # must have in-sync replicas, and min_replicas_to_ack is 0 until they are gone)
    for new in sorted(set(_slot_owners(s)) - before):
        doc = _plan(s, {"kind": "scale_in", "shard": new})
        _wait_plan(s, doc["migrations"])
        wait_until(lambda new=new: new not in _slot_owners(s), timeout=60,
                   what="the shard dissolved")
    status, doc = _write(s, "PATCH", "/v1/settings", {"replicas": 1, "min_replicas_to_ack": 1})
    assert status == 200, doc
