"""Failover, leadership transfer, repair and the operator's controls on the whole
stack as `slotkeeper up` runs it: real etcd, Consul, two coordinators, data nodes
and sidecars (DESIGN §3, docs/coordinator.md, docs/api.md).

One stack for the module: 2 shards x 1 replica, 1 spare, a token, TTL 2 s. Every
test leaves it whole again: killed processes are restarted with their own command
lines, stopped ones resumed, flags, tags and settings restored (the ``whole``
fixture checks it before and after each test, and heals what a failed test left).

No split-brain is checked from both sides: the write permit on the old primary's
admin port (``SLOTKEEPER WRITE-PERMIT``: ms left, 0 fenced, -1 off) and a client of
the old primary, which must never get a write accepted once the new primary took
one — neither while it is gone or hung nor while it comes back as a replica.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
import redis
from redis.backoff import ConstantBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from clusterstate.slots import key_slot
from tests.stack_fixtures import Stack, cmdline, start_stack
from tests.support import LOOPBACK, free_port, http_get_json, wait_until

TOKEN = "failover-test-token"
TTL = 2.0
UNKNOWN = "f" * 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("failover"), primaries=2, replicas=1, spares=1,
                     token=TOKEN, ttl=TTL) as s:
        s.wait_healthy()
        s.record_processes()
        yield s


@pytest.fixture
def whole(stack: Stack) -> Iterator[Stack]:
    """The shared stack, whole before the test; healed and whole again after it."""
    stack.heal()
    stack.wait_healthy()
    yield stack
    stack.heal()
    if stack.cluster()["paused"]:
        stack.write("POST", "/v1/resume")
    stack.wait_healthy()


# --------------------------------------------------------------------------- helpers


def layout(s: Stack, which: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Shard number ``which`` (by first slot), its primary and its replica."""
    doc = s.cluster()
    shards = sorted(doc["shards"], key=lambda x: x["slots"][0][0])
    nodes = {n["id"]: n for n in doc["nodes"]}
    shard = shards[which % len(shards)]
    return shard, nodes[shard["primary"]], nodes[shard["replicas"][0]]


def hashtag(shard: dict[str, Any], prefix: str) -> str:
    """A hash tag whose slot the shard owns: ``{tag}:anything`` goes to the shard."""
    for n in count():
        tag = f"{prefix}{n}"
        slot = key_slot(f"{{{tag}}}:x".encode())
        if any(lo <= slot <= hi for lo, hi in shard["slots"]):
            return tag
    raise AssertionError("unreachable")


def attempt_write(s: Stack, i: int, key: str, value: str) -> str:
    """One SET on node ``i``'s client port: "OK", "-<error class>: <text>", or "down"."""
    try:
        with s.client(i, socket_timeout=2, socket_connect_timeout=1) as c:
            return "OK" if c.set(key, value) else "not OK"
    except (redis.ConnectionError, redis.TimeoutError):
        return "down"
    except redis.ResponseError as exc:  # MOVED, CLUSTERDOWN …: redis-py's class and text
        return f"-{type(exc).__name__}: {exc}"


def permit_ms(s: Stack, i: int) -> int | None:
    """``SLOTKEEPER WRITE-PERMIT`` on node ``i``: ms left, 0 fenced, -1 off; None if down."""
    try:
        with s.admin(i, socket_timeout=2, socket_connect_timeout=1) as a:
            return int(a.execute_command("SLOTKEEPER", "WRITE-PERMIT"))
    except (redis.ConnectionError, redis.TimeoutError):
        return None


def has_view(s: Stack, i: int) -> bool:
    try:
        with s.admin(i, socket_timeout=2, socket_connect_timeout=1) as a:
            return bool(a.execute_command("SLOTKEEPER", "TOPOLOGY", "GET"))
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def readonly(s: Stack, i: int) -> redis.Redis:
    """A client of node ``i`` that may read a replica's keys (one connection: READONLY
    is a connection's state)."""
    c = s.client(i, single_connection_client=True)
    c.execute_command("READONLY")
    return c


def resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def watch_back_as_replica(s: Stack, old: dict[str, Any], key: str, timeout: float = 60,
                          url: str | None = None) -> list[str]:
    """Wait until the old primary is a STANDBY replica again, online and visible,
    trying a write on it and reading its write permit all along; the violations
    seen (an accepted write, a live or absent permit)."""
    i = s.index(old)
    violations: list[str] = []

    def back() -> bool:
        outcome = attempt_write(s, i, key, "from-the-old-primary")
        if outcome == "OK" or outcome == "not OK":
            violations.append(f"the old primary accepted a write ({outcome})")
        permit = permit_ms(s, i)
        # -1 (no permit configured) is how a data node starts; harmless only while it
        # has no view (it refuses every write): its sidecar fences it before pushing one.
        if permit is not None and (permit > 0 or (permit == -1 and has_view(s, i))):
            violations.append(f"the old primary's write permit is {permit}")
        n = s.node(old["id"], url=url)
        return (n["role"] == "replica" and n["state"] == "STANDBY" and n["health"] == "online"
                and not n["hidden"] and n["alive"]
                and (n.get("status") or {}).get("role_applied") == "replica")

    wait_until(back, timeout=timeout, interval=0.05,
               what=f"node {old['id'][:8]} to come back as a STANDBY replica")
    return violations


def first_write(s: Stack, i: int, key: str, value: str, timeout: float) -> float:
    """Try SET on node ``i`` every 5 ms until it is accepted; the send time of the
    accepted one (monotonic)."""
    client = s.client(i, socket_timeout=1, socket_connect_timeout=1)

    def accepted() -> float | None:
        t = time.monotonic()
        try:
            return t if client.set(key, value) else None
        except redis.RedisError:
            return None

    try:
        t = wait_until(accepted, timeout=timeout, interval=0.005,
                       what=f"node {i} to accept writes")
        assert t is not None
        return t
    finally:
        client.close()


# --------------------------------------------------------------------------- failover

MODES = ["datanode", "datanode+sidecar", "hung"]


@pytest.mark.parametrize("mode", MODES)
def test_failover_without_split_brain(whole: Stack, mode: str) -> None:
    """(a) kill -9 of a primary's data node, its sidecar alive: the sidecar revokes
    its lease at once; (b) kill -9 of both: the lease expires after the TTL; (c) both
    SIGSTOPped (a hung host): the permit lapses at TTL x 0.8, before the lease expires
    and the replica is promoted. The replica takes over with every write the primary
    had replicated; the old primary never accepts a write again and comes back as a
    replica with a new replica_id."""
    s = whole
    shard, old, new = layout(s, MODES.index(mode))
    o, r = s.index(old), s.index(new)
    tag = hashtag(shard, f"fo-{mode}-")
    keys = [f"{{{tag}}}:{n}" for n in range(50)]
    probe = f"{{{tag}}}:probe"
    with s.client(o) as c:
        for k in keys:
            assert c.set(k, k)
    with readonly(s, r) as ro:  # replication is asynchronous: let the replica have it all
        wait_until(lambda: ro.get(keys[-1]) == keys[-1].encode(), timeout=10,
                   what="the replica to have the primary's writes")
    dn, sc = s.datanode_pid(o), s.sidecar_pid(o)
    assert dn is not None and sc is not None
    dn_argv, sc_argv = cmdline(dn), cmdline(sc)

    queued: socket.socket | None = None
    permit_end = 0.0
    if mode == "datanode":
        t0 = time.monotonic()
        s.kill(dn)
    elif mode == "datanode+sidecar":
        t0 = time.monotonic()
        s.kill(sc, dn)
    else:
        s.stop(sc)  # no more keepalives, no more permits …
        with s.admin(o) as a:  # … so the data node's permit now is its last one
            left = int(a.execute_command("SLOTKEEPER", "WRITE-PERMIT"))
            permit_end = time.monotonic() + (left + 1) / 1000
        assert left > 0, "the primary had no live write permit"
        queued = socket.create_connection((LOOPBACK, s.port(o)), timeout=5)
        t0 = time.monotonic()
        s.stop(dn)
        queued.sendall(resp_command("SET", probe, "from-the-old-primary"))  # waits in the socket

    try:
        bound = 2.0 if mode == "datanode" else TTL + 2.0
        t_first = first_write(s, r, probe, "from-the-new-primary", timeout=bound + 10)
        took = t_first - t0
        assert took < bound, f"{mode}: the replica took writes {took:.2f}s after the fault"
        if mode == "hung":
            # The old primary stopped accepting writes before the new one accepted any.
            assert permit_end < t_first, (permit_end - t0, t_first - t0)
            assert permit_end - t0 <= TTL * 0.8 + 0.1
    finally:
        if mode == "hung":
            s.heal()  # SIGCONT the data node and the sidecar
    if queued is not None:
        with queued:
            reply = read_line(queued, timeout=10)
        assert reply.startswith(b"-"), f"the hung primary accepted a write on waking: {reply!r}"

    doc = s.shards()[shard["id"]]
    assert (doc["primary"], doc["lease"]) == (new["id"], new["id"])
    assert doc["replicas"] == [old["id"]]
    demoted = s.node(old["id"])
    assert demoted["role"] == "replica" and demoted["replica_id"] != old["replica_id"]

    if mode == "datanode":
        s.restart(dn_argv, f"datanode-{o + 1}")
    elif mode == "datanode+sidecar":
        s.restart(dn_argv, f"datanode-{o + 1}")
        s.restart(sc_argv, f"sidecar-{o + 1}")
    violations = watch_back_as_replica(s, old, probe)
    assert violations == []
    with readonly(s, o) as ro:  # the old primary caught up with the new one
        wait_until(lambda: ro.get(probe) == b"from-the-new-primary", timeout=20,
                   what="the old primary to replicate the new primary's writes")
        assert ro.mget(keys) == [k.encode() for k in keys]
    with s.client(r) as c:
        assert c.mget(keys) == [k.encode() for k in keys]
        assert c.get(probe) == b"from-the-new-primary"
    assert attempt_write(s, o, probe, "late").startswith("-MovedError")


