"""Connection and server commands: AUTH, HELLO, CLIENT, INFO, CONFIG, COMMAND, limits."""

from __future__ import annotations

import pytest
import redis

from tests.datanode_fixtures import start_datanode
from tests.support import wait_until


def test_ping_echo_select_time(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo("x") == b"x"
    assert r.execute_command("SELECT", "0") is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", "1")
    secs, micros = r.time()
    assert secs > 1_700_000_000 and 0 <= micros < 1_000_000


def test_info_sections(r: redis.Redis) -> None:
    r.set("a", "1", ex=100)
    r.set("b", "2")
    info = r.info("everything")
    assert info["redis_version"].startswith("7.2")
    assert info["arch_bits"] == 64
    assert info["role"] == "master"
    assert info["cluster_enabled"] == 0
    assert info["db0"] == {"keys": 2, "expires": 1, "avg_ttl": 0}
    assert info["used_memory"] > 0 and info["used_memory_rss"] > 0
    assert info["total_commands_processed"] > 0
    assert "rdb_last_save_time" in info and "connected_clients" in info
    assert set(r.info("keyspace")) == {"db0"}


def test_config_get_set(r: redis.Redis) -> None:
    assert r.config_get("save") in ({"save": ""}, {"save": "300 1"}) or "save" in r.config_get("save")
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert set(r.config_get("maxmemory*")) == {"maxmemory", "maxmemory-policy"}
    assert r.config_set("maxmemory-policy", "allkeys-lru")
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    r.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(redis.ResponseError, match="Unknown option or number of arguments"):
        r.config_set("no-such-thing", "1")
    with pytest.raises(redis.ResponseError, match="CONFIG SET failed"):
        r.config_set("maxmemory-policy", "bogus")
    with pytest.raises(redis.ResponseError, match="CONFIG SET failed"):
        r.config_set("maxmemory", "12qq")


def test_command_table(r: redis.Redis) -> None:
    info = r.command()
    get = info["get"]
    assert get["arity"] == 2 and get["first_key_pos"] == 1 and get["last_key_pos"] == 1
    assert "readonly" in get["flags"]
    mset = info["mset"]
    assert (mset["arity"], mset["first_key_pos"], mset["last_key_pos"], mset["step_count"]) == (
        -3, 1, -1, 2
    )
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND", "INFO", "get", "nosuchcommand")
        raw = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert len(raw[0]) == 10 and raw[1] is None
    assert r.command_count() == len(info)
    assert [bytes(k, "ascii") if isinstance(k, str) else k for k in r.command_getkeys("MSET", "a", "1", "b", "2")] == [b"a", b"b"]
    with pytest.raises(redis.ResponseError, match="The command has no key arguments"):
        r.command_getkeys("PING")
    with pytest.raises(redis.ResponseError, match="Invalid command specified"):
        r.command_getkeys("NOPE", "x")
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND", "DOCS", "get")
        docs = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert docs[0] == b"get" and b"summary" in docs[1]


def test_command_entries_match_real_redis(r: redis.Redis, tmp_path) -> None:
    """Arity, flags and key positions equal redis-server's for every command we serve."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    from tests.support import ManagedProcess, free_port

    port = free_port()
    ref = ManagedProcess(
        argv=["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        log_path=tmp_path / "redis.log",
    )
    ref.start()
    try:
        real = redis.Redis(port=port)
        wait_until(lambda: real.ping(), timeout=10, what="redis-server")
        ours = r.command()
        theirs = real.command()
        compared = 0
        for name, entry in ours.items():
            if name not in theirs:
                continue  # commands newer than the reference server
            t = theirs[name]
            for field in ("arity", "first_key_pos", "last_key_pos", "step_count"):
                assert entry[field] == t[field], (name, field)
            assert set(entry["flags"]) == set(t["flags"]), name
            compared += 1
        assert compared > 100
    finally:
        ref.stop()


def test_client_commands(datanode) -> None:
    a = datanode.client(client_name="alpha")
    b = datanode.client()
    try:
        assert a.client_getname() == "alpha"
        assert b.client_setname("beta") and b.client_getname() == "beta"
        with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
            b.client_setname("has space")
        ids = {c["name"]: int(c["id"]) for c in a.client_list()}
        assert {"alpha", "beta"} <= set(ids)
        assert a.client_id() == ids["alpha"]
        assert a.execute_command("CLIENT", "SETINFO", "LIB-NAME", "pytest") == b"OK"
        assert "lib-name=pytest" in a.execute_command("CLIENT", "INFO").decode()
        with pytest.raises(redis.ResponseError):
            a.execute_command("CLIENT", "MAINT_NOTIFICATIONS", "ON")
        with pytest.raises(redis.ResponseError, match="unknown subcommand 'NOPE'"):
            a.execute_command("CLIENT", "NOPE")
        victim = b.connection_pool.get_connection()
        victim.send_command("CLIENT", "ID")
        victim_id = victim.read_response()
        assert a.client_kill_filter(_id=victim_id) == 1
        with pytest.raises(redis.ConnectionError):
            victim.send_command("PING")
            victim.read_response()
    finally:
        a.close()
        b.close()


def test_auth_and_hello(tmp_path) -> None:
    node = start_datanode(tmp_path / "d", "--requirepass", "s3cret")
    try:
        anon = node.client()
        with pytest.raises(redis.AuthenticationError):
            anon.get("k")
        with pytest.raises(redis.AuthenticationError):
            node.client(password="wrong").ping()
        good = node.client(password="s3cret")
        assert good.set("k", "v") and good.get("k") == b"v"
        resp3 = node.client(password="s3cret", protocol=3)
        assert resp3.get("k") == b"v"
        # The admin port needs no password (it is bound to loopback for the sidecar).
        assert node.admin().get("k") == b"v"
        good.config_set("requirepass", "")
        assert node.client().get("k") == b"v"
    finally:
        node.stop()


def test_auth_without_password_configured(r: redis.Redis) -> None:
    with pytest.raises(
        (redis.ResponseError, redis.AuthenticationError), match="called without any password"
    ):
        r.execute_command("AUTH", "x")


def test_maxmemory_noeviction_and_lru(tmp_path) -> None:
    node = start_datanode(tmp_path / "d", "--maxmemory", "2mb")
    try:
        c = node.client()
        with pytest.raises(redis.ResponseError, match="command not allowed when used memory"):
            for i in range(100_000):
                c.set(f"key:{i}", "x" * 100)
        assert c.get("key:1") == b"x" * 100  # reads still work
        assert c.delete("key:1") == 1  # and deletes
        c.config_set("maxmemory-policy", "allkeys-lru")
        for i in range(20_000):
            c.set(f"lru:{i}", "y" * 100)
        info = c.info()
        assert info["evicted_keys"] > 0
        # Eviction runs before each write, so the bound holds within one key's size.
        assert info["used_memory_dataset"] <= 2 * 1024 * 1024 + 1024
        c.flushall()
        c.config_set("maxmemory-policy", "volatile-ttl")
        c.set("forever", "z" * 1000)
        for i in range(20_000):
            c.set(f"ttl:{i}", "y" * 100, ex=1000 + i)
        assert c.get("forever") is not None  # volatile-ttl only evicts keys with a TTL
        assert c.info()["evicted_keys"] > 0
    finally:
        node.stop()


def test_shutdown_nosave_and_exit_code(tmp_path) -> None:
    node = start_datanode(tmp_path / "d")
    c = node.client()
    c.set("k", "v")
    try:
        c.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    assert node.exit_code() == 0
    node.stop()


def test_bad_flags_refuse_to_start(tmp_path) -> None:
    node = start_datanode(tmp_path / "d", "--maxmemory-policy", "sometimes", wait=False)
    assert node.exit_code() == 2
    assert "maxmemory-policy must be one of" in node.log_path.read_text()
