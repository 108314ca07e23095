"""Strings and generic key commands against a real data node (redis-py, RESP2 and RESP3)."""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import wait_until


def test_set_get_and_options(r: redis.Redis) -> None:
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.get("k") == b"v"
    assert r.set("missing", "x", xx=True) is None
    assert r.exists("missing") == 0
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.set("k", "z", ex=100)
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "z2", keepttl=True)
    assert 99 <= r.ttl("k") <= 100
    assert r.set("k", "z3")
    assert r.ttl("k") == -1
    assert r.set("k", "p", px=5000) and 4000 < r.pttl("k") <= 5000
    at = int(time.time()) + 1000
    assert r.set("k", "e", exat=at) and r.expiretime("k") == at
    assert r.set("k", "e", pxat=at * 1000) and r.execute_command("PEXPIRETIME", "k") == at * 1000


def test_set_errors(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="^syntax error"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="^syntax error"):
        r.execute_command("SET", "k", "v", "EX", "10", "PX", "100")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.execute_command("SET", "k", "v", "EX", "0")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.execute_command("SET", "k", "v", "EX", "ten")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'set' command"):
        r.execute_command("SET", "k")
    r.rpush("list", "a")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE Operation against a key holding"):
        r.get("list")


def test_counters(r: redis.Redis) -> None:
    assert r.incr("n") == 1
    assert r.incrby("n", 10) == 11
    assert r.decr("n") == 10
    assert r.decrby("n", 4) == 6
    assert r.incrbyfloat("f", 10.5) == 10.5
    assert r.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    assert r.get("f") == b"10.6"
    assert r.incrbyfloat("f", 5.0e3) == pytest.approx(5010.6)
    r.set("s", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("s")
    for bad in (" 1", "1 ", "+1", "01", "1.0", ""):
        r.set("b", bad)
        with pytest.raises(redis.ResponseError):
            r.incr("b")
    r.set("max", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.incr("max")
    with pytest.raises(redis.ResponseError, match="not a valid float"):
        r.incrbyfloat("f", "nan")
    r.set("t", "5", ex=100)
    r.incr("t")
    assert r.ttl("t") > 0  # INCR keeps the TTL


def test_multi_key_strings(r: redis.Redis) -> None:
    assert r.mset({"a": "1", "b": "2"})
    assert r.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r.msetnx({"a": "x", "c": "3"}) is False
    assert r.get("c") is None
    assert r.msetnx({"c": "3", "d": "4"}) is True
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
        r.execute_command("MSET", "a", "1", "b")
    assert r.getset("a", "9") == b"1"
    assert r.getdel("a") == b"9" and r.exists("a") == 0
    r.set("g", "v")
    assert r.getex("g", ex=50) == b"v" and r.ttl("g") > 0
    assert r.getex("g", persist=True) == b"v" and r.ttl("g") == -1
    assert r.setnx("g", "other") is False and r.setnx("h", "new") is True
    assert r.setex("sx", 100, "v") and r.ttl("sx") > 90
    assert r.psetex("psx", 100000, "v") and r.pttl("psx") > 90000


def test_ranges_and_append(r: redis.Redis) -> None:
    assert r.append("s", "Hello") == 5
    assert r.append("s", " World") == 11
    assert r.strlen("s") == 11 and r.strlen("none") == 0
    assert r.getrange("s", 0, 4) == b"Hello"
    assert r.getrange("s", -5, -1) == b"World"
    assert r.getrange("s", 5, 1) == b""
    assert r.getrange("s", 0, 1000) == b"Hello World"
    assert r.setrange("s", 6, "Redis") == 11 and r.get("s") == b"Hello Redis"
    assert r.setrange("pad", 3, "x") == 4 and r.get("pad") == b"\x00\x00\x00x"
    with pytest.raises(redis.ResponseError, match="offset is out of range"):
        r.setrange("s", -1, "x")


def test_binary_safe_values(r: redis.Redis) -> None:
    blob = bytes(range(256)) * 10 + b"\r\n$3\r\n"
    r.set(b"\x00bin\xff", blob)
    assert r.get(b"\x00bin\xff") == blob


def test_keys_commands(r: redis.Redis) -> None:
    r.mset({"user:1": "a", "user:2": "b", "other": "c"})
    assert sorted(r.keys("user:*")) == [b"user:1", b"user:2"]
    assert sorted(r.keys("user:[1]")) == [b"user:1"]
    assert sorted(r.keys("*")) == [b"other", b"user:1", b"user:2"]
    assert r.exists("user:1", "user:2", "nope", "user:1") == 3
    assert r.type("user:1") == b"string" and r.type("nope") == b"none"
    r.rpush("l", "x")
    r.hset("h", "f", "v")
    r.sadd("s", "m")
    r.zadd("z", {"m": 1})
    assert [r.type(k) for k in ("l", "h", "s", "z")] == [b"list", b"hash", b"set", b"zset"]
    assert r.delete("user:1", "user:2", "nope") == 2
    assert r.unlink("other") == 1
    assert r.dbsize() == 4
    assert r.randomkey() in {b"l", b"h", b"s", b"z"}
    assert r.touch("l", "h", "zz") == 2


def test_rename_and_copy(r: redis.Redis) -> None:
    r.set("a", "1", ex=100)
    assert r.rename("a", "b")
    assert r.get("b") == b"1" and r.ttl("b") > 0 and r.exists("a") == 0
    with pytest.raises(redis.ResponseError, match="^no such key"):
        r.rename("a", "c")
    r.set("c", "3")
    assert r.renamenx("b", "c") is False
    assert r.renamenx("b", "d") is True
    r.rpush("l", "1", "2")
    assert r.copy("l", "l2") is True
    r.rpush("l2", "3")
    assert r.lrange("l", 0, -1) == [b"1", b"2"]
    assert r.copy("l", "l2") is False
    assert r.copy("l", "l2", replace=True) is True and r.llen("l2") == 2


def test_expire_family(r: redis.Redis) -> None:
    r.set("k", "v")
    assert r.ttl("k") == -1 and r.ttl("none") == -2 and r.pttl("none") == -2
    assert r.expire("k", 100, xx=True) is False
    assert r.expire("k", 100, nx=True) is True
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 200, gt=True) is True
    assert r.expire("k", 10, lt=True) is True and r.ttl("k") <= 10
    assert r.pexpire("k", 100000) and r.pttl("k") > 90000
    with pytest.raises(redis.ResponseError, match="NX and XX, GT or LT options"):
        r.execute_command("EXPIRE", "k", "10", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="GT and LT options"):
        r.execute_command("EXPIRE", "k", "10", "GT", "LT")
    assert r.persist("k") is True and r.ttl("k") == -1 and r.persist("k") is False
    assert r.expireat("k", int(time.time()) + 100) and r.ttl("k") > 90
    assert r.pexpireat("k", int(time.time() * 1000) - 1) is True
    assert r.exists("k") == 0  # a time in the past deletes the key
    assert r.expire("none", 10) is False
    assert r.expiretime("none") == -2


def test_ttl_expiry_lazy_and_active(r: redis.Redis, datanode) -> None:
    r.set("short", "v", px=50)
    wait_until(lambda: r.get("short") is None, timeout=5, what="lazy expiry")
    # Active expiry: keys nobody reads disappear (memory freed) on their own.
    for i in range(200):
        r.set(f"exp:{i}", "v", px=30)
    r.set("keep", "v")
    wait_until(lambda: r.dbsize() == 1, timeout=5, what="active expiry of unread keys")
    info = r.info("stats")
    assert info["expired_keys"] >= 200


def test_scan_returns_every_key_once(r: redis.Redis) -> None:
    keys = {f"key:{i}".encode() for i in range(1000)}
    r.mset({k: b"v" for k in keys})
    r.rpush("alist", "x")
    seen: list[bytes] = []
    cursor = 0
    while True:
        cursor, batch = r.scan(cursor, count=50, match="key:*")
        seen.extend(batch)
        if cursor == 0:
            break
    assert len(seen) == len(set(seen)) == 1000 and set(seen) == keys
    assert list(r.scan_iter(_type="list")) == [b"alist"]
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.execute_command("SCAN", "abc")


def test_resp3_shapes(datanode) -> None:
    r3 = datanode.client(protocol=3)
    try:
        r3.flushall()
        assert r3.get("missing") is None
        r3.set("k", "v")
        assert r3.mget("k", "nope") == [b"v", None]
        hello = r3.execute_command("HELLO", "3")
        assert hello[b"proto"] == 3 and hello[b"server"] == b"redis"
        assert hello[b"mode"] == b"standalone" and hello[b"role"] == b"master"
        with pytest.raises(redis.ResponseError, match="NOPROTO"):
            r3.execute_command("HELLO", "4")
    finally:
        r3.close()
