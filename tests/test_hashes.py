"""Hash commands: byte-for-byte against redis-server, redis-py shapes, scans, accounting."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

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


# Floats whose long-double sum (Redis) and double sum (here) print the same.
SCRIPT = r"""
hset h a 1 b
hset h a 1 b 2
hset h a 1
hmset h a 1 b
hmset h c 3
hgetall nokey
hgetall h
hincrby h a x
hincrby h a 1
hincrby h new 5
hincrby h new -7
hset h s foo
hincrby h s 1
hincrbyfloat h s 1
hincrbyfloat h a inf
hincrbyfloat h a nan
hincrbyfloat h a x
hincrbyfloat h a 1.5
hincrbyfloat h a 0.1
hincrbyfloat h fl 10.5
hincrbyfloat h fl -10.5
hincrbyfloat h fl 1e3
hset h big 9223372036854775807
hincrby h big 1
hset h big -9223372036854775808
hincrby h big -1
hincrby h big 9223372036854775808
hset h inf inf
hincrbyfloat h inf 1
hset h sp " 1"
hincrby h sp 1
hincrbyfloat h sp 1
hrandfield h x
hrandfield h 1 foo
hrandfield h -9223372036854775808
hrandfield h 1 withvalues x
hrandfield nokey
hrandfield nokey 2
hrandfield nokey 2 withvalues
hrandfield nokey 2 foo
hrandfield nokey x
hrandfield h 0
hrandfield h 0 withvalues
hrandfield h 5000000000000000000 withvalues
hrandfield h -5000000000000000000 withvalues
~hrandfield h 100
~hrandfield h 100 withvalues
hscan h " 1"
hscan h 0 count 0
hscan h 0 count x
hscan h 0 match
hscan h 0 foo bar
hscan nokey 0 count 0
hscan nokey x
hmget nokey a b
hmget h a nope b
hstrlen h a
hstrlen h nope
hstrlen nokey a
set str x
hmget str a
hgetall str
hscan str 0
hscan str x
hset str a b
hincrby str a 1
hincrbyfloat str a 1
hdel str a
hlen str
hkeys str
hvals str
hexists str a
hstrlen str a
hrandfield str
hsetnx str a b
hkeys nokey
hvals nokey
hlen nokey
hlen h
hget h a
hget h nope
hget nokey a
hexists h a
hexists h nope
hexists nokey a
hsetnx h a 5
hsetnx h zz 5
hsetnx newh f v
hgetall newh
hdel h a nope b a
hdel nokey a
hkeys h
hvals h
hdel newh f
exists newh
hdel h c new s big inf fl zz sp
exists h
hset h x 1 "" empty
hget h ""
hscan h 0
hscan h 0 match x*
hscan h 0 match y*
hscan h 0 count 1 match *
hscan h 123
hscan h ""
hscan h +0
hset
hset h
hset h f
hget h
hdel h
"""


@pytest.mark.parametrize("protocol", [2, 3])
def test_same_replies_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, protocol: int
) -> None:
    diffs = run_script(datanode.port, oracle.port, SCRIPT, protocol)
    assert not diffs, "\n".join(diffs)


_FIELDS = [b"a", b"b", b"c", b"", b"f" * 64] + [b"f%d" % i for i in range(20)]
_VALUES = [b"1", b"-3", b"x", b"", b"9223372036854775806", b"v" * 64]
_LONG = b"v" * 80


def random_hash_ops(seed: int, n: int, long_values: bool = False) -> list[tuple[str, list[bytes]]]:
    """Random hash commands. Values up to 64 bytes keep Redis's hashes in its compact
    encoding, whose order (insertion) is ours too, so replies compare exactly; with
    ``long_values`` Redis switches to a hash table and whole-hash replies compare
    unordered."""
    rng = random.Random(seed)
    values = _VALUES + [_LONG] if long_values else _VALUES
    whole = "~" if long_values else ""
    keys = [b"h1", b"h2"]
    ops: list[tuple[str, list[bytes]]] = []
    for _ in range(n):
        k = rng.choice(keys)
        f = rng.choice(_FIELDS)
        t = rng.randrange(12)
        if t < 3:
            pairs: list[bytes] = []
            for _ in range(rng.randint(1, 6)):
                pairs += [rng.choice(_FIELDS), rng.choice(values)]
            ops.append(("", [rng.choice([b"HSET", b"HMSET"]), k, *pairs]))
        elif t == 3:
            ops.append(("", [b"HSETNX", k, f, rng.choice(values)]))
        elif t == 4:
            ops.append(("", [b"HDEL", k, *rng.choices(_FIELDS, k=rng.randint(1, 4))]))
        elif t == 5:
            ops.append(("", [b"HINCRBY", k, f, rng.choice([b"1", b"-2", b"100", b"x"])]))
        elif t == 6:
            # Own fields: near 2**63, Redis's long double sums print other digits.
            fl = rng.choice([b"fl1", b"fl2"])
            ops.append(("", [b"HINCRBYFLOAT", k, fl, rng.choice([b"1", b"-2", b"0.5", b"x"])]))
        elif t == 7:
            ops.append(("", [b"HMGET", k, *rng.choices(_FIELDS, k=3)]))
        elif t == 8:
            ops.append(("", [rng.choice([b"HGET", b"HEXISTS", b"HSTRLEN"]), k, f]))
        elif t == 9:
            ops.append(("", [b"HLEN", k]))
            ops.append((whole, [rng.choice([b"HKEYS", b"HVALS"]), k]))
        elif t == 10 and not long_values:
            ops.append(("", [b"HSCAN", k, b"0", b"COUNT", b"1000"]))
        else:
            ops.append((whole, [b"HGETALL", k]))
    for k in keys:
        ops.append((whole, [b"HGETALL", k]))
    return ops


@pytest.mark.parametrize("seed,long_values", [(1, False), (2, False), (3, True)])
def test_random_ops_same_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, seed: int, long_values: bool
) -> None:
    ops = random_hash_ops(seed, 1500, long_values)
    for protocol in (2, 3):
        diffs = run_commands(datanode.port, oracle.port, ops, protocol)
        assert not diffs, "\n".join(diffs[:10])


@pytest.mark.parametrize("seed", [4, 5])
def test_memory_accounting_and_no_empty_hashes(seed: int) -> None:
    conn = FakeConn()
    for _, argv in random_hash_ops(seed, 3000, long_values=True):
        conn.call(*argv)
        check_memory(conn.ks)


def test_hincrbyfloat_replicates_the_result() -> None:
    conn = FakeConn()
    assert conn.call("HINCRBYFLOAT", "h", "f", "1.5") == b"$3\r\n1.5\r\n"
    assert conn.effects == [[b"HSET", b"h", b"f", b"1.5"]]
    assert conn.call("HINCRBYFLOAT", "h", "f", "x").startswith(b"-ERR")
    assert conn.effects is None


# ---------------------------------------------------------------------- redis-py
def test_basics_resp2(r: redis.Redis) -> None:
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", "a", "3") == 0
    assert r.hgetall("h") == {b"a": b"3", b"b": b"2"}
    assert r.hkeys("h") == [b"a", b"b"]
    assert r.hvals("h") == [b"3", b"2"]
    assert r.hmget("h", "a", "zz", "b") == [b"3", None, b"2"]
    assert r.hincrby("h", "a", 10) == 13
    assert r.hincrbyfloat("h", "b", 0.5) == 2.5
    assert r.hstrlen("h", "b") == 3
    assert r.hdel("h", "a", "b", "c") == 2
    assert r.exists("h") == 0


def test_shapes_resp3(datanode: DataNodeProcess) -> None:
    r3 = datanode.client(protocol=3)
    try:
        r3.flushall()
        assert r3.hgetall("nokey") == {}
        r3.hset("h", mapping={"a": "1", "b": "2"})
        assert r3.hgetall("h") == {b"a": b"1", b"b": b"2"}
        assert r3.hget("h", "zz") is None
        pairs = r3.hrandfield("h", 2, withvalues=True)
        assert sorted(map(tuple, pairs)) == [(b"a", b"1"), (b"b", b"2")]
        assert r3.hrandfield("nokey") is None
    finally:
        r3.close()


def test_hrandfield(r: redis.Redis) -> None:
    fields = {f"f{i}".encode(): f"v{i}".encode() for i in range(50)}
    r.hset("h", mapping=fields)
    assert r.hrandfield("h") in fields
    picked = r.hrandfield("h", 20)
    assert len(picked) == 20 and len(set(picked)) == 20 and set(picked) <= set(fields)
    assert sorted(r.hrandfield("h", 100)) == sorted(fields)
    repeated = r.hrandfield("h", -200)
    assert len(repeated) == 200 and set(repeated) <= set(fields)
    flat = r.hrandfield("h", -5, withvalues=True)
    assert len(flat) == 10
    for f, v in zip(flat[::2], flat[1::2], strict=True):
        assert fields[f] == v


def _full_scan(r: redis.Redis, key: str, count: int, mutate=None) -> list[bytes]:  # type: ignore[no-untyped-def]
    seen: list[bytes] = []
    cursor = 0
    steps = 0
    while True:
        cursor, page = r.hscan(key, cursor, count=count)
        seen.extend(page)
        steps += 1
        if mutate is not None:
            mutate(steps)
        if cursor == 0:
            return seen


def test_hscan_big_hash_with_changes(r: redis.Redis) -> None:
    n = 1000
    r.hset("h", mapping={f"f{i}": str(i) for i in range(n)})

    def mutate(step: int) -> None:
        # Delete some fields that were not returned yet, add new ones.
        r.hdel("h", f"gone{step}")
        r.hset("h", f"new{step}", "x")
        if step == 3:
            r.hdel("h", *[f"f{i}" for i in range(900, 950)])

    seen = _full_scan(r, "h", 10, mutate)
    assert len(seen) == len(set(seen)), "a field was returned twice"
    stable = {f"f{i}".encode() for i in range(n) if not 900 <= i < 950}
    assert stable <= set(seen)
    assert not {f"f{i}".encode() for i in range(900, 950)} & set(seen)  # removed in time
    # Values come along with fields.
    cursor, page = r.hscan("h", 0, match="f1?", count=2000)
    assert cursor == 0 and page == {f"f1{i}".encode(): f"1{i}".encode() for i in range(10)}


def test_hscan_small_hash_in_one_call(r: redis.Redis) -> None:
    r.hset("h", mapping={"a": "1", "b": "2", "c": "3"})
    assert r.hscan("h", 0, count=1) == (0, {b"a": b"1", b"b": b"2", b"c": b"3"})
    assert r.hscan("h", 0, match="b") == (0, {b"b": b"2"})
    assert r.hscan("h", 0, no_values=True) == (0, [b"a", b"b", b"c"])


def test_errors(r: redis.Redis) -> None:
    r.set("s", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.hset("s", "a", "b")
    r.hset("h", "s", "abc")
    with pytest.raises(redis.ResponseError, match="^hash value is not an integer"):
        r.hincrby("h", "s", 1)
    with pytest.raises(redis.ResponseError, match="^hash value is not a float"):
        r.hincrbyfloat("h", "s", 1)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'hset'"):
        r.execute_command("HSET", "h", "a", "1", "b")
    with pytest.raises(redis.ResponseError, match="^invalid cursor"):
        r.execute_command("HSCAN", "h", "x")
