"""Cluster mode with a static topology: what unmodified cluster clients see."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from clusterstate.slots import key_slot
from clusterstate.topology import Health, Topology
from tests.cluster_fixtures import StaticCluster, start_static_cluster
from tests.datanode_fixtures import start_datanode
from tests.support import LOOPBACK, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = start_static_cluster(tmp_path_factory.mktemp("cluster"), shards=3, replicas=1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def rc(cluster: StaticCluster):
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.seeds()])
    try:
        yield client
    finally:
        client.close()


def _key_in_slot(slot: int, prefix: str = "k") -> str:
    i = 0
    while True:
        key = f"{prefix}{i}"
        if key_slot(key.encode()) == slot:
            return key
        i += 1


def _cluster_info(c: redis.Redis) -> dict[str, str]:
    raw = c.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else raw
    return dict(line.split(":", 1) for line in text.splitlines() if line)


def _node_of(cluster: StaticCluster, slot: int, replica: bool = False):
    for shard in cluster.topology.shards:
        if any(a <= slot <= b for a, b in shard.slots):
            return cluster.nodes[shard.replicas[0] if replica else shard.primary]
    raise AssertionError(slot)


def test_redis_py_cluster_writes_and_reads_everywhere(rc: RedisCluster) -> None:
    keys = [f"key:{i}" for i in range(10_000)]
    pipe = rc.pipeline()
    for i, k in enumerate(keys):
        pipe.set(k, i)
    assert all(pipe.execute())
    pipe = rc.pipeline()
    for k in keys:
        pipe.get(k)
    assert pipe.execute() == [str(i).encode() for i in range(10_000)]
    assert {key_slot(k.encode()) for k in keys} >= set(range(0, 16384, 997)) or len(
        {key_slot(k.encode()) for k in keys}
    ) > 5000
    assert rc.mset_nonatomic({"{user1}.a": "1", "{user1}.b": "2"})
    assert rc.mget("{user1}.a", "{user1}.b") == [b"1", b"2"]
    with rc.pipeline(transaction=True) as tx:
        tx.incr("{acct}.n").incr("{acct}.n")
        assert tx.execute() == [1, 2]
    assert sum(rc.dbsize(target_nodes=RedisCluster.PRIMARIES).values()) >= 10_000 if isinstance(
        rc.dbsize(target_nodes=RedisCluster.PRIMARIES), dict
    ) else rc.dbsize(target_nodes=RedisCluster.PRIMARIES) >= 10_000


def test_redis_py_asyncio_cluster(cluster: StaticCluster) -> None:
    async def run() -> None:
        client = AsyncRedisCluster(host=LOOPBACK, port=cluster.primaries()[0].port)
        try:
            await client.initialize()
            for i in range(500):
                await client.set(f"async:{i}", i)
            values = []
            for start in range(0, 500, 20):
                values += await asyncio.gather(
                    *(client.get(f"async:{i}") for i in range(start, start + 20))
                )
            assert values == [str(i).encode() for i in range(500)]
            async with client.pipeline() as pipe:
                for i in range(100):
                    pipe.incr(f"{{tag}}:{i}")
                assert await pipe.execute() == [1] * 100
        finally:
            await client.aclose()

    asyncio.run(run())


def test_redirections_and_errors(cluster: StaticCluster) -> None:
    slot = 100
    key = _key_in_slot(slot)
    owner = _node_of(cluster, slot)
    other = next(n for n in cluster.primaries() if n is not owner)
    c = other.client()
    with pytest.raises(redis.ResponseError, match=rf"{slot} 127\.0\.0\.1:{owner.port}$"):
        c.get(key)
    o = owner.client()
    with pytest.raises(redis.ResponseError, match="Keys in request don't hash to the same slot"):
        o.mget(key, _key_in_slot(9000))
    # A redirect inside MULTI flags the transaction: EXEC answers EXECABORT.
    conn = c.connection_pool.get_connection()
    try:
        conn.send_command("MULTI")
        conn.read_response()
        conn.send_command("SET", key, "v")
        with pytest.raises(redis.exceptions.MovedError):
            conn.read_response()
        conn.send_command("EXEC")
        with pytest.raises(redis.ResponseError, match="Transaction discarded"):
            conn.read_response()
    finally:
        c.connection_pool.release(conn)
    with pytest.raises(redis.ResponseError, match="SELECT is not allowed in cluster mode"):
        o.execute_command("SELECT", "1")
    assert o.execute_command("SELECT", "0")
    with pytest.raises(redis.ResponseError, match="coordinator owns the topology"):
        o.execute_command("CLUSTER", "SETSLOT", "1", "NODE", "x")
    info = o.info("cluster")
    assert info["cluster_enabled"] == 1


def test_replica_reads_with_readonly_and_writes_moved(cluster: StaticCluster) -> None:
    slot = 200
    key = _key_in_slot(slot)
    primary = _node_of(cluster, slot)
    replica = _node_of(cluster, slot, replica=True)
    primary.client().set(key, "from-primary")
    r = replica.client()
    with pytest.raises(redis.ResponseError, match=rf"{slot} 127\.0\.0\.1:{primary.port}$"):
        r.get(key)
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("READONLY")
        assert conn.read_response() == b"OK"
        conn.send_command("GET", key)
        # Replication arrives with the next issue: the replica serves what it has.
        assert conn.read_response() in (None, b"from-primary")
        conn.send_command("SET", key, "x")
        with pytest.raises(redis.ResponseError, match=rf"^{slot} "):
            conn.read_response()
        conn.send_command("READWRITE")
        assert conn.read_response() == b"OK"
        conn.send_command("GET", key)
        with pytest.raises(redis.exceptions.MovedError):
            conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert r.info("replication")["role"] == "slave" or r.execute_command("HELLO", "2")[11] == b"replica"


def test_cluster_commands(cluster: StaticCluster) -> None:
    p = cluster.primaries()[0]
    c = p.client()
    assert c.execute_command("CLUSTER", "MYID").decode() == next(
        nid for nid, n in cluster.nodes.items() if n is p
    )
    assert c.execute_command("CLUSTER", "KEYSLOT", "foo") == 12182
    assert c.execute_command("CLUSTER", "KEYSLOT", "{user1000}.following") == 3443
    info = _cluster_info(c)
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    assert int(info["cluster_size"]) == 3 and int(info["cluster_known_nodes"]) == 6
    slots = c.execute_command("CLUSTER", "SLOTS")
    assert len(slots) == 3
    c.set("foo", "bar") if _node_of(cluster, 12182) is p else None
    owner = _node_of(cluster, 12182)
    oc = owner.client()
    oc.set("foo", "bar")
    assert oc.execute_command("CLUSTER", "COUNTKEYSINSLOT", 12182) >= 1
    assert b"foo" in oc.execute_command("CLUSTER", "GETKEYSINSLOT", 12182, 10)
    with pytest.raises(redis.ResponseError, match="Invalid slot"):
        oc.execute_command("CLUSTER", "COUNTKEYSINSLOT", 16384)
    replicas = oc.execute_command("CLUSTER", "REPLICAS", owner.client().execute_command("CLUSTER", "MYID"))
    assert len(replicas) == 1 and b" slave " in replicas[0]
    with pytest.raises(redis.ResponseError, match="Unknown node"):
        oc.execute_command("CLUSTER", "REPLICAS", "f" * 40)
    assert oc.execute_command("CLUSTER", "LINKS") == []
    # Every node answers CLUSTER NODES identically apart from its myself flag.
    views = set()
    for node in cluster.nodes.values():
        text = node.client().execute_command("CLUSTER", "NODES").decode()
        views.add(text.replace("myself,", ""))
    assert len(views) == 1


def test_redis_tools_against_the_cluster(cluster: StaticCluster) -> None:
    if shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None:
        pytest.skip("redis-tools not installed")
    port = str(cluster.primaries()[0].port)
    out = subprocess.run(["redis-cli", "--cluster", "check", f"{LOOPBACK}:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[OK] All nodes agree about slots configuration." in out.stdout
    assert "[OK] All 16384 slots covered." in out.stdout
    for key in ("alpha", "beta", "gamma", "delta"):
        assert subprocess.run(["redis-cli", "-c", "-p", port, "set", key, key.upper()],
                              capture_output=True, text=True, timeout=30).stdout.strip() == "OK"
    for key in ("alpha", "beta", "gamma", "delta"):
        assert subprocess.run(["redis-cli", "-c", "-p", port, "get", key],
                              capture_output=True, text=True, timeout=30).stdout.strip() == key.upper()
    bench = subprocess.run(["redis-benchmark", "--cluster", "-p", port, "-t", "set,get",
                            "-n", "10000", "-q"], capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "SET:" in bench.stdout and "GET:" in bench.stdout
    assert "error" not in (bench.stdout + bench.stderr).lower()


def _with_health(topology: Topology, node_id: str, **changes) -> Topology:
    nodes = tuple(dataclasses.replace(n, **changes) if n.id == node_id else n for n in topology.nodes)
    return dataclasses.replace(topology, epoch=topology.epoch + 1, nodes=nodes)


def test_health_and_hidden_table(cluster: StaticCluster) -> None:
    """DESIGN §2: loading/failed replicas in SHARDS not SLOTS; hidden nowhere but admin."""
    base = cluster.topology
    shard = base.shards[0]
    replica_id = shard.replicas[0]
    node = cluster.nodes[shard.primary]
    c, admin = node.client(), node.admin()

    def visible(conn) -> tuple[bool, bool, bool, str | None]:
        slots = conn.execute_command("CLUSTER", "SLOTS")
        in_slots = any(len(e) > 3 and any(n[2].decode() == replica_id for n in e[3:]) for e in slots)
        shards = conn.execute_command("CLUSTER", "SHARDS")
        health = None
        for s in shards:
            for n in s[3]:
                fields = dict(zip(n[::2], n[1::2], strict=True))
                if fields[b"id"].decode() == replica_id:
                    health = fields[b"health"].decode()
        nodes = conn.execute_command("CLUSTER", "NODES").decode()
        return in_slots, health is not None, replica_id in nodes, health

    try:
        assert visible(c) == (True, True, True, "online")
        cluster.push(_with_health(cluster.topology, replica_id, health=Health.LOADING))
        assert visible(c) == (False, True, True, "loading")
        cluster.push(_with_health(cluster.topology, replica_id, health=Health.FAIL))
        in_slots, in_shards, in_nodes, health = visible(c)
        assert (in_slots, in_shards, in_nodes, health) == (False, True, True, "fail")
        line = next(ln for ln in c.execute_command("CLUSTER", "NODES").decode().splitlines()
                    if ln.startswith(replica_id))
        assert "slave,fail" in line and "disconnected" in line
        cluster.push(_with_health(cluster.topology, replica_id, health=Health.ONLINE, hidden=True))
        assert visible(c) == (False, False, False, None)
        assert visible(admin) == (True, True, True, "online")
    finally:
        cluster.push(_with_health(cluster.topology, replica_id, health=Health.ONLINE, hidden=False))


def test_topology_updates_are_validated(cluster: StaticCluster) -> None:
    admin = cluster.primaries()[0].admin()
    current = Topology.from_json(admin.execute_command("SLOTKEEPER", "TOPOLOGY", "GET"))
    assert current == cluster.topology
    # The same epoch and content: a no-op.
    assert admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", current.to_json()) == b"NOOP"
    stale = dataclasses.replace(current, epoch=current.epoch - 1)
    with pytest.raises(redis.ResponseError, match="stale topology"):
        admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", stale.to_json())
    same_epoch = _with_health(current, current.shards[0].replicas[0], priority=5)
    same_epoch = dataclasses.replace(same_epoch, epoch=current.epoch)
    with pytest.raises(redis.ResponseError, match="same epoch"):
        admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", same_epoch.to_json())
    bad = current.to_json().replace(b'"epoch":', b'"epoch_":', 1)
    with pytest.raises(redis.ResponseError, match="invalid topology"):
        admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", bad)
    doc = current.to_dict()
    doc["epoch"] += 5
    doc["shards"][1]["slots"] = [[0, 10]] + doc["shards"][1]["slots"]  # slot owned twice
    import orjson

    with pytest.raises(redis.ResponseError, match="owned by both"):
        admin.execute_command("SLOTKEEPER", "TOPOLOGY", "SET", orjson.dumps(doc))
    assert Topology.from_json(admin.execute_command("SLOTKEEPER", "TOPOLOGY", "GET")) == current
    with pytest.raises(redis.ResponseError, match="only accepted on the admin port"):
        cluster.primaries()[0].client().execute_command("SLOTKEEPER", "TOPOLOGY", "GET")


def test_client_follows_moved_after_topology_change(cluster: StaticCluster, rc: RedisCluster) -> None:
    """Move an (empty) slot range between shards: the client follows MOVED and keeps going."""
    base = cluster.topology
    a, b = base.shards[0], base.shards[1]
    (a_start, a_end), = a.slots
    moved = (a_end - 99, a_end)
    keys = []
    for slot in range(moved[0], moved[1] + 1):
        keys.append(_key_in_slot(slot, prefix="mv"))
    for k in keys:
        assert rc.get(k) is None
    new_a = dataclasses.replace(a, slots=((a_start, moved[0] - 1),))
    new_b = dataclasses.replace(b, slots=(moved, *b.slots))
    shards = tuple(new_a if s.id == a.id else new_b if s.id == b.id else s for s in base.shards)
    try:
        cluster.push(dataclasses.replace(base, epoch=base.epoch + 1, shards=shards))
        for k in keys:
            assert rc.set(k, "after-move")
        b_node = cluster.nodes[b.primary]
        assert all(b_node.client().get(k) == b"after-move" for k in keys)
    finally:
        restored = dataclasses.replace(base, epoch=cluster.topology.epoch + 1)
        for k in keys:
            rc.delete(k)
        cluster.push(restored)


def test_cluster_node_without_topology(tmp_path) -> None:
    node = start_datanode(tmp_path / "d", "--cluster-enabled", "yes")
    try:
        c = node.client()
        with pytest.raises(redis.exceptions.ClusterDownError, match="cluster is down"):
            c.get("k")
        assert c.ping()
        assert _cluster_info(c)["cluster_state"] == "fail"
        assert c.execute_command("CLUSTER", "SLOTS") == []
        myid = c.execute_command("CLUSTER", "MYID").decode()
        nodes = c.execute_command("CLUSTER", "NODES").decode()
        assert nodes.startswith(myid) and "myself" in nodes
        assert (tmp_path / "d" / "node-id").read_text().strip() == myid
    finally:
        node.stop()
    # The id survives a restart.
    again = start_datanode(tmp_path / "d", "--cluster-enabled", "yes")
    try:
        assert again.client().execute_command("CLUSTER", "MYID").decode() == myid
    finally:
        again.stop()


def test_invalid_cluster_config_refuses_start(tmp_path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"epoch": 1, "shards": [], "nodes": [], "migrations": [')
    node = start_datanode(tmp_path / "d", "--cluster-config", str(cfg), wait=False)
    assert node.exit_code() == 1
    assert "bad.json" in node.log_path.read_text()


def test_not_in_cluster_mode_cluster_commands_error(datanode) -> None:
    with pytest.raises(redis.ResponseError, match="cluster support disabled"):
        datanode.client().execute_command("CLUSTER", "SLOTS")
    wait_until(datanode.answers, timeout=5)


def test_keyless_writes_wait_for_a_view(tmp_path) -> None:
    """A cluster node that has no view yet refuses every write, keyless ones too."""
    node = start_datanode(tmp_path / "d", "--cluster-enabled", "yes")
    try:
        c = node.client()
        with pytest.raises(redis.exceptions.ClusterDownError):
            c.flushall()
        assert c.dbsize() == 0
    finally:
        node.stop()
