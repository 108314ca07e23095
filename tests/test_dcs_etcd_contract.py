"""The store contract (dcs.port.Store), run against a real store.

One suite for every adapter (tooz-style): each test takes a ``backend`` — a
store factory plus the faults the suite injects (SIGSTOP/SIGCONT, restart,
compaction) — and works under its own cluster root, since the store process is
shared by the module. Only etcd exists today; another adapter adds a param to
the ``backend`` fixture. Waits use deadlines, never fixed sleeps.

At the end: etcd-only tests (several endpoints) and the retry policy on a fake
clock.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from clusterstate.keys import Keys
from dcs.errors import LeaseLost, StoreError, StoreUnavailable, WatchCompacted
from dcs.etcd import EtcdStore
from dcs.port import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    Put,
    Store,
    WatchBatch,
)
from dcs.retry import RetryPolicy, check_lease_timing, retry
from tests.support import (
    EtcdServer,
    async_wait_until,
    free_port,
    require_binary,
    start_etcd,
    wait_until,
)

# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """A store under test and the faults the suite can inject into it."""

    name: str
    make: Callable[..., Store]  # make(timeout=..., sleep=...) -> Store
    pause: Callable[[], None]  # the store process stops answering (keeps its sockets)
    resume: Callable[[], None]
    restart: Callable[[], None]  # stop, then start again with the same data
    compact: Callable[[int], None]  # drop history before a revision


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T in /proc)."""
    tasks = Path(f"/proc/{pid}/task")
    states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
    return bool(states) and all(state in ("T", "t") for state in states)


def _pause(server: EtcdServer) -> None:
    # SIGSTOP is asynchronous: until every thread has stopped, etcd may still answer.
    server.pause()
    wait_until(lambda: _stopped(server.pid), timeout=5, interval=0.005, what="etcd stopped")


def _etcd_backend(server: EtcdServer) -> Backend:
    def make(**kwargs: object) -> Store:
        return EtcdStore(server.endpoint, **kwargs)  # type: ignore[arg-type]

    def restart() -> None:
        server.stop()
        server.start()

    def compact(revision: int) -> None:
        server.etcdctl("compact", str(revision))

    return Backend(
        name="etcd",
        make=make,
        pause=lambda: _pause(server),
        resume=server.resume,
        restart=restart,
        compact=compact,
    )