def test_standby_coordinator_completes_a_failover_its_leader_died_in(whole: Stack) -> None:
    """The leader hangs as a primary dies (its lease is revoked, the failover is the
    leader's to do), then is killed: the standby takes over the election and
    promotes the replica."""
    s = whole
    leader = s.leader_url()
    c = s.coordinator_index(leader)
    standby = s.coordinator_url(1 - c)
    standby_id = http_get_json(standby + "/health")["id"]
    cpid = s.coordinator_pid(c)
    assert cpid is not None
    c_argv = cmdline(cpid)
    shard, old, new = layout(s, 0)
    o, r = s.index(old), s.index(new)
    dn = s.datanode_pid(o)
    assert dn is not None
    dn_argv = cmdline(dn)

    s.stop(cpid)
    try:
        s.kill(dn)
        wait_until(lambda: s.shards(url=standby)[shard["id"]]["lease"] is None, timeout=10,
                   what="the dead primary's slot lease to be revoked")
        assert s.shards(url=standby)[shard["id"]]["primary"] == old["id"]  # nobody acted yet
    finally:
        s.kill(cpid)
    t0 = time.monotonic()
    tag = hashtag(shard, "fo-leader-")
    first_write(s, r, f"{{{tag}}}:k", "v", timeout=30)
    took = time.monotonic() - t0
    assert http_get_json(standby + "/health")["role"] == "leader"
    doc = s.shards(url=standby)[shard["id"]]
    assert (doc["primary"], doc["lease"]) == (new["id"], new["id"])
    status, hist = s.request("GET", "/v1/history?limit=50", url=standby)
    assert status == 200
    promotions = [h for h in hist["history"] if h["kind"] == "failover"
                  and new["id"][:8] in h["why"] and h["leader"] == standby_id]
    assert promotions, [(h["kind"], h["leader"], h["why"]) for h in hist["history"][:5]]
    assert took < 20, took

    s.restart(c_argv, f"coordinator-{c + 1}")
    s.restart(dn_argv, f"datanode-{o + 1}")
    wait_until(lambda: http_get_json(leader + "/health")["role"] == "standby", timeout=30,
               what="the restarted coordinator to stand by")
    assert watch_back_as_replica(s, old, f"{{{tag}}}:k") == []


