"""Leader election: two coordinators in one process against a real etcd.

- exactly one leads, and its fence matches the key;
- a standby takes over within 2 x TTL after the leader's lease is revoked or
  simply expires (leader crashed: no more refreshes);
- a leader whose etcd stops answering (SIGSTOP) stops acting before its lease
  can expire, and its cycles stop writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from clusterstate.keys import Keys
from coordinator.leader import VALIDITY, Elector
from coordinator.loop import Coordinator
from coordinator.view import LeaderInfo
from dcs.etcd import EtcdStore
from tests.support import EtcdServer, async_wait_until

TTL = 2
_names = itertools.count()


@pytest.fixture
async def stores(etcd: EtcdServer) -> AsyncIterator[tuple[EtcdStore, EtcdStore]]:
    a = EtcdStore(etcd.endpoint, timeout=0.5)
    b = EtcdStore(etcd.endpoint, timeout=0.5)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


class Pair:
    def __init__(self, stores: tuple[EtcdStore, EtcdStore]) -> None:
        self.keys = Keys(f"lead{next(_names)}")
        self.electors = [
            Elector(store, self.keys, instance_id=name, api_url=f"http://{name}:1", ttl=TTL,
                    request_timeout=0.5)
            for store, name in zip(stores, ("alpha", "beta"), strict=True)
        ]
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        for e in self.electors:
            self.tasks[e.instance_id] = asyncio.create_task(e.run())

    def leaders(self) -> list[Elector]:
        return [e for e in self.electors if e.is_leader()]

    async def one_leader(self, timeout: float = 10) -> Elector:
        await async_wait_until(lambda: len(self.leaders()) == 1, timeout=timeout,
                               what="exactly one leader")
        return self.leaders()[0]

    def other(self, e: Elector) -> Elector:
        return next(x for x in self.electors if x is not e)

    async def crash(self, e: Elector) -> None:
        """Stop refreshing without revoking: the lease expires by itself."""
        task = self.tasks.pop(e.instance_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        e._lease = None  # a crashed process forgets it; etcd does not

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for e in self.electors:
            await e.resign()


@pytest.fixture
async def pair(stores: tuple[EtcdStore, EtcdStore]) -> AsyncIterator[Pair]:
    p = Pair(stores)
    p.start()
    try:
        yield p
    finally:
        await p.close()


async def test_exactly_one_leads_and_its_fence_matches_the_key(pair: Pair) -> None:
    leader = await pair.one_leader()
    kv = await leader.store.get(pair.keys.coordinator_leader)
    assert kv is not None and kv.lease != 0
    info = LeaderInfo.from_json(kv.value)
    assert info is not None and (info.id, info.api) == (leader.instance_id, leader.api_url)
    fence = leader.fence()
    assert fence is not None and fence.operand == kv.value
    standby = pair.other(leader)
    assert not standby.is_leader() and standby.fence() is None
    await async_wait_until(lambda: standby.known_leader is not None, timeout=3)
    assert standby.leader() == LeaderInfo(leader.instance_id, leader.api_url, info.term)
    # several refresh rounds later, still the same single leader
    await asyncio.sleep(TTL * 1.2)
    assert pair.leaders() == [leader]


async def test_a_standby_takes_over_within_two_ttl_after_the_leader_crashed(pair: Pair) -> None:
    leader = await pair.one_leader()
    standby = pair.other(leader)
    await pair.crash(leader)
    crashed = time.monotonic()
    await async_wait_until(standby.is_leader, timeout=2 * TTL + 1, what="takeover")
    took = time.monotonic() - crashed
    assert took < 2 * TTL, f"takeover took {took:.2f}s"


async def test_a_standby_takes_over_at_once_when_the_leader_resigns(pair: Pair) -> None:
    leader = await pair.one_leader()
    standby = pair.other(leader)
    pair.tasks.pop(leader.instance_id).cancel()
    resigned = time.monotonic()
    await leader.resign()
    await async_wait_until(standby.is_leader, timeout=2 * TTL, what="takeover")
    assert time.monotonic() - resigned < TTL


async def test_a_leader_whose_etcd_is_paused_stops_acting_before_its_lease_expires(
    pair: Pair, etcd: EtcdServer
) -> None:
    leader = await pair.one_leader()
    coordinator = Coordinator(leader.store, pair.keys, leader)
    assert not (await coordinator.cycle()).startswith("standing by")
    etcd.pause()
    paused = time.monotonic()
    try:
        await async_wait_until(lambda: not leader.is_leader(), timeout=TTL * 2,
                               what="the leader to stop acting")
        stopped = time.monotonic() - paused
        # the last refresh was sent at most TTL/3 before the pause; validity is 0.8 TTL
        assert stopped <= TTL * VALIDITY + 0.2, f"acted {stopped:.2f}s into the outage"
        assert stopped < TTL  # before etcd could expire the lease
        sentence = await coordinator.cycle()
        assert sentence.startswith("standing by"), sentence
    finally:
        etcd.resume()
    # once etcd answers again, exactly one coordinator leads
    await pair.one_leader(timeout=4 * TTL)


def test_timing_rule_is_checked_at_start() -> None:
    with pytest.raises(ValueError, match="exceeds the lease TTL"):
        Elector(None, Keys("x"), instance_id="i", ttl=2, request_timeout=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 2 s"):
        Elector(None, Keys("x"), instance_id="i", ttl=1)  # type: ignore[arg-type]
