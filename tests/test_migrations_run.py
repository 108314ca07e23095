"""Running a scale in through the coordinator loop against a real etcd, with
the target sidecar's part simulated (it writes ``copy_state: done``): the
migrations start one per target shard, the slots are committed with an epoch
bump each, and the removed shard ends with no slots."""

from __future__ import annotations

import orjson

from clusterstate.topology import slot_owners
from coordinator.view import load_view
from dcs.port import Compare, Put
from tests.support import EtcdServer, async_wait_until
from tests.test_coordinator_api import fresh, running
from tests.test_planner import N, S, healthy


async def test_scale_in_runs_to_the_end(etcd: EtcdServer) -> None:
    async with running(etcd, fresh(healthy(shards=2, replicas=1, migration_batch=1024))) as api:
        store, keys = api.leader.store, api.cluster.keys
        status, doc = await api.call("POST", "/v1/rebalance?wait=0",
                                     {"kind": "scale_in", "shard": S(2)})
        assert status == 202, doc
        ids = doc["migrations"]
        assert len(ids) == 8 and doc["epoch"] == 11  # 8192 slots in batches of 1024

        async def view():
            return await load_view(store, keys)

        done: set[str] = set()
        while len(done) < len(ids):
            async def running_one() -> bool:
                v = await view()
                states = {m.id: m.state.value for m in v.topology.migrations}
                done.update(i for i, s in states.items() if s == "DONE")
                run = [i for i, s in states.items() if s == "RUNNING"]
                assert len(run) <= 1  # one target shard: one at a time
                return bool(run) or len(done) == len(ids)

            await async_wait_until(running_one, timeout=10, what="a running migration")
            if len(done) == len(ids):
                break
            v = await view()
            mid = next(m.id for m in v.topology.migrations if m.state.value == "RUNNING")
            key = keys.migration(mid)
            kv = await store.get(key)
            d = orjson.loads(kv.value)
            d.update(copy_state="done", keys_moved=3, bytes_moved=30, copied_by="sim",
                     copy_updated_ms=1)
            await store.put(key, orjson.dumps(d))

            async def committed(mid: str = mid) -> bool:
                v = await view()
                return any(m.id == mid and m.state.value == "DONE" for m in v.topology.migrations)

            await async_wait_until(committed, timeout=10, what=f"migration {mid} committed")
            done.add(mid)

        async def dissolved() -> bool:
            return S(2) not in (await view()).shards

        await async_wait_until(dissolved, timeout=10, what="the emptied shard dissolved")
        v = await view()
        assert set(slot_owners(v.topology)) == {S(1)}
        assert v.epoch >= 11 + 2 * len(ids) + 1  # a bump to start and to commit each, dissolve
        for n in (N(20), N(21)):  # the leaving shard's nodes are spares again
            rec = v.node(n)
            assert (rec.role.value, rec.shard, rec.state.value, rec.replica_id) == (
                "none", "", "ONLINE", 0)
        status, doc = await api.call("GET", "/v1/migrations")
        assert all(m["state"] == "DONE" and m["keys_moved"] == 3 for m in doc["migrations"])
        assert len(doc["migrations"]) == len(ids)  # finished records outlive the shard
        assert all(m["final"] for m in doc["migrations"])
        status, doc = await api.call("GET", "/v1/migrations?progress=1")
        p = doc["progress"]
        assert p["slots_done"] == p["slots"] == 8192 and p["eta_s"] == 0
        assert p["slots_per_s"] > 0 and p["keys_moved"] == 3 * len(ids)
        status, text = await api.call("GET", "/metrics")
        assert f'slotkeeper_migrations{{state="DONE"}} {len(ids)}.0' in text
        assert 'slotkeeper_migration_slots{state="DONE"} 8192.0' in text


async def test_cancel_stops_after_the_running_migration_and_cli_shows_progress(
    etcd: EtcdServer,
) -> None:
    import asyncio
    import io

    from coordinator import cli
    from tests.test_coordinator_api import TOKEN

    async with running(etcd, fresh(healthy(shards=2, replicas=1, migration_batch=1024))) as api:
        store, keys = api.leader.store, api.cluster.keys
        status, doc = await api.call("POST", "/v1/rebalance?wait=0",
                                     {"kind": "scale_in", "shard": S(2)})
        assert status == 202, doc
        ids = doc["migrations"]

        async def states() -> dict[str, str]:
            v = await load_view(store, keys)
            return {m.id: m.state.value for m in v.topology.migrations}

        async def one_running() -> bool:
            return "RUNNING" in (await states()).values()

        await async_wait_until(one_running, timeout=10, what="a running migration")
        run = next(i for i, s in (await states()).items() if s == "RUNNING")
        pending = next(i for i, s in (await states()).items() if s == "PENDING")
        status, doc = await api.call("DELETE", f"/v1/migrations/{pending}")
        assert status == 200, doc
        assert doc["finishing"] == [] and set(doc["cancelled"]) == set(ids) - {run}
        status, doc = await api.call("DELETE", f"/v1/migrations/{'ab' * 20}")
        assert (status, doc["code"]) == (404, "unknown_migration")

        kv = await store.get(keys.migration(run))
        d = {**orjson.loads(kv.value), "copy_state": "done", "keys_moved": 7}
        await store.put(keys.migration(run), orjson.dumps(d))

        async def committed() -> bool:
            return (await states())[run] == "DONE"

        await async_wait_until(committed, timeout=10, what="the running migration committed")
        assert sorted((await states()).values()) == ["CANCELLED"] * 7 + ["DONE"]
        v = await load_view(store, keys)
        assert len(v.shard(S(2)).slots) == 1 and sum(
            hi - lo + 1 for lo, hi in v.shard(S(2)).slots) == 8192 - 1024

        out = io.StringIO()
        flags = ["--coordinator", api.url, "--token", TOKEN]
        code = await asyncio.to_thread(cli.run, "migrations", flags, out)
        text = out.getvalue()
        assert code == 0, text
        assert text.startswith("8 migration(s): 1024/8192 slots done, 7 keys")
        assert "CANCELLED" in text and "MIGRATION" in text
        out = io.StringIO()
        code = await asyncio.to_thread(cli.run, "migrations", [*flags, "--cancel", run[:10]], out)
        assert code == 1  # finished