def test_pause_stops_automatic_failover(whole: Stack) -> None:
    s = whole
    shard, old, new = layout(s, 1)
    o, r = s.index(old), s.index(new)
    status, doc = s.write("POST", "/v1/pause")
    assert status == 200 and doc["settings"]["pause"] is True, doc
    try:
        dn = s.datanode_pid(o)
        assert dn is not None
        dn_argv = cmdline(dn)
        s.kill(dn)
        leader = s.leader_url()
        wanted = f"paused: shard {shard['id'][:8]} lost its primary"
        wait_until(lambda: wanted in http_get_json(leader + "/health")["last_cycle"],
                   timeout=10, interval=0.02, what=f"the leader to say {wanted!r}")
        cycles = cycles_total(leader)
        wait_until(lambda: cycles_total(leader) >= cycles + 3, timeout=15,
                   what="three more coordinator cycles")
        doc = s.shards()[shard["id"]]
        assert (doc["primary"], doc["lease"]) == (old["id"], None)
        tag = hashtag(shard, "fo-pause-")
        assert attempt_write(s, r, f"{{{tag}}}:k", "v").startswith("-MovedError")
    finally:
        status, doc = s.write("POST", "/v1/resume")
        assert status == 200 and doc["settings"]["pause"] is False, doc
    first_write(s, r, f"{{{tag}}}:k", "v", timeout=10)
    assert s.shards()[shard["id"]]["primary"] == new["id"]
    s.restart(dn_argv, f"datanode-{o + 1}")
    assert watch_back_as_replica(s, old, f"{{{tag}}}:k") == []


def cycles_total(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(float(m) for m in re.findall(r"^slotkeeper_cycles_total\{[^}]*\} (\S+)$", text,
                                            flags=re.M))


# --------------------------------------------------------------------------- transfer


class Writer(threading.Thread):
    """A redis-py cluster client writing unique keys of one shard as fast as it can;
    ``acked`` holds the keys whose SET was answered OK."""

    def __init__(self, s: Stack, tag: str) -> None:
        super().__init__(daemon=True)
        self.rc = RedisCluster(
            startup_nodes=[ClusterNode(LOOPBACK, s.port(i)) for i in range(s.nodes_count)],
            socket_timeout=1, socket_connect_timeout=1,
            retry=Retry(ConstantBackoff(0.01), 3))
        self.tag = tag
        self.acked: list[str] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            key = f"{{{self.tag}}}:w{n}"
            n += 1
            try:
                if self.rc.set(key, key):
                    self.acked.append(key)
            except redis.RedisError:
                self.errors += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.rc.close()


def test_manual_transfer_with_and_without_target(whole: Stack) -> None:
    """A leadership transfer loses no acknowledged write, keeps the old primary's
    replica_id, and works with a named target and without one (the least-loaded
    eligible replica: here the only one)."""
    s = whole
    shard, old, new = layout(s, 0)
    sid = shard["id"]
    writer = Writer(s, hashtag(shard, "fo-transfer-"))
    writer.start()
    try:
        wait_until(lambda: len(writer.acked) >= 50, timeout=10, what="the writer to run")
        status, doc = s.write("POST", f"/v1/shards/{sid}/failover", {"target": new["id"]})
        assert status == 200 and doc["intent"]["state"] == "done", doc
        assert doc["intent"]["chosen"] == new["id"]
        wait_until(lambda: s.shards()[sid]["lease"] == new["id"], timeout=10,
                   what="the target to take the slot lease")
        after_first = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= after_first + 50, timeout=10,
                   what="writes to reach the new primary")
        s.wait_healthy()  # the old primary follows as a replica: a candidate again
        status, doc = s.write("POST", f"/v1/shards/{sid}/failover", {})
        assert status == 200 and doc["intent"]["state"] == "done", doc
        assert doc["intent"]["chosen"] == old["id"]
        wait_until(lambda: s.shards()[sid]["lease"] == old["id"], timeout=10,
                   what="the old primary to take the slot lease back")
        after_second = len(writer.acked)
        wait_until(lambda: len(writer.acked) >= after_second + 50, timeout=10,
                   what="writes to reach the old primary again")
    finally:
        writer.stop()
    nodes = s.nodes()
    assert nodes[old["id"]]["replica_id"] == old["replica_id"]  # a transfer keeps them
    assert nodes[new["id"]]["replica_id"] == new["replica_id"]
    doc = s.shards()[sid]
    assert (doc["primary"], doc["replicas"]) == (old["id"], [new["id"]])
    with s.client(s.index(old)) as c:
        got = c.mget(writer.acked)
    lost = [k for k, v in zip(writer.acked, got, strict=True) if v != k.encode()]
    assert lost == [], f"{len(lost)} acknowledged writes lost of {len(writer.acked)}"
    status, hist = s.request("GET", "/v1/history?limit=20")
    kinds = [h["kind"] for h in hist["history"] if sid[:8] in h["why"]]
    assert kinds.count("handoff-complete") >= 2, kinds


