"""List commands: byte-for-byte against redis-server, redis-py shapes, accounting."""

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


SCRIPT = r"""
lpop nokey
lpop nokey 2
lpop nokey 0
lpop nokey -1
lpop nokey x
rpop nokey 3
rpush l a b c
lpop l 0
lpop l -1
lpop l 1 2
lpop l 1
lpop l 10
exists l
rpush l a b c d e f
rpop l 2
rpop l 10
exists l
lpush l a b c
lrange l 0 -1
rpush l a b c b a
lpos l b
lpos l b rank 0
lpos l b count -1
lpos l b count x
lpos l b maxlen -1
lpos l b rank
lpos l b foo 1
lpos nokey b count 0
lpos nokey b
lpos nokey b rank 0
lpos l b rank -1
lpos l b count 0
lpos l b count 0 rank -1
lpos l b count 1 rank 2
lpos l b count 5 rank 3
lpos l b maxlen 2
lpos l a maxlen 1 count 0 rank -1
lpos l a maxlen 1 count 0 rank 1
lpos l c count 0 maxlen 3
lpos l c count 0 rank -2 maxlen 3
lpos l c rank 9223372036854775807
lset nokey x y
lset nokey 5 y
lset l 10 y
lset l -9 y
lset l x y
lset l -1 z
lset l 0 first
lrange l 0 -1
linsert l middle a x
linsert nokey before a x
linsert nokey middle a x
linsert l before nope x
linsert l after a x
linsert l before a x
linsert l before first x0
lrange l 0 -1
lrem l x a
lrem l 0 nope
lrem nokey 0 a
lrem nokey x a
lrem l -1 b
lrange l 0 -1
rpush l x x x x x x x x x x x x
lrem l 11 x
lrange l 0 -1
rpush l x x x x x x x x x x x x
lrem l -11 x
lrange l 0 -1
lrem l 2 x
lrem l -2 x
lrange l 0 -1
lrem l 0 x
lrange l 0 -1
ltrim nokey 0 1
ltrim nokey x 1
ltrim l x 1
ltrim l 1 -2
lrange l 0 -1
ltrim l 5 1
exists l
rpush l 1 2 3 4 5 6 7 8 9 10
ltrim l 0 -100
exists l
rpush l 1 2 3 4 5 6 7 8 9 10
ltrim l -3 100
lrange l 0 -1
rpush l 1 2 3 4 5 6 7 8 9 10
ltrim l 2 3
lrange l 0 -1
ltrim l 1 1
lrange l 0 -1
ltrim l 0 0
lrange l 0 -1
del l
lmove nokey d left right
lmove nokey d up right
lmove l d left up
rpush l a b c
set str x
lmove l str left right
lmove str l left right
lmove l l left right
lmove l l right left
lmove l l left left
lmove l l right right
lrange l 0 -1
lmove l d right left
lmove l d left left
lmove l d LEFT RIGHT
lmove l d left right
exists l
lrange d 0 -1
rpoplpush d d
lrange d 0 -1
rpoplpush d newlist
rpoplpush d str
rpoplpush str d
rpoplpush nokey d
lrange newlist 0 -1
lindex d x
lindex d 0
lindex d -1
lindex d -2
lindex d -3
lindex d 5
lindex nokey 0
lindex str 0
lpushx nokey a
rpushx nokey a
exists nokey
rpushx d z y
lpushx d z y
llen d
llen nokey
llen str
lrange nokey 0 1
lrange d x 1
lrange d -100 100
lrange d 2 1
lrange d -2 -1
lrange d -1 -2
lrange d 1 1
lrange d 5 100
lrange d 0 0
lrange str 0 1
lpush str a
rpop str
lpop str 1
lpush
lpush k
lrange k 0
linsert k before a
"""


@pytest.mark.parametrize("protocol", [2, 3])
def test_same_replies_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, protocol: int
) -> None:
    diffs = run_script(datanode.port, oracle.port, SCRIPT, protocol)
    assert not diffs, "\n".join(diffs)


_MEMBERS = [b"a", b"b", b"c", b"", b"zz", b"long-" + b"x" * 40] + [b"m%d" % i for i in range(30)]


