"""The reconciler and the loop against a real etcd.

The reconciler: every action is one transaction guarded by the epoch (and the
records it replaces); a concurrent change makes ``apply`` stop with the lost
action and write nothing; a failover fails while ``leases/<shard>`` exists;
history is bounded.

The loop: whole cycles with :class:`Sim` standing in for sidecars (a status
bound to its own lease, the served view "applied" on ``sync()``): registration,
bootstrap, replicas caught up, failover with the lost primary back as a
RECOVERING replica with a new replica_id, repair — each cycle returning one
sentence. Sidecars and data nodes for real come with the lead's integration.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from clusterstate.keys import Keys
from clusterstate.records import Settings, Status
from clusterstate.topology import Health, NodeState, Role
from coordinator.actions import Bootstrap, Failover, SetNodeFlags
from coordinator.intents import Intent, IntentKind, Tags
from coordinator.leader import Elector
from coordinator.loop import Coordinator
from coordinator.planner import plan
from coordinator.reconciler import Reconciler
from coordinator.view import ClusterView, load_view
from dcs.etcd import EtcdStore
from dcs.port import Compare, Lease, Put, Store
from tests.support import EtcdServer, async_wait_until
from tests.test_planner import NOW, Cluster, N, healthy, intent, lose_primary

_names = itertools.count()


def fresh_name() -> str:
    return f"loop{next(_names)}"


@pytest.fixture
async def store(etcd: EtcdServer) -> AsyncIterator[EtcdStore]:
    s = EtcdStore(etcd.endpoint, timeout=2.0)
    try:
        yield s
    finally:
        await s.close()


async def seed(store: Store, cluster: Cluster) -> None:
    for key, value in cluster.values.items():
        await store.put(key, value)


async def reload(store: Store, keys: Keys) -> ClusterView:
    return await load_view(store, keys)


# =========================================================================== reconciler


async def test_bootstrap_is_one_transaction_with_epoch_history_and_replica_ids(
    store: EtcdStore,
) -> None:
    c = Cluster(fresh_name()).settings(bootstrap_primaries=2, bootstrap_replicas=1)
    for i in range(1, 5):
        c.node(i).status(i)
    await seed(store, c)
    view = await reload(store, c.keys)
    p = plan(view, view.settings, NOW)
    boot = next(a for a in p.actions if isinstance(a, Bootstrap))
    done = await Reconciler(store, c.keys, clock=lambda: NOW).apply(view, [boot])
    assert done.complete and done.applied == (boot,) and done.epoch == 1

    after = await reload(store, c.keys)
    assert after.epoch == 1
    assert set(after.shards) == set(boot.shards)
    for w in boot.writes.nodes:
        assert after.node(w.record.id) == w.record
        assert after.nodes[w.record.id].since == 1
    assert set(boot.writes.replica_ids) <= after.replica_ids
    entry = orjson.loads(await _value(store, c.keys.history(1)))
    assert (entry["epoch"], entry["previous"], entry["kind"]) == (1, 0, "bootstrap")
    assert entry["why"] == boot.why and sorted(entry["shards"]) == sorted(boot.shards)


async def _value(store: Store, key: str) -> bytes:
    kv = await store.get(key)
    assert kv is not None, key
    return kv.value


async def test_a_concurrent_epoch_bump_makes_apply_change_nothing(store: EtcdStore) -> None:
    c2 = _rename(healthy().intent(intent(IntentKind.HIDE, node=N(11))))
    await seed(store, c2)
    view = await reload(store, c2.keys)
    hide = next(a for a in plan(view, view.settings, NOW).actions if isinstance(a, SetNodeFlags))
    await store.put(c2.keys.epoch, b"11")  # another writer moved the epoch
    before = await store.load(c2.keys.root)
    done = await Reconciler(store, c2.keys).apply(view, [hide])
    assert done.lost is hide and done.applied == ()
    after = await store.load(c2.keys.root)
    assert after.revision == before.revision  # nothing written
    assert not (await reload(store, c2.keys)).node(N(11)).hidden


def _rename(c: Cluster) -> Cluster:
    """The same table row under a fresh cluster name (etcd is shared by the module)."""
    out = Cluster(fresh_name())
    out.values = {k.replace(c.keys.root, out.keys.root): v for k, v in c.values.items()}
    return out


async def test_failover_transaction_fails_while_the_slot_lease_exists(store: EtcdStore) -> None:
    c = _rename(lose_primary(healthy(shards=1, replicas=2)))
    await seed(store, c)
    view = await reload(store, c.keys)
    failover = next(a for a in plan(view, view.settings, NOW).actions if isinstance(a, Failover))
    shard = failover.shard
    # the old primary's sidecar came back and took the slot lease meanwhile
    await store.put(c.keys.lease(shard), N(10).encode())
    before = await store.load(c.keys.root)
    done = await Reconciler(store, c.keys).apply(view, [failover])
    assert done.lost is failover
    assert (await store.load(c.keys.root)).revision == before.revision
    # the lease is gone again: a fresh plan fails over
    await store.delete(c.keys.lease(shard))
    view = await reload(store, c.keys)
    failover = next(a for a in plan(view, view.settings, NOW).actions if isinstance(a, Failover))
    done = await Reconciler(store, c.keys).apply(view, [failover])
    assert done.complete
    after = await reload(store, c.keys)
    assert after.shard(shard).primary == failover.promoted
    demoted = after.node(N(10))
    assert (demoted.role, demoted.replica_id) == (Role.REPLICA, failover.replica_id)
    assert failover.replica_id in after.replica_ids


async def test_a_fenced_reconciler_writes_nothing(store: EtcdStore) -> None:
    c = _rename(healthy().intent(intent(IntentKind.HIDE, node=N(11))))
    await seed(store, c)
    await store.put(c.keys.coordinator_leader, b'{"id": "other"}')
    view = await reload(store, c.keys)
    hide = next(a for a in plan(view, view.settings, NOW).actions if isinstance(a, SetNodeFlags))
    rec = Reconciler(store, c.keys, fence=lambda: Compare.value(c.keys.coordinator_leader, b"me"))
    assert (await rec.apply(view, [hide])).lost is hide
    before = await store.load(c.keys.root)
    assert (await store.load(c.keys.root)).revision == before.revision


async def test_actions_of_one_cycle_chain_epochs_and_history_is_bounded(store: EtcdStore) -> None:
    c = _rename(healthy(shards=1, replicas=2))
    await seed(store, c)
    rec = Reconciler(store, c.keys, history_limit=3)
    for k in range(5):
        it1 = intent(IntentKind.TAG, 2 * k + 1, node=N(11), tags=Tags(priority=k + 1))
        it2 = intent(IntentKind.TAG, 2 * k + 2, node=N(12), tags=Tags(priority=k + 1))
        for it in (it1, it2):
            await store.put(f"{c.keys.root}intents/{it.id}", it.to_json())
        c_view = await reload(store, c.keys)
        actions = plan(c_view, c_view.settings, NOW).actions
        assert len(actions) == 2
        done = await rec.apply(c_view, actions)
        assert done.complete and done.epoch == c_view.epoch + 2
    final = await reload(store, c.keys)
    assert final.epoch == 10 + 10
    assert final.history == (18, 19, 20)
    assert final.node(N(11)).priority == 5


# =========================================================================== the loop


class Sim:
    """A stand-in for a node's sidecar: ``status/<id>`` bound to its own lease,
    and on :meth:`sync` the served view applied (role, epoch, slot lease)."""

    def __init__(self, store: Store, keys: Keys, i: int, zone: str = "") -> None:
        self.store, self.keys, self.i = store, keys, i
        self.id = N(i)
        self.zone = zone
        self.offset = 0
        self.health = "online"
        self.writable = False
        self.lease: Lease | None = None
        self.fields: dict[str, Any] = {}

    async def start(self) -> Sim:
        self.lease = await self.store.grant(60)
        await self.publish()
        return self

    def status(self, role: str = "none", epoch: int = 0) -> Status:
        return Status(addr=f"127.0.0.{self.i}", port=7000 + self.i, admin_port=17000 + self.i,
                      zone=self.zone, health=self.health, role_applied=role,
                      epoch_applied=epoch, repl_offset=self.offset, writable=self.writable,
                      **self.fields)

    async def publish(self, role: str = "none", epoch: int = 0) -> None:
        assert self.lease is not None
        await self.store.put(self.keys.status(self.id), self.status(role, epoch).to_json(),
                             self.lease)

    async def sync(self) -> None:
        """Apply the served view: take the slot lease as primary, report the role."""
        assert self.lease is not None
        kv = await self.store.get(self.keys.node(self.id))
        epoch_kv = await self.store.get(self.keys.epoch)
        epoch = int(epoch_kv.value) if epoch_kv else 0
        role = "none"
        if kv is not None:
            doc = orjson.loads(kv.value)
            role = doc["role"]
            if role == "primary":
                lease_key = self.keys.lease(doc["shard"])
                await self.store.create(lease_key, self.id.encode(), self.lease)
                holder = await self.store.get(lease_key)
                self.writable = holder is not None and holder.value == self.id.encode()
            else:
                self.writable = False
        await self.publish(role, epoch)

    async def die(self) -> None:
        """The sidecar saw its data node die: revoke its lease (status, slot lease gone)."""
        assert self.lease is not None
        await self.store.revoke(self.lease)
        self.lease = None


async def sync_all(sims: list[Sim]) -> None:
    for s in sims:
        if s.lease is not None:
            await s.sync()


def make_coordinator(store: Store, keys: Keys, **kwargs: Any) -> tuple[Coordinator, Elector]:
    elector = Elector(store, keys, instance_id="c1", api_url="http://c1", ttl=3,
                      request_timeout=0.5)
    return Coordinator(store, keys, elector, loop_wait=0.2, **kwargs), elector


async def lead(elector: Elector) -> asyncio.Task[None]:
    task = asyncio.create_task(elector.run())
    await async_wait_until(elector.is_leader, timeout=10, what="leadership")
    return task


async def test_cycles_from_cold_start_to_failover_and_repair(store: EtcdStore) -> None:
    keys = Keys(fresh_name())
    await store.put(keys.settings, Settings(bootstrap_primaries=2, bootstrap_replicas=1,
                                            replicas=1, max_lag_bytes=10).to_json())
    coordinator, elector = make_coordinator(store, keys)
    assert await coordinator.cycle() == "standing by: no leader holds coordinator/leader"
    task = await lead(elector)
    try:
        sims = [await Sim(store, keys, i, zone="ab"[i % 2]).start() for i in range(1, 5)]
        assert (await coordinator.cycle()).startswith("epoch 0→1: 4 new nodes registered")
        sentence = await coordinator.cycle()
        assert sentence == "epoch 1→2: bootstrapping 2 shards x 2 from 4 online members"
        view = await reload(store, keys)
        assert all(view.node(s.id).role is not Role.NONE for s in sims)
        # replicas are loading and hidden until their sidecars applied the view and caught up
        replicas = [s for s in sims if view.node(s.id).role is Role.REPLICA]
        assert all(view.node(r.id).hidden for r in replicas)
        assert await coordinator.cycle() == "nothing to do at epoch 2: 2 shards, 4 nodes (4 alive)"
        await sync_all(sims)
        sentence = await coordinator.cycle()
        assert sentence.startswith("epoch 2→3: ") and "RECOVERING→STANDBY loading→online unhidden" in sentence
        view = await reload(store, keys)
        assert all(view.node(r.id).state is NodeState.STANDBY for r in replicas)
        assert not any(view.node(r.id).hidden for r in replicas)
        assert set(view.leases.values()) == {s.id for s in sims if s not in replicas}

        # a primary dies: the slot lease and the status vanish together
        victim = next(s for s in sims if view.node(s.id).role is Role.PRIMARY)
        shard = view.node(victim.id).shard
        heir = view.shard(shard).replicas[0]
        await victim.die()
        sentence = await coordinator.cycle()
        assert "lost its primary" in sentence and f"promoting {heir[:8]}" in sentence
        view = await reload(store, keys)
        assert view.shard(shard).primary == heir
        old = view.node(victim.id)
        assert (old.role, old.state, old.health) == (Role.REPLICA, NodeState.OFFLINE, Health.FAIL)
        new_rid = old.replica_id
        assert new_rid != 0 and new_rid in view.replica_ids
        history = orjson.loads(await _value(store, keys.history(view.epoch)))
        assert history["kind"] == "failover" and history["why"] in sentence

        # the lost primary comes back: RECOVERING with its new replica_id, then STANDBY
        await victim.start()
        sentence = await coordinator.cycle()
        assert "OFFLINE→RECOVERING fail→loading" in sentence
        await sync_all(sims)
        await coordinator.cycle()  # the new primary's status now says primary
        view = await reload(store, keys)
        back = view.node(victim.id)
        assert (back.state, back.health, back.replica_id) == (
            NodeState.STANDBY, Health.ONLINE, new_rid)
        assert view.leases[shard] == heir

        # repair: two replicas wanted; a new spare joins each shard with a new replica_id
        spares = [await Sim(store, keys, i).start() for i in (5, 6)]
        sims += spares
        await store.put(keys.settings, Settings(bootstrap_primaries=2, bootstrap_replicas=1,
                                                replicas=2, max_lag_bytes=10).to_json())
        await coordinator.cycle()  # registers them
        sentence = await coordinator.cycle()
        assert sentence.count("adding spare") == 2
        view = await reload(store, keys)
        assert all(len(e.record.replicas) == 2 for e in view.shards.values())
        assert {view.node(s.id).role for s in spares} == {Role.REPLICA}
    finally:
        task.cancel()
        await elector.resign()


async def test_the_loop_is_woken_by_watches_not_only_the_timer(store: EtcdStore) -> None:
    keys = Keys(fresh_name())
    coordinator, elector = make_coordinator(store, keys)
    coordinator.loop_wait = 60.0  # only a watch event can wake it in time
    task = await lead(elector)
    loop = asyncio.create_task(coordinator.run())
    try:
        await async_wait_until(lambda: coordinator.cycles >= 1, timeout=5)
        sim = await Sim(store, keys, 1).start()

        async def registered() -> bool:
            return await store.get(keys.node(sim.id)) is not None

        await async_wait_until(registered, timeout=5, what="a cycle woken by the new status")
        view = await reload(store, keys)
        assert view.node(sim.id).state is NodeState.ONLINE
    finally:
        loop.cancel()
        task.cancel()
        await elector.resign()


async def test_a_lost_compare_and_set_is_reported_and_replanned(store: EtcdStore) -> None:
    c = _rename(healthy().drop_status(11))
    await seed(store, c)
    coordinator, elector = make_coordinator(store, c.keys)
    task = await lead(elector)
    try:
        original = coordinator.reconciler.apply

        async def racing(view: ClusterView, actions: Any) -> Any:
            await store.put(c.keys.epoch, str(view.epoch + 1).encode())  # someone else wrote
            return await original(view, actions)

        coordinator.reconciler.apply = racing  # type: ignore[method-assign]
        sentence = await coordinator.cycle()
        assert sentence.startswith("lost a compare-and-set on health at epoch 10")
        assert "reloading and planning again" in sentence
        coordinator.reconciler.apply = original  # type: ignore[method-assign]
        sentence = await coordinator.cycle()
        assert sentence.startswith("epoch 11→12: ") and "STANDBY→OFFLINE" in sentence
        assert coordinator.metrics.cas_conflicts._value.get() == 1
    finally:
        task.cancel()
        await elector.resign()


async def test_paused_cluster_does_not_fail_over_but_records_health(store: EtcdStore) -> None:
    c = _rename(lose_primary(healthy(pause=True)))
    await seed(store, c)
    coordinator, elector = make_coordinator(store, c.keys)
    task = await lead(elector)
    try:
        sentence = await coordinator.cycle()
        assert "paused: shard" in sentence and "lost its primary" in sentence
        view = await reload(store, c.keys)
        assert view.shard(next(iter(view.shards))).primary == N(10)
        assert view.node(N(10)).health is Health.FAIL
    finally:
        task.cancel()
        await elector.resign()


async def test_hide_intent_recorded_and_carried_out_by_a_cycle(store: EtcdStore) -> None:
    c = _rename(healthy())
    await seed(store, c)
    coordinator, elector = make_coordinator(store, c.keys)
    task = await lead(elector)
    try:
        it = Intent(id="1700000000000-0000000a", kind=IntentKind.HIDE, node=N(12))
        await store.cas([], [Put(f"{c.keys.root}intents/{it.id}", it.to_json())])
        sentence = await coordinator.cycle()
        assert sentence == f"epoch 10→11: operator: hide node {N(12)[:8]}"
        view = await reload(store, c.keys)
        assert view.node(N(12)).hidden and view.nodes[N(12)].hidden_by == "operator"
        assert view.intents[it.id].state.value == "done" and view.intents[it.id].epoch == 11
        assert [type(a) for a in plan(view, view.settings, NOW).actions] == []
    finally:
        task.cancel()
        await elector.resign()


def test_imports_stay_one_way() -> None:
    """STYLE §1: nothing imports the coordinator; it imports dcs and clusterstate only."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    for pkg in ("clusterstate", "dcs", "datanode", "sidecar"):
        for path in (root / pkg).rglob("*.py"):
            assert not re.search(r"^\s*(from|import)\s+coordinator\b", path.read_text(), re.M), path
    for path in (root / "coordinator").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(sidecar|datanode)\b", text, re.M), path