# --------------------------------------------------------------------------- repair


def test_repair_after_a_replica_is_lost(whole: Stack) -> None:
    """A replica's host dies (data node and sidecar): it stays in its shard, OFFLINE
    (a lost replica is not replaced on its own). The operator removes it: it is
    forgotten, the spare joins the shard with a new replica_id and syncs in full.
    The lost node, back, registers as a new spare."""
    s = whole
    shard, primary, lost = layout(s, 1)
    spare = next(n for n in s.nodes().values() if n["role"] == "none")
    tag = hashtag(shard, "fo-repair-")
    keys = [f"{{{tag}}}:{n}" for n in range(100)]
    with s.client(s.index(primary)) as c:
        for k in keys:
            c.set(k, k)
    i = s.index(lost)
    dn, sc = s.datanode_pid(i), s.sidecar_pid(i)
    assert dn is not None and sc is not None
    dn_argv, sc_argv = cmdline(dn), cmdline(sc)
    s.kill(sc, dn)
    doc = wait_until(lambda: (n := s.node(lost["id"]))["state"] == "OFFLINE" and n, timeout=TTL + 5,
                     what="the lost replica to be OFFLINE")
    assert (doc["alive"], doc["health"], doc["shard"]) == (False, "fail", shard["id"])
    assert s.shards()[shard["id"]]["replicas"] == [lost["id"]]  # not replaced on its own

    status, doc = s.write("POST", f"/v1/nodes/{lost['id']}/remove")
    assert status == 200 and doc["intent"]["state"] == "done", doc
    assert s.request("GET", f"/v1/nodes/{lost['id']}")[0] == 404  # forgotten

    def joined() -> dict[str, Any] | None:
        n = s.node(spare["id"])
        ok = (n["shard"] == shard["id"] and n["role"] == "replica" and n["state"] == "STANDBY"
              and n["health"] == "online" and not n["hidden"])
        return n if ok else None

    n = wait_until(joined, timeout=30, what="the spare to join the shard and catch up")
    assert n is not None
    assert n["replica_id"] not in (spare["replica_id"], lost["replica_id"])
    assert s.shards()[shard["id"]]["replicas"] == [spare["id"]]
    with readonly(s, s.index(spare)) as ro:
        assert ro.mget(keys) == [k.encode() for k in keys]

    s.restart(dn_argv, f"datanode-{i + 1}")
    s.restart(sc_argv, f"sidecar-{i + 1}")

    def registered() -> bool:
        status, doc = s.request("GET", f"/v1/nodes/{lost['id']}")
        if status != 200:
            return False
        n = doc["node"]
        return n["role"] == "none" and n["state"] == "ONLINE" and n["alive"] and not n["hidden"]

    wait_until(registered, timeout=30, what="the lost node to register again as a spare")


# --------------------------------------------------------------------------- flags and tags


def topology(s: Stack, i: int) -> dict[str, Any]:
    with s.admin(i) as a:
        return json.loads(a.execute_command("SLOTKEEPER", "TOPOLOGY", "GET"))  # type: ignore[no-any-return]


