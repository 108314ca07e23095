"""MULTI / EXEC / DISCARD / WATCH against a real data node."""

from __future__ import annotations

import pytest
import redis


def test_multi_exec(r: redis.Redis) -> None:
    p = r.pipeline(transaction=True)
    p.set("a", "1").incr("a").get("a")
    assert p.execute() == [True, 2, b"2"]


def test_exec_runs_all_even_after_runtime_error(r: redis.Redis) -> None:
    r.set("s", "text")
    p = r.pipeline(transaction=True)
    p.incr("s").set("b", "2")
    results = p.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError) and results[1] is True
    assert r.get("b") == b"2"


def test_queue_time_error_aborts(r: redis.Redis) -> None:
    conn = r.connection_pool.get_connection()
    try:
        for cmd in (("MULTI",), ("SET", "x", "1"), ("GET",), ("NOPE",)):
            conn.send_command(*cmd)
        assert conn.read_response() == b"OK"
        assert conn.read_response() == b"QUEUED"
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            conn.read_response()
        with pytest.raises(redis.ResponseError, match="unknown command"):
            conn.read_response()
        conn.send_command("EXEC")
        with pytest.raises(redis.ResponseError, match="Transaction discarded because of previous errors"):
            conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert r.get("x") is None


def test_nested_and_stray(r: redis.Redis) -> None:
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("EXEC")
        with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
            conn.read_response()
        conn.send_command("DISCARD")
        with pytest.raises(redis.ResponseError, match="DISCARD without MULTI"):
            conn.read_response()
        conn.send_command("MULTI")
        conn.read_response()
        conn.send_command("MULTI")
        with pytest.raises(redis.ResponseError, match="MULTI calls can not be nested"):
            conn.read_response()
        conn.send_command("WATCH", "k")
        with pytest.raises(redis.ResponseError, match="WATCH inside MULTI is not allowed"):
            conn.read_response()
        conn.send_command("SET", "k", "v")
        assert conn.read_response() == b"QUEUED"
        conn.send_command("DISCARD")
        assert conn.read_response() == b"OK"
    finally:
        r.connection_pool.release(conn)
    assert r.get("k") is None


def test_watch_detects_concurrent_change(r: redis.Redis, datanode) -> None:
    other = datanode.client()
    r.set("balance", "10")
    with r.pipeline() as p:
        p.watch("balance")
        other.incr("balance")  # somebody else changes it
        p.multi()
        p.set("balance", "0")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("balance") == b"11"
    with r.pipeline() as p:
        p.watch("balance")
        p.multi()
        p.set("balance", "0")
        assert p.execute() == [True]
    # Expiry of a watched key also counts as a change.
    r.set("t", "1", px=20)
    with r.pipeline() as p:
        p.watch("t")
        import time

        time.sleep(0.1)
        assert p.get("t") is None
        p.multi()
        p.set("t", "2")
        with pytest.raises(redis.WatchError):
            p.execute()
    other.close()


def test_unwatch_and_flush_touches_watchers(r: redis.Redis, datanode) -> None:
    other = datanode.client()
    r.set("w", "1")
    with r.pipeline() as p:
        p.watch("w")
        p.unwatch()
        other.set("w", "2")
        p.multi()
        p.set("w", "3")
        assert p.execute() == [True]
    with r.pipeline() as p:
        p.watch("w")
        other.flushall()
        p.multi()
        p.set("w", "4")
        with pytest.raises(redis.WatchError):
            p.execute()
    other.close()
