"""Set commands: against redis-server (order-insensitive where Redis is unordered),
redis-py shapes, randomness, SPOP replication effects, scans, accounting."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from datanode.commands import scanargs
from datanode.commands.sets import sintercard_keys
from tests.collection_harness import FakeConn, check_memory
from tests.datanode_fixtures import DataNodeProcess
from tests.resp_oracle import RedisOracle, run_commands, run_script, start_redis_oracle


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisOracle]:
    server = start_redis_oracle(tmp_path_factory.mktemp("redis-oracle"))
    try:
        yield server
    finally:
        server.stop()


SCRIPT = r"""
smembers nokey
spop nokey
spop nokey 2
spop nokey 0
spop nokey -1
spop nokey x
spop nokey 1 2
sadd s a b c
spop s 0
spop s -1
srandmember nokey
srandmember nokey 2
srandmember nokey -2
srandmember nokey x
srandmember s 1 2
srandmember s -9223372036854775808
srandmember s 0
~srandmember s 5
~srandmember s 3
sinter nokey
set str x
sinter nokey str
sinter str nokey
sunion nokey str
sdiff nokey str
~sdiff s nokey
sinterstore dst nokey
sinterstore dst nokey str
sunionstore dst nokey str
sinterstore str s
sinterstore dst str
~smembers dst
sintercard 0 s
sintercard x s
sintercard -1 s
sintercard 2 s
sintercard 1 s limit -1
sintercard 1 s limit x
sintercard 1 s foo
sintercard 1 s limit
sintercard 1 s limit 1
sintercard 1 s limit 0
sintercard 1 s limit 10
sintercard 1 nokey
sintercard 1 str
sintercard 2 s str
sintercard 2 s nokey limit 0 foo
smismember nokey a b
smismember s a b nope
set str2 x
smove nokey str2 a
smove s str2 a
smove str2 s a
smove s s nope
smove s s a
smove s s2 a
smove s s2 a
smove s s2 b
smove s s2 c
exists s
~smembers s2
sadd s1 a b c d e
sadd s2 c d e f g
sadd s3 e f g h
~sinter s1 s2
~sinter s1 s2 s3
~sinter s1 s2 s3 nokey
~sunion s1 s2 s3 nokey
~sdiff s1 s2 s3 nokey
~sdiff s1 nokey
~sdiff s3 s1 s2
sinterstore d s1 s2 s3
~smembers d
sunionstore d s1 s2 s3
~smembers d
sdiffstore d s1 s2
~smembers d
sdiffstore d s1 s1
exists d
sunionstore d nokey
exists d
sinterstore s1 s1 s2
~smembers s1
sintercard 3 s1 s2 s3
sintercard 2 s1 s2
sintercard 2 s1 s2 limit 1
scard s2
scard nokey
scard str2
sismember s2 c
sismember s2 z
sismember nokey z
sismember str2 z
srem s2 c d nope
srem s2 e f g
exists s2
srem nokey a
srem str2 a
sadd str2 a
sadd s1 c
sadd s1 c d c
smembers str2
sscan s1 0 count 0
sscan s1 x
sscan nokey x
sscan nokey 0 count 0
~sscan s1 0
~sscan s1 0 match c*
~sscan s1 0 match z*
sadd
sadd s
spop
"""


@pytest.mark.parametrize("protocol", [2, 3])
def test_same_replies_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, protocol: int
) -> None:
    diffs = run_script(datanode.port, oracle.port, SCRIPT, protocol)
    assert not diffs, "\n".join(diffs)


_MEMBERS = [b"a", b"b", b"c", b"", b"1", b"2", b"10"] + [b"m%d" % i for i in range(40)]


def random_set_ops(seed: int, n: int) -> list[tuple[str, list[bytes]]]:
    rng = random.Random(seed)
    keys = [b"s1", b"s2", b"s3"]
    ops: list[tuple[str, list[bytes]]] = []
    for _ in range(n):
        k = rng.choice(keys)
        t = rng.randrange(12)
        if t < 3:
            ops.append(("", [b"SADD", k, *rng.choices(_MEMBERS, k=rng.randint(1, 15))]))
        elif t == 3:
            ops.append(("", [b"SREM", k, *rng.choices(_MEMBERS, k=rng.randint(1, 6))]))
        elif t == 4:
            ops.append(("", [b"SMOVE", k, rng.choice(keys), rng.choice(_MEMBERS)]))
        elif t == 5:
            ops.append(("~", [rng.choice([b"SINTER", b"SUNION", b"SDIFF"]), k, *rng.sample(keys, 2)]))
        elif t == 6:
            cmd = rng.choice([b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE"])
            ops.append(("", [cmd, rng.choice(keys), k, rng.choice(keys)]))
        elif t == 7:
            ops.append(("", [b"SINTERCARD", b"2", k, rng.choice(keys)]))
        elif t == 8:
            ops.append(("", [b"SMISMEMBER", k, *rng.choices(_MEMBERS, k=3)]))
        elif t == 9:
            if rng.random() < 0.5:
                ops.append(("", [b"SCARD", k]))
            else:
                ops.append(("", [b"SISMEMBER", k, rng.choice(_MEMBERS)]))
        elif t == 10:
            ops.append(("~", [b"SSCAN", k, b"0", b"COUNT", b"1000"]))
        else:
            ops.append(("~", [b"SMEMBERS", k]))
    for k in keys:
        ops.append(("~", [b"SMEMBERS", k]))
    return ops


@pytest.mark.parametrize("seed", [1, 2])
def test_random_ops_same_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, seed: int
) -> None:
    ops = random_set_ops(seed, 1500)
    for protocol in (2, 3):
        diffs = run_commands(datanode.port, oracle.port, ops, protocol)
        assert not diffs, "\n".join(diffs[:10])


@pytest.mark.parametrize("seed", [3, 4])
def test_memory_accounting_and_no_empty_sets(seed: int) -> None:
    conn = FakeConn()
    for _, argv in random_set_ops(seed, 3000):
        conn.call(*argv)
        check_memory(conn.ks)
    for key in (b"s1", b"s2", b"s3"):
        conn.call("SPOP", key, "3")
        check_memory(conn.ks)
        conn.call("SPOP", key)
        check_memory(conn.ks)


def test_spop_effects_replicate_the_removed_members() -> None:
    conn = FakeConn()
    conn.call("SADD", "s", *[f"m{i}" for i in range(10)])
    reply = conn.call("SPOP", "s")
    assert conn.effects is not None and conn.effects[0][:2] == [b"SREM", b"s"]
    assert reply.endswith(conn.effects[0][2] + b"\r\n")
    conn.call("SPOP", "s", "4")
    effect = conn.effects
    assert effect is not None and effect[0][:2] == [b"SREM", b"s"] and len(effect[0]) == 6
    members = set(effect[0][2:])
    assert not members & conn.ks.get(b"s")
    conn.call("SPOP", "s", "100")
    assert conn.effects == [[b"DEL", b"s"]]
    assert conn.ks.get(b"s") is None
    check_memory(conn.ks)


def test_spop_big_set_pops_distinct_members() -> None:
    conn = FakeConn()
    members = {f"m{i}".encode() for i in range(5000)}
    conn.call("SADD", "s", *members)
    popped = []
    for _ in range(100):
        conn.call("SPOP", "s")
        assert conn.effects is not None
        popped.append(conn.effects[0][2])
    conn.call("SPOP", "s", "900")
    assert conn.effects is not None
    popped += conn.effects[0][2:]
    assert len(set(popped)) == 1000 and set(popped) <= members
    assert len(conn.ks.get(b"s")) == 4000
    check_memory(conn.ks)


def test_sintercard_keys_helper() -> None:
    assert sintercard_keys([b"SINTERCARD", b"2", b"a", b"b", b"LIMIT", b"1"]) == [b"a", b"b"]
    assert sintercard_keys([b"SINTERCARD", b"x", b"a"]) == []


# ---------------------------------------------------------------------- redis-py
def test_basics(r: redis.Redis) -> None:
    assert r.sadd("s", "a", "b", "c", "a") == 3
    assert r.smembers("s") == {b"a", b"b", b"c"}
    assert r.sismember("s", "a") is True or r.sismember("s", "a") == 1
    assert r.smismember("s", ["a", "z"]) in ([1, 0], [True, False])
    assert r.srem("s", "a", "z") == 1
    assert r.scard("s") == 2
    r.sadd("t", "b", "x")
    assert r.sinter("s", "t") == {b"b"}
    assert r.sunion("s", "t") == {b"b", b"c", b"x"}
    assert r.sdiff("s", "t") == {b"c"}
    assert r.sinterstore("d", ["s", "t"]) == 1
    assert r.smembers("d") == {b"b"}
    assert r.sdiffstore("d", ["t", "t"]) == 0
    assert r.exists("d") == 0


def test_resp3_sets(datanode: DataNodeProcess) -> None:
    r3 = datanode.client(protocol=3)
    try:
        r3.flushall()
        r3.sadd("s", "a", "b")
        assert r3.smembers("s") == {b"a", b"b"}
        assert r3.smembers("nokey") == set()
        assert set(r3.spop("s", 5)) == {b"a", b"b"}
        assert r3.spop("s") is None
    finally:
        r3.close()


def test_srandmember_distribution(r: redis.Redis) -> None:
    members = [f"m{i}".encode() for i in range(10)]
    r.sadd("s", *members)
    counts = Counter(r.srandmember("s") for _ in range(1000))
    assert set(counts) == set(members)
    assert min(counts.values()) > 40  # expectation 100 each
    distinct = r.srandmember("s", 5)
    assert len(distinct) == 5 and len(set(distinct)) == 5
    assert sorted(r.srandmember("s", 50)) == sorted(members)
    assert len(r.srandmember("s", -50)) == 50


def test_spop_small_set_is_random(r: redis.Redis) -> None:
    firsts = Counter()
    for _ in range(200):
        r.sadd("s", "a", "b", "c")
        firsts[r.spop("s")] += 1
        r.delete("s")
    assert set(firsts) == {b"a", b"b", b"c"}


def _sscan_all(r: redis.Redis, key: str, count: int, mutate=None) -> list[bytes]:  # type: ignore[no-untyped-def]
    cursor = 0
    seen: list[bytes] = []
    step = 0
    while True:
        cursor, page = r.sscan(key, cursor, count=count)
        seen.extend(page)
        step += 1
        if mutate is not None:
            mutate(step)
        if cursor == 0:
            return seen


def test_sscan_big_set_with_changes(r: redis.Redis) -> None:
    members = [f"m{i}" for i in range(2000)]
    r.sadd("s", *members)

    def mutate(step: int) -> None:
        r.sadd("s", *[f"new{step}-{i}" for i in range(30)])  # may rehash a table
        r.srem("s", f"m{1999 - step}")

    seen = _sscan_all(r, "s", 25, mutate)
    assert len(seen) == len(set(seen))
    steps = len(seen) // 25 + 2
    stable = {m.encode() for m in members[: 2000 - steps - 1]}
    assert stable <= set(seen)


def test_scan_snapshot_eviction_falls_back(r: redis.Redis) -> None:
    r.sadd("s", *[f"m{i}" for i in range(500)])
    cursor, page = r.sscan("s", 0, count=100)
    assert cursor != 0 and len(page) == 100
    # Start enough other scans to evict this scan's snapshot.
    for _ in range(scanargs._MAX_SCANS + 5):
        r.sscan("s", 0, count=10)
    seen = set(page)
    while cursor != 0:
        cursor, page = r.sscan("s", cursor, count=100)
        seen.update(page)
    # The set did not change, so the positional fallback still covers everything.
    assert seen == {f"m{i}".encode() for i in range(500)}


def test_parse_cursor() -> None:
    assert scanargs.parse_cursor(b"0") == 0
    assert scanargs.parse_cursor(b"") == 0
    assert scanargs.parse_cursor(b"+7") == 7
    assert scanargs.parse_cursor(b"-1") == 2**64 - 1
    assert scanargs.parse_cursor(b"18446744073709551615") == 2**64 - 1
    for bad in (b" 1", b"1 ", b"x", b"18446744073709551616", b"1.0", b"\xd9\xa1"):
        with pytest.raises(Exception, match="invalid cursor"):
            scanargs.parse_cursor(bad)


def test_parse_scan_args() -> None:
    count, match, extra = scanargs.parse_scan_args([b"SCAN", b"0"], 2)
    assert (count, match, extra) == (10, None, scanargs.ScanExtra())
    count, match, extra = scanargs.parse_scan_args(
        [b"SCAN", b"0", b"match", b"a*", b"COUNT", b"5", b"type", b"HASH"], 2, allow_type=True
    )
    assert count == 5 and match is not None and match(b"ab") and not match(b"b")
    assert extra.type == b"hash"
    assert scanargs.parse_scan_args([b"X", b"k", b"0", b"MATCH", b"*"], 3)[1] is None
    for bad in ([b"COUNT", b"0"], [b"TYPE", b"hash"], [b"COUNT"], [b"NOVALUES"], [b"FOO", b"1"]):
        with pytest.raises(Exception, match="syntax error"):
            scanargs.parse_scan_args([b"X", b"k", b"0", *bad], 3)
    with pytest.raises(Exception, match="not an integer"):
        scanargs.parse_scan_args([b"X", b"k", b"0", b"COUNT", b"x"], 3)