def client_views(s: Stack, i: int) -> dict[str, Any]:
    """What a client of node ``i`` sees of the others: CLUSTER NODES as text, without
    the node's own ``myself`` line (a node always shows itself); CLUSTER SHARDS as
    text; the node ids and ports CLUSTER SLOTS lists."""
    with s.client(i) as c:
        nodes = c.execute_command("CLUSTER", "NODES").decode()
        shards = repr(c.execute_command("CLUSTER", "SHARDS"))
        slots = c.execute_command("CLUSTER", "SLOTS")  # [[start, end, [host, port, id], …], …]
    members = [m for entry in slots for m in entry[2:]]
    return {
        "nodes": "\n".join(line for line in nodes.splitlines()
                           if "myself" not in line.split()[2]),
        "shards": shards,
        "slots ids": {m[2].decode() for m in members if len(m) > 2},
        "slots ports": {int(m[1]) for m in members},
    }


def every_node(s: Stack, check: Any, what: str, timeout: float = 10) -> None:
    """Wait until ``check(i)`` holds on every node of the stack."""
    def all_ok() -> bool:
        return all(check(i) for i in range(s.nodes_count))

    wait_until(all_ok, timeout=timeout, interval=0.05, what=what)


def consul_service(s: Stack, node_id: str) -> dict[str, Any]:
    services = http_get_json(f"{s.consul_url}/v1/agent/services")
    return services[node_id]  # type: ignore[no-any-return]


def test_hidden_and_tags_reach_every_node(whole: Stack) -> None:
    s = whole
    _, _, replica = layout(s, 0)
    rid = replica["id"]
    port = int(replica["port"])
    try:
        status, doc = s.write("POST", f"/v1/nodes/{rid}/hide")
        assert status == 200 and doc["intent"]["state"] == "done", doc

        def hidden_everywhere(i: int) -> bool:
            views = client_views(s, i)
            me = next(n for n in topology(s, i)["nodes"] if n["id"] == rid)
            return (me["hidden"] and rid not in views["nodes"] and rid not in views["shards"]
                    and rid not in views["slots ids"] and port not in views["slots ports"])

        every_node(s, hidden_everywhere, "the replica to be hidden from every node's clients")
        assert "hidden" in consul_service(s, rid)["Tags"]

        status, doc = s.write("POST", f"/v1/nodes/{rid}/unhide")
        assert status == 200 and doc["intent"]["state"] == "done", doc

        def shown_everywhere(i: int) -> bool:
            views = client_views(s, i)
            return ((rid in views["nodes"] or i == s.index(replica)) and rid in views["shards"]
                    and rid in views["slots ids"] and port in views["slots ports"])

        every_node(s, shown_everywhere, "the replica to be shown again on every node")
        wait_until(lambda: "hidden" not in consul_service(s, rid)["Tags"], timeout=10,
                   what="Consul to drop the hidden tag")

        status, doc = s.write("PATCH", f"/v1/nodes/{rid}",
                              {"zone": "zone-x", "priority": 7, "nofailover": True})
        assert status == 200 and doc["intent"]["state"] == "done", doc

        def tagged(i: int) -> bool:
            me = next(n for n in topology(s, i)["nodes"] if n["id"] == rid)
            return (me["zone"], me["priority"], me["nofailover"]) == ("zone-x", 7, True)

        every_node(s, tagged, "the tags to reach every node's served view")
        node = s.node(rid)
        assert (node["zone"], node["priority"], node["nofailover"]) == ("zone-x", 7, True)
    finally:
        s.write("POST", f"/v1/nodes/{rid}/unhide")
        s.write("PATCH", f"/v1/nodes/{rid}",
                {"zone": replica["zone"], "priority": replica["priority"],
                 "nofailover": replica["nofailover"]})
    every_node(s, lambda i: next(n for n in topology(s, i)["nodes"] if n["id"] == rid)["zone"]
               == replica["zone"], "the zone to be restored everywhere")