async def test_cli_remove_shard_follows_the_run_to_a_summary(etcd: EtcdServer) -> None:
    import asyncio
    import contextlib
    import io
    import json

    from coordinator import cli
    from tests.test_coordinator_api import TOKEN

    async with running(etcd, fresh(healthy(shards=2, replicas=1, migration_batch=1024))) as api:
        store, keys = api.leader.store, api.cluster.keys

        async def sidecar() -> None:  # the target's sidecar: every running copy succeeds
            while True:
                await asyncio.sleep(0.05)
                try:
                    v = await load_view(store, keys)
                except Exception:  # a transient read error must not end the simulation
                    continue
                for m in v.topology.migrations:
                    doc = v.migrations.get(m.id, {})
                    if m.state.value == "RUNNING" and doc.get("copy_state") != "done":
                        kv = await store.get(keys.migration(m.id))
                        d = {**orjson.loads(kv.value), "copy_state": "done", "keys_moved": 2,
                             "bytes_moved": 20}
                        key = keys.migration(m.id)  # as read, like the sidecar's writes
                        await store.cas([Compare.unchanged(key, kv)], [Put(key, orjson.dumps(d))])

        task = asyncio.create_task(sidecar())
        try:
            out = io.StringIO()
            argv = ["--coordinator", api.url, "--token", TOKEN, S(2)[:8], "--json", "--wait", "20"]
            code = await asyncio.to_thread(cli.run, "remove-shard", argv, out)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        summary = json.loads(out.getvalue())
        assert code == 0, summary
        assert summary["finished"] and summary["done"] == 8 and summary["slots_done"] == 8192
        assert summary["keys_moved"] == 16 and summary["bytes_moved"] == 160
        v = await load_view(store, keys)
        assert set(slot_owners(v.topology)) == {S(1)}


async def test_the_target_records_done_only_while_both_leases_are_the_starting_ones(
    etcd: EtcdServer,
) -> None:
    """The sidecar's copy_state "done" (after which the move rolls forward) is written
    in one transaction with a compare on both shards' slot-lease create revisions;
    once a lease was re-created (a failover since the start) the copy is recorded
    as failed instead."""
    from clusterstate.keys import Keys
    from clusterstate.topology import (
        Health,
        MigrationRecord,
        MigrationState,
        NodeRecord,
        NodeState,
        Role,
    )
    from dcs.etcd import EtcdStore
    from sidecar.transfer import Job, MigrationRun

    keys = Keys("leasecheck")
    store = EtcdStore(etcd.endpoint, timeout=2.0)
    try:
        for sid in (S(1), S(2)):
            await store.put(keys.lease(sid), N(10).encode())
        leases = {sid: (await store.get(keys.lease(sid))).create_revision  # type: ignore[union-attr]
                  for sid in (S(1), S(2))}
        mkey = keys.migration("m1")
        doc = {"id": "m1", "slots": [[0, 9]], "from_shard": S(2), "to_shard": S(1),
               "state": "RUNNING", "leases": leases, "attempts": 1}

        def run() -> MigrationRun:
            job = Job(MigrationRecord("m1", ((0, 9),), S(2), S(1), MigrationState.RUNNING),
                      NodeRecord(N(20), "127.0.0.1", 1, 2, shard=S(2), role=Role.PRIMARY,
                                 state=NodeState.ACTIVE, health=Health.ONLINE))
            return MigrationRun(job, datanode=None, store=store, keys=keys,  # type: ignore[arg-type]
                                node_id=N(10), on_progress=lambda *_: None)

        await store.put(mkey, orjson.dumps(doc))
        assert await run()._write_progress({"state": "done", "keys": 5})
        got = orjson.loads((await store.get(mkey)).value)  # type: ignore[union-attr]
        assert got["copy_state"] == "done" and got["leases"] == leases and got["keys_moved"] == 5

        # the source shard failed over since the start: its lease key was re-created
        await store.put(mkey, orjson.dumps(doc))
        await store.delete(keys.lease(S(2)))
        await store.put(keys.lease(S(2)), N(21).encode())
        assert await run()._write_progress({"state": "done", "keys": 5})
        got = orjson.loads((await store.get(mkey)).value)  # type: ignore[union-attr]
        assert got["copy_state"] == "failed" and "changed primary" in got["error"], got
    finally:
        await store.close()