def random_list_ops(seed: int, n: int) -> list[tuple[str, list[bytes]]]:
    rng = random.Random(seed)
    keys = [b"l1", b"l2", b"l3"]

    def idx() -> bytes:
        return b"%d" % (rng.randint(-6, 6) if rng.random() < 0.6 else rng.randint(-80, 80))

    ops: list[tuple[str, list[bytes]]] = []
    for _ in range(n):
        k = rng.choice(keys)
        m = rng.choice(_MEMBERS)
        t = rng.randrange(16)
        if t < 3:
            cmd = rng.choice([b"LPUSH", b"RPUSH", b"LPUSHX", b"RPUSHX"])
            ops.append(("", [cmd, k, *rng.choices(_MEMBERS, k=rng.randint(1, 12))]))
        elif t < 5:
            ops.append(("", [rng.choice([b"LPOP", b"RPOP"]), k] + ([idx()] if rng.random() < 0.5 else [])))
        elif t < 7:
            ops.append(("", [b"LRANGE", k, idx(), idx()]))
        elif t == 7:
            ops.append(("", [b"LTRIM", k, idx(), idx()]))
        elif t == 8:
            ops.append(("", [b"LREM", k, idx(), m]))
        elif t == 9:
            ops.append(("", [b"LINSERT", k, rng.choice([b"BEFORE", b"AFTER"]), m, rng.choice(_MEMBERS)]))
        elif t == 10:
            cmd = [b"LPOS", k, m]
            for opt in rng.sample([b"RANK", b"COUNT", b"MAXLEN"], rng.randrange(4)):
                cmd += [opt, idx()]
            ops.append(("", cmd))
        elif t == 11:
            sides = [b"LEFT", b"RIGHT"]
            ops.append(("", [b"LMOVE", k, rng.choice(keys), rng.choice(sides), rng.choice(sides)]))
        elif t == 12:
            ops.append(("", [b"RPOPLPUSH", k, rng.choice(keys)]))
        elif t == 13:
            ops.append(("", [b"LSET", k, idx(), m]))
        elif t == 14:
            ops.append(("", [b"LINDEX", k, idx()]))
        else:
            ops.append(("", [b"LLEN", k]))
    for k in keys:
        ops.append(("", [b"LRANGE", k, b"0", b"-1"]))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_ops_same_as_redis(
    datanode: DataNodeProcess, oracle: RedisOracle, seed: int
) -> None:
    ops = random_list_ops(seed, 1500)
    for protocol in (2, 3):
        diffs = run_commands(datanode.port, oracle.port, ops, protocol)
        assert not diffs, "\n".join(diffs[:10])


@pytest.mark.parametrize("seed", [4, 5])
def test_memory_accounting_and_no_empty_lists(seed: int) -> None:
    conn = FakeConn()
    for _, argv in random_list_ops(seed, 3000):
        conn.call(*argv)
        check_memory(conn.ks)


# ---------------------------------------------------------------------- redis-py
def test_push_pop_basics(r: redis.Redis) -> None:
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "x", "y") == 5
    assert r.lrange("l", 0, -1) == [b"y", b"x", b"a", b"b", b"c"]
    assert r.lpop("l") == b"y"
    assert r.rpop("l", 2) == [b"c", b"b"]
    assert r.lpop("l", 10) == [b"x", b"a"]
    assert r.exists("l") == 0
    assert r.lpop("l") is None
    assert r.lpop("l", 3) is None
    assert r.lpushx("l", "a") == 0 and r.exists("l") == 0


def test_resp3_nulls(datanode: DataNodeProcess) -> None:
    r3 = datanode.client(protocol=3)
    try:
        r3.flushall()
        assert r3.lpop("nokey") is None
        assert r3.lpop("nokey", 2) is None
        assert r3.lindex("nokey", 0) is None
        assert r3.lpos("nokey", "a") is None
        assert r3.lpos("nokey", "a", count=0) == []
        assert r3.lmove("nokey", "d") is None
    finally:
        r3.close()


@pytest.mark.parametrize("n", [100, 300, 500, 600])
def test_lrange_benchmark_sizes(r: redis.Redis, n: int) -> None:
    values = [f"v{i}".encode() * (1 + i % 3) for i in range(n)]
    r.rpush("big", *values)
    assert r.lrange("big", 0, n - 1) == values
    assert r.lrange("big", 0, -1) == values
    assert r.lrange("big", n // 2, -1) == values[n // 2 :]
    assert r.lrange("big", -10, -1) == values[-10:]
    assert r.lrange("big", 5, 15) == values[5:16]


def test_long_elements(r: redis.Redis) -> None:
    big = b"x" * 100_000
    r.rpush("l", "a", big, "b")
    assert r.lrange("l", 0, -1) == [b"a", big, b"b"]
    assert r.lpop("l", 2) == [b"a", big]


def test_lpos_lmove_lrem(r: redis.Redis) -> None:
    r.rpush("l", "a", "b", "c", "b", "a", "b")
    assert r.lpos("l", "b") == 1
    assert r.lpos("l", "b", rank=-1) == 5
    assert r.lpos("l", "b", count=0) == [1, 3, 5]
    assert r.lpos("l", "b", rank=2, count=2) == [3, 5]
    assert r.lpos("l", "b", maxlen=1) is None
    assert r.lmove("l", "l", "LEFT", "RIGHT") == b"a"
    assert r.lrange("l", 0, -1) == [b"b", b"c", b"b", b"a", b"b", b"a"]
    assert r.lrem("l", -2, "b") == 2
    assert r.lrange("l", 0, -1) == [b"b", b"c", b"a", b"a"]
    assert r.rpoplpush("l", "other") == b"a"
    assert r.lrange("other", 0, -1) == [b"a"]


def test_errors(r: redis.Redis) -> None:
    r.set("s", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.lpush("s", "a")
    with pytest.raises(redis.ResponseError, match="^no such key"):
        r.lset("nokey", 0, "a")
    r.rpush("l", "a")
    with pytest.raises(redis.ResponseError, match="^index out of range"):
        r.lset("l", 5, "a")
    with pytest.raises(redis.ResponseError, match="must be positive"):
        r.lpop("l", -1)
    with pytest.raises(redis.ResponseError, match="RANK can't be zero"):
        r.lpos("l", "a", rank=0)