def test_a_zone_tag_reaches_consul(whole: Stack) -> None:
    s = whole
    _, _, replica = layout(s, 1)
    rid = replica["id"]
    try:
        status, doc = s.write("PATCH", f"/v1/nodes/{rid}", {"zone": "zone-y"})
        assert status == 200 and doc["intent"]["state"] == "done", doc
        every_node(s, lambda i: next(n for n in topology(s, i)["nodes"] if n["id"] == rid)
                   ["zone"] == "zone-y", "the zone to reach every node")
        wait_until(lambda: consul_service(s, rid)["Meta"]["zone"] == "zone-y", timeout=3,
                   what="Consul's meta zone to follow the record")
        assert "zone:zone-y" in consul_service(s, rid)["Tags"]
    finally:
        s.write("PATCH", f"/v1/nodes/{rid}", {"zone": replica["zone"]})


# --------------------------------------------------------------------------- API errors


def decisions(s: Stack) -> dict[str, Any]:
    """Everything a refused request must leave as it was (not the sidecars' own
    observations: offsets, liveness)."""
    doc = s.cluster()
    record = ("id", "addr", "port", "zone", "shard", "role", "state", "health", "hidden",
              "hidden_by", "nofailover", "priority", "replica_id", "epoch")
    settings = s.request("GET", "/v1/settings")[1]
    return {
        "epoch": doc["epoch"],
        "settings": settings,
        "shards": sorted(({k: v for k, v in sh.items() if k != "lease"} for sh in doc["shards"]),
                         key=lambda x: x["id"]),
        "nodes": sorted(({k: n[k] for k in record} for n in doc["nodes"]),
                        key=lambda x: x["id"]),
        "intents": s.request("GET", "/v1/intents")[1],
        "history": s.request("GET", "/v1/history?limit=1")[1],
    }


def test_api_errors_have_their_codes_and_change_nothing(whole: Stack) -> None:
    s = whole
    shard, primary, replica = layout(s, 0)
    before = decisions(s)
    epoch = before["epoch"]
    leader = s.leader_url()
    standby = s.coordinator_url(1 - s.coordinator_index(leader))
    hide = f"/v1/nodes/{replica['id']}/hide"
    cases: list[tuple[str, str, str, dict[str, Any], int, str]] = [
        ("bad json", "POST", hide, {"raw": b"{nope"}, 400, "bad_json"),
        ("not an object", "POST", hide, {"raw": b"[1]"}, 400, "bad_request"),
        ("unknown field", "POST", hide, {"body": {"colour": "red"}}, 400, "bad_request"),
        ("unknown node", "POST", f"/v1/nodes/{UNKNOWN}/hide", {}, 404, "unknown_node"),
        ("unknown node tag", "PATCH", f"/v1/nodes/{UNKNOWN}", {"body": {"zone": "z"}}, 404,
         "unknown_node"),
        ("unknown shard", "POST", f"/v1/shards/{UNKNOWN}/failover", {}, 404, "unknown_shard"),
        ("unknown target", "POST", f"/v1/shards/{shard['id']}/failover",
         {"body": {"target": UNKNOWN}}, 404, "unknown_node"),
        ("no token", "POST", hide, {"token": None}, 401, "unauthorized"),
        ("wrong token", "POST", hide, {"token": "nope"}, 403, "forbidden"),
        ("wrong token, pause", "POST", "/v1/pause", {"token": "nope"}, 403, "forbidden"),
        ("wrong token, settings", "PATCH", "/v1/settings", {"token": "nope",
         "body": {"replicas": 2}}, 403, "forbidden"),
        ("stale epoch", "POST", hide, {"body": {"expected_epoch": epoch - 1}}, 409,
         "stale_epoch"),
        ("stale If-Match", "POST", hide, {"headers": {"If-Match": f'"{epoch - 1}"'}}, 409,
         "stale_epoch"),
        ("hide a slot-owning primary", "POST", f"/v1/nodes/{primary['id']}/hide", {}, 409,
         "primary_owns_slots"),
        ("remove a primary", "POST", f"/v1/nodes/{primary['id']}/remove", {}, 409, "is_primary"),
        ("failover to the primary", "POST", f"/v1/shards/{shard['id']}/failover",
         {"body": {"target": primary["id"]}}, 409, "not_eligible"),
        ("stale settings", "PATCH", "/v1/settings",
         {"body": {"replicas": 2, "expected_revision": before["settings"]["revision"] - 1}},
         409, "stale_settings"),
        ("bad settings", "PATCH", "/v1/settings", {"body": {"replicas": -1}}, 400,
         "bad_request"),
        ("a standby", "POST", hide, {"url": standby}, 503, "not_leader"),
    ]
    for what, method, path, kw, status, code in cases:
        kw = dict(kw)
        got, doc = s.request(method, path, kw.pop("body", None), **kw)
        assert isinstance(doc, dict), (what, got, doc)
        assert (got, doc.get("code"), doc.get("status")) == (status, code, status), (what, doc)
        assert doc["message"], what
        if code == "stale_epoch":
            assert doc["epoch"] == epoch, (what, doc)
        if code == "not_leader":
            assert doc["leader"]["api"] == leader, doc
    assert decisions(s) == before