@pytest.fixture(params=["etcd"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "etcd":
        return _etcd_backend(request.getfixturevalue("etcd"))
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
def keys(request: pytest.FixtureRequest) -> Keys:
    """A cluster of its own per test: every key the test touches is under keys.root."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:60]
    return Keys(f"{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.make(timeout=2.0)
    try:
        yield s
    finally:
        await s.close()


def j(value: object) -> bytes:
    return orjson.dumps(value)


async def collect(watch: AsyncIterator[WatchBatch], into: list[WatchBatch]) -> None:
    async for batch in watch:
        into.append(batch)


async def eventually(pred: Callable[[], object], timeout: float = 5.0, what: str = "") -> object:
    return await async_wait_until(pred, timeout=timeout, interval=0.02, what=what or None)


# --------------------------------------------------------------------------- reads


async def test_store_satisfies_the_port(store: Store) -> None:
    assert isinstance(store, Store)


async def test_load_is_one_snapshot_with_revisions(store: Store, keys: Keys) -> None:
    r1 = await store.put(keys.epoch, j(1))
    r2 = await store.put(keys.node("a" * 40), j({"addr": "h1"}))
    lease = await store.grant(30)
    r3 = await store.put(keys.status("a" * 40), j({"health": "online"}), lease=lease)
    outside = Keys(keys.cluster + "x")  # "/slotkeeper/<cluster>x/": must not be loaded
    await store.put(outside.epoch, j(99))
    try:
        snap = await store.load(keys.root)
        assert snap.prefix == keys.root
        assert r1 < r2 < r3 <= snap.revision
        assert [kv.key for kv in snap] == sorted(
            [keys.epoch, keys.node("a" * 40), keys.status("a" * 40)]
        )
        epoch = snap.get(keys.epoch)
        assert epoch is not None and epoch.value == b"1"
        assert epoch.mod_revision == epoch.create_revision == r1 and epoch.lease == 0
        status = snap.get(keys.status("a" * 40))
        assert status is not None and status.lease == lease.id and status.mod_revision == r3
        assert [kv.key for kv in snap.under(keys.nodes)] == [keys.node("a" * 40)]
        assert snap.value(keys.settings) is None and keys.settings not in snap
        assert len(snap) == 3

        r4 = await store.put(keys.epoch, j(2))
        again = await store.load(keys.root)
        epoch2 = again.get(keys.epoch)
        assert epoch2 is not None and epoch2.value == b"2"
        assert epoch2.mod_revision == r4 and epoch2.create_revision == r1
        assert epoch2.version == epoch.version + 1
        assert again.revision >= r4 > snap.revision

        empty = await store.load(Keys(keys.cluster + "-empty").root)
        assert len(empty) == 0 and empty.revision >= r4
    finally:
        await store.revoke(lease)
        await store.delete(outside.epoch)


async def test_get_put_delete(store: Store, keys: Keys) -> None:
    assert await store.get(keys.settings) is None
    rev = await store.put(keys.settings, j({"replicas": 1}))
    kv = await store.get(keys.settings)
    assert kv is not None and kv.key == keys.settings and kv.value == j({"replicas": 1})
    assert kv.mod_revision == rev
    assert await store.delete(keys.settings) is True
    assert await store.delete(keys.settings) is False
    assert await store.get(keys.settings) is None


# --------------------------------------------------------------------------- compare-and-set


async def test_cas_applies_all_or_nothing(store: Store, keys: Keys) -> None:
    node, shard = keys.node("a" * 40), keys.shard("b" * 40)
    await store.put(keys.epoch, j(1))
    await store.put(node, j({"state": "ONLINE"}))
    snap = await store.load(keys.root)

    # Won: every compare holds, every op applied in one revision.
    assert await store.cas(
        [Compare.unchanged(keys.epoch, snap.get(keys.epoch)), Compare.unchanged(shard, None)],
        [Put(keys.epoch, j(2)), Put(shard, j({"slots": [[0, 16383]]})), Delete(node)],
    )
    after = await store.load(keys.root)
    assert after.value(keys.epoch) == j(2) and after.value(shard) is not None
    assert node not in after
    epoch_kv, shard_kv = after.get(keys.epoch), after.get(shard)
    assert epoch_kv is not None and shard_kv is not None
    assert epoch_kv.mod_revision == shard_kv.mod_revision == after.revision

    # Lost: a stale read returns False and writes nothing, not even the other ops.
    assert not await store.cas(
        [Compare.unchanged(keys.epoch, snap.get(keys.epoch))],
        [Put(keys.epoch, j(3)), Put(keys.settings, j({}))],
    )
    assert not await store.cas([Compare.unchanged(shard, None)], [Put(keys.settings, j({}))])
    final = await store.load(keys.root)
    assert final.value(keys.epoch) == j(2) and keys.settings not in final
    assert final.revision == after.revision


async def test_cas_compares(store: Store, keys: Keys) -> None:
    key, missing = keys.epoch, keys.settings
    rev = await store.put(key, j(5))
    kv = await store.get(key)
    assert kv is not None
    holds = [
        Compare.value(key, j(5)),
        Compare.mod_revision(key, rev),
        Compare.create_revision(key, kv.create_revision),
        Compare.exists(key),
        Compare.absent(missing),
        Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, 1),
        Compare(key, CompareTarget.MOD_REVISION, CompareOp.LESS, rev + 1),
        Compare(key, CompareTarget.VALUE, CompareOp.NOT_EQUAL, j(6)),
    ]
    fails = [
        Compare.value(key, j(6)),
        Compare.value(missing, b""),  # a value compare on a missing key always fails
        Compare.mod_revision(key, rev - 1),
        Compare.absent(key),
        Compare.exists(missing),
        Compare(key, CompareTarget.MOD_REVISION, CompareOp.GREATER, rev),
    ]
    for c in holds:
        assert await store.cas([c], []), c
    for c in fails:
        assert not await store.cas([c], []), c
    assert await store.cas([], [Put(missing, j(0))])  # no compares: unconditional
    with pytest.raises(TypeError):
        Compare(key, CompareTarget.VALUE, CompareOp.EQUAL, 5)


async def test_create_if_absent(store: Store, keys: Keys) -> None:
    shard_lease = keys.lease("b" * 40)
    mine, theirs = await store.grant(30), await store.grant(30)
    try:
        assert await store.create(shard_lease, j("node-a"), mine)
        assert not await store.create(shard_lease, j("node-b"), theirs)
        kv = await store.get(shard_lease)
        assert kv is not None and kv.value == j("node-a") and kv.lease == mine.id
        assert await store.revoke(mine)
        assert await store.create(shard_lease, j("node-b"), theirs.id)  # a bare id works too
        kv = await store.get(shard_lease)
        assert kv is not None and kv.value == j("node-b") and kv.lease == theirs.id
        assert await store.create(keys.replica_id(7), j({"node": "a"}))  # no lease
    finally:
        await store.revoke(theirs)


# --------------------------------------------------------------------------- leases


async def test_lease_keepalive_then_expiry(store: Store, keys: Keys) -> None:
    lease = await store.grant(1)
    assert lease.ttl >= 1  # etcd raises a TTL below its minimum (2 s)
    status = keys.status("a" * 40)
    await store.put(status, j({"health": "online"}), lease=lease)

    # Kept alive past its TTL, the key stays.
    until = time.monotonic() + lease.ttl + 1.0
    while time.monotonic() < until:
        assert await store.keepalive_once(lease) == lease.ttl
        await asyncio.sleep(lease.ttl / 4)
        assert await store.get(status) is not None

    # Left alone, it expires and takes the key with it.
    await eventually(
        lambda: _absent(store, status), timeout=lease.ttl + 3.0, what="the key to expire"
    )
    with pytest.raises(LeaseLost) as lost:
        await store.keepalive_once(lease)
    assert lost.value.lease_id == lease.id
    with pytest.raises(LeaseLost):
        await store.put(status, j({}), lease=lease)
    with pytest.raises(LeaseLost):
        await store.create(keys.lease("b" * 40), j("a"), lease)
    assert not await store.revoke(lease)


async def _absent(store: Store, key: str) -> bool:
    return await store.get(key) is None


async def test_revoke_deletes_bound_keys_at_once(store: Store, keys: Keys) -> None:
    lease = await store.grant(30)
    await store.put(keys.status("a" * 40), j({}), lease=lease)
    assert await store.create(keys.lease("b" * 40), j("a" * 40), lease)
    await store.put(keys.epoch, j(1))  # not bound: survives
    assert await store.revoke(lease)
    snap = await store.load(keys.root)
    assert [kv.key for kv in snap] == [keys.epoch]
    assert not await store.revoke(lease)
    with pytest.raises(LeaseLost):
        await store.keepalive_once(lease)


# --------------------------------------------------------------------------- watches


async def test_watch_delivers_changes_grouped_by_revision(store: Store, keys: Keys) -> None:
    start = (await store.load(keys.root)).revision + 1
    seen: list[WatchBatch] = []
    task = asyncio.create_task(collect(store.watch(keys.root, start), seen))
    try:
        a, b, c = keys.node("a" * 40), keys.node("b" * 40), keys.node("c" * 40)
        r1 = await store.put(a, j(1))
        assert await store.cas([Compare.exists(a)], [Put(b, j(2)), Put(c, j(3)), Delete(a)])
        await store.delete(b)
        await store.put(Keys(keys.cluster + "x").epoch, j(0))  # outside the prefix
        r4 = await store.put(keys.epoch, j(4))

        await eventually(lambda: len(seen) >= 4, what="four batches")
        assert [batch.revision for batch in seen] == [r1, r1 + 1, r1 + 2, r4]
        assert [[(e.key, e.value) for e in batch.events] for batch in seen] == [
            [(a, j(1))],
            [(b, j(2)), (c, j(3)), (a, None)],  # one transaction, in its order
            [(b, None)],
            [(keys.epoch, j(4))],
        ]
        assert all(e.mod_revision == batch.revision for batch in seen for e in batch.events)
        assert seen[1].events[2].deleted and not seen[1].events[0].deleted
        assert seen[0].events[0].create_revision == r1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.delete(Keys(keys.cluster + "x").epoch)

    # A watch from a past revision replays the same history.
    replay: list[WatchBatch] = []
    task = asyncio.create_task(collect(store.watch(keys.root, start), replay))
    try:
        await eventually(lambda: len(replay) >= 4, what="the replayed batches")
        assert replay[:4] == seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watch_resumes_after_the_store_restarts(backend: Backend, keys: Keys) -> None:
    """While the watch is cut off (the store restarted), changes keep being made;
    the watch resumes after the last revision it delivered: nothing lost, nothing
    repeated."""
    reconnecting = asyncio.Event()
    gate = asyncio.Event()

    async def gated_sleep(delay: float) -> None:  # the watch's reconnect backoff
        reconnecting.set()
        await gate.wait()

    watcher = backend.make(timeout=1.0, sleep=gated_sleep)
    writer = backend.make(timeout=1.0)
    seen: list[WatchBatch] = []
    task = None
    try:
        start = (await writer.load(keys.root)).revision + 1
        task = asyncio.create_task(collect(watcher.watch(keys.root, start), seen))
        await writer.put(keys.node("1" * 40), j(1))
        await eventually(lambda: len(seen) == 1, what="the first batch")

        backend.restart()
        await eventually(reconnecting.is_set, what="the watch to notice the restart")
        policy = RetryPolicy(attempts=50, timeout=10.0)
        r2 = await retry(lambda: writer.put(keys.node("2" * 40), j(2)), policy=policy)
        r3 = await retry(lambda: writer.put(keys.node("3" * 40), j(3)), policy=policy)
        assert seen[-1].events[0].key == keys.node("1" * 40)  # still cut off
        gate.set()

        await eventually(lambda: len(seen) >= 3, what="the batches made while cut off")
        assert [b.revision for b in seen][1:] == [r2, r3]
        assert [b.events[0].key for b in seen] == [keys.node(c * 40) for c in "123"]
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await watcher.close()
        await writer.close()


async def test_watch_from_a_compacted_revision(backend: Backend, store: Store, keys: Keys) -> None:
    first = await store.put(keys.epoch, j(1))
    for n in range(2, 5):
        await store.put(keys.epoch, j(n))
    last = (await store.load(keys.root)).revision
    backend.compact(last)

    with pytest.raises(WatchCompacted) as compacted:
        async for _ in store.watch(keys.root, first):
            pytest.fail("a compacted watch delivered a batch")
    assert compacted.value.compact_revision >= last

    # The caller's recovery: reload, then watch from the snapshot's revision + 1.
    snap = await store.load(keys.root)
    assert snap.value(keys.epoch) == j(4)
    seen: list[WatchBatch] = []
    task = asyncio.create_task(collect(store.watch(keys.root, snap.revision + 1), seen))
    try:
        rev = await store.put(keys.epoch, j(5))
        await eventually(lambda: seen, what="a batch after the reload")
        assert seen[0].revision == rev and seen[0].events[0].value == j(5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watch_ends_when_the_store_closes(backend: Backend, keys: Keys) -> None:
    s = backend.make(timeout=1.0)
    start = (await s.load(keys.root)).revision + 1
    seen: list[WatchBatch] = []
    task = asyncio.create_task(collect(s.watch(keys.root, start), seen))
    await s.put(keys.epoch, j(1))
    await eventually(lambda: seen, what="a batch")
    await s.close()
    with pytest.raises(StoreError):
        await asyncio.wait_for(task, 5.0)
    with pytest.raises(StoreError):
        await s.get(keys.epoch)


# --------------------------------------------------------------------------- faults


async def test_paused_store_raises_unavailable_within_the_timeout(
    backend: Backend, keys: Keys
) -> None:
    timeout = 0.5
    s = backend.make(timeout=timeout)
    try:
        kept, doomed = await s.grant(30), await s.grant(30)
        await s.put(keys.epoch, j(1))
        kv = await s.get(keys.epoch)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "load": lambda: s.load(keys.root),
            "get": lambda: s.get(keys.epoch),
            "put": lambda: s.put(keys.epoch, j(2)),
            "cas": lambda: s.cas([Compare.unchanged(keys.epoch, kv)], [Put(keys.epoch, j(3))]),
            "create": lambda: s.create(keys.settings, j({})),
            "delete": lambda: s.delete(keys.settings),
            "grant": lambda: s.grant(5),
            "keepalive": lambda: s.keepalive_once(kept),
            "revoke": lambda: s.revoke(doomed),
        }
        backend.pause()
        try:
            for name, call in calls.items():
                began = time.monotonic()
                try:
                    answer = await call()
                except StoreUnavailable:
                    pass
                else:
                    pytest.fail(f"{name} answered {answer!r} while the store was paused")
                took = time.monotonic() - began
                assert took < timeout + 0.4, f"{name} took {took:.2f}s"

            # The retry policy gives up at its deadline, not later.
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await retry(
                    lambda: s.get(keys.epoch),
                    policy=RetryPolicy(attempts=100, timeout=30),
                    deadline=began + 1.2,
                )
            assert 1.1 <= time.monotonic() - began < 1.6
        finally:
            backend.resume()

        # Back to normal. A request that timed out says nothing about its outcome:
        # the paused store still had it in its socket and may have applied it.
        got = await retry(lambda: s.get(keys.epoch), policy=RetryPolicy(timeout=10))
        assert got is not None and got.value in (j(1), j(2), j(3))
        assert await s.keepalive_once(kept) >= 1
        await s.revoke(doomed)  # True, or False if the timed-out revoke was applied
        assert await s.revoke(kept)
    finally:
        await s.close()


# --------------------------------------------------------------------------- etcd only


async def test_etcd_moves_to_the_next_endpoint(etcd: EtcdServer, keys: Keys) -> None:
    dead = f"127.0.0.1:{free_port()}"
    s = EtcdStore([dead, f"http://{etcd.endpoint}"], timeout=1.0)
    try:
        assert s.endpoint == dead
        with pytest.raises(StoreUnavailable):
            await s.get(keys.epoch)
        assert s.endpoint == etcd.endpoint
        assert await s.put(keys.epoch, j(1)) > 0
        got = await retry(lambda: s.get(keys.epoch))
        assert got is not None and got.value == j(1)
    finally:
        await s.close()


async def test_etcd_with_authentication(tmp_path: Path) -> None:
    """aetcd logs in with the credentials; the raw keepalive and watch streams carry
    the token too; a rejected token (etcd drops a user's tokens when the password
    changes) is reported as unavailable and the retry logs in again."""
    server = start_etcd(tmp_path)
    keys = Keys("auth")
    try:
        server.etcdctl("user", "add", "root:secret")
        server.etcdctl("auth", "enable")
        async with EtcdStore(server.endpoint, username="root", password="secret") as s:
            lease = await s.grant(30)
            assert await s.keepalive_once(lease) == 30
            rev = await s.put(keys.epoch, j(1), lease=lease)
            seen: list[WatchBatch] = []
            task = asyncio.create_task(collect(s.watch(keys.root, rev), seen))
            try:
                await eventually(lambda: seen, what="a batch under auth")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            subprocess.run(
                [require_binary("etcdctl"), f"--endpoints={server.url}", "--user=root:secret",
                 "user", "passwd", "root", "--interactive=false"],
                input=b"secret\n", check=True, capture_output=True, timeout=10,
            )  # fmt: skip
            with pytest.raises(StoreUnavailable, match="token"):
                await s.get(keys.epoch)
            got = await retry(lambda: s.get(keys.epoch))
            assert got is not None and got.value == j(1)

        for user, password in (("root", "wrong"), (None, None)):
            async with EtcdStore(server.endpoint, username=user, password=password) as other:
                with pytest.raises(StoreError) as refused:
                    await other.get(keys.epoch)
                assert not isinstance(refused.value, StoreUnavailable)
    finally:
        server.stop()


@pytest.mark.parametrize("endpoints", [[], "", ["ftp://127.0.0.1:2379"], ["http://"]])
def test_etcd_endpoint_validation(endpoints: object) -> None:
    with pytest.raises(ValueError):
        EtcdStore(endpoints)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- retry policy (no store)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_retry_retries_unavailable_only() -> None:
    clock = FakeClock()
    results: list[object] = [StoreUnavailable("down"), StoreUnavailable("down"), "ok"]

    async def flaky() -> object:
        clock.now += 0.01
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    assert await retry(flaky, clock=clock, sleep=clock.sleep) == "ok"
    assert len(clock.sleeps) == 2

    async def refused() -> None:
        raise StoreError("permission denied")

    with pytest.raises(StoreError, match="permission denied"):
        await retry(refused, clock=clock, sleep=clock.sleep)
    assert len(clock.sleeps) == 2  # not retried


async def test_retry_gives_up_after_its_attempts_with_growing_jittered_delays() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=6, timeout=1000, initial_delay=0.1, max_delay=0.8)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable(f"down {calls}")

    with pytest.raises(StoreUnavailable, match="down 6"):
        await retry(down, policy=policy, clock=clock, sleep=clock.sleep)
    assert calls == 6
    caps = [0.1, 0.2, 0.4, 0.8, 0.8]
    assert len(clock.sleeps) == 5
    assert all(cap / 2 <= s <= cap for s, cap in zip(clock.sleeps, caps, strict=True))


async def test_retry_never_sleeps_past_its_deadline() -> None:
    clock = FakeClock()
    policy = RetryPolicy(attempts=1000, timeout=1000, initial_delay=0.2, max_delay=0.2)

    starts: list[float] = []

    async def down() -> None:
        starts.append(clock.now)
        clock.now += 0.05
        raise StoreUnavailable("down")

    deadline = clock.now + 1.0
    with pytest.raises(StoreUnavailable):
        await retry(down, policy=policy, deadline=deadline, clock=clock, sleep=clock.sleep)
    # Every attempt started before the deadline, and it stopped instead of sleeping past it.
    assert max(starts) < deadline
    # It stops only when the next sleep (at most max_delay) would cross the deadline.
    assert starts[-1] + 0.05 + policy.max_delay >= deadline
    assert 4 <= len(starts) <= 8

    # A deadline already passed: no attempt at all.
    with pytest.raises(StoreUnavailable, match="deadline"):
        await retry(down, deadline=clock.now - 1, clock=clock, sleep=clock.sleep)


async def test_retry_cuts_a_hanging_attempt_at_the_deadline() -> None:
    async def hangs() -> None:
        await asyncio.sleep(30)

    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="deadline"):
        await retry(hangs, deadline=began + 0.2)
    assert time.monotonic() - began < 1.0


def test_retry_policy_validation_and_lease_timing() -> None:
    for bad in ({"attempts": 0}, {"timeout": 0}, {"initial_delay": 0}, {"initial_delay": 2.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    check_lease_timing(ttl=2.0, keepalive_interval=2 / 3, retry_timeout=0.5)
    with pytest.raises(ValueError, match="exceeds the lease TTL"):
        check_lease_timing(ttl=2.0, keepalive_interval=1.0, retry_timeout=0.6)