# --------------------------------------------------------------------------- the CLI


def test_cli_against_the_api(whole: Stack) -> None:
    """`python -m slotkeeper …` in the directory `slotkeeper up` ran in: it finds the
    coordinator and the token in .slotkeeper-up.json, follows the leader, and exits
    0 / 1 / 2 / 3 as documented."""
    s = whole
    shard, primary, replica = layout(s, 1)
    sid, pid_, rid = shard["id"], primary["id"], replica["id"]
    epoch0 = s.cluster()["epoch"]

    def ok(*args: str) -> str:
        out = s.sk(*args)
        assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
        return out.stdout

    text = ok("status")
    assert text.startswith("cluster local  epoch ") and "2 shards, 5 nodes: 5 online" in text
    assert len(json.loads(ok("nodes", "--json"))["nodes"]) == 5
    assert {x["id"] for x in json.loads(ok("shards", "--json"))["shards"]} == set(s.shards())

    text = ok("hide", rid[:6])
    assert re.fullmatch(rf"hide node {rid[:8]} \(epoch \d+\)", text.strip().splitlines()[-1])
    assert s.node(rid)["hidden"] is True
    standby = s.coordinator_url(1 - s.coordinator_index(s.leader_url()))
    ok("unhide", rid[:8], "--coordinator", standby)  # sent again to the leader
    assert s.node(rid)["hidden"] is False

    refused = s.sk("hide", pid_[:8])
    assert refused.returncode == 1 and "primary_owns_slots" in refused.stderr, refused
    wrong = s.sk("unhide", rid[:8], "--token", "nope")
    assert wrong.returncode == 1 and "forbidden" in wrong.stderr, wrong
    unreachable = s.sk("status", "--coordinator", f"http://{LOOPBACK}:{free_port()}",
                       "--timeout", "2")
    assert unreachable.returncode == 3 and "cannot reach the coordinator" in unreachable.stderr
    assert s.sk("hide").returncode == 2

    try:
        ok("tag", rid[:8], "--priority", "5", "--nofailover", "yes")
        node = s.node(rid)
        assert (node["priority"], node["nofailover"]) == (5, True)
    finally:
        ok("tag", rid[:8], "--priority", str(replica["priority"]), "--nofailover", "no")
    try:
        ok("pause")
        assert json.loads(ok("status", "--json"))["paused"] is True
    finally:
        ok("resume")
    assert s.cluster()["paused"] is False
    lag = s.cluster()["settings"]["max_lag_bytes"]
    try:
        ok("settings", f"max_lag_bytes={2 * lag}")
        assert s.cluster()["settings"]["max_lag_bytes"] == 2 * lag
    finally:
        ok("settings", f"max_lag_bytes={lag}")

    ok("failover", sid[:8], "--target", rid[:8])
    # The old primary is a candidate again once it applied its replica role (until then
    # a failover without target is refused: 409 no_candidate).
    doc = s.wait_healthy()
    assert {x["id"]: x for x in doc["shards"]}[sid]["primary"] == rid
    ok("failover", sid[:8])
    wait_until(lambda: s.shards()[sid]["lease"] == pid_, timeout=10, what="the transfer back")
    history = json.loads(ok("history", "--json"))["history"]
    swaps = [h for h in history if h["epoch"] > epoch0 and h["kind"] == "handoff-complete"]
    assert len(swaps) == 2, [(h["epoch"], h["kind"]) for h in history]

