"""Sidecars as real processes for tests, and a stand-in coordinator.

``start_member(dir, etcd, cluster, consul=…)`` starts a data node (cluster mode)
and its sidecar; :class:`FakeCoordinator` writes what the coordinator would
(``epoch`` + ``nodes/`` + ``shards/`` + ``migrations/`` in one transaction guarded
by the epoch) and reads what sidecars publish (``status/``, ``leases/``).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from clusterstate.keys import Keys
from clusterstate.layout import random_replica_id
from clusterstate.records import Settings, Status, node_to_json, shard_to_json
from clusterstate.topology import (
    Health,
    MigrationRecord,
    NodeRecord,
    NodeState,
    Role,
    ShardRecord,
    Topology,
    new_id,
)
from dcs.port import Compare, Delete, Put, Store
from tests.datanode_fixtures import DataNodeProcess, start_datanode
from tests.support import (
    LOOPBACK,
    REPO_ROOT,
    ConsulAgent,
    EtcdServer,
    ManagedProcess,
    async_wait_until,
    free_port,
)

TTL = 2.0


# --------------------------------------------------------------------------- processes


@dataclass(eq=False)
class SidecarProcess(ManagedProcess):
    http_port: int = 0
    dir: Path = Path()

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        """``(status code, JSON body)`` of ``GET path``."""
        url = f"http://{LOOPBACK}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self) -> dict[str, Any]:
        return self.get("/status")[1]  # type: ignore[no-any-return]

    def answers(self) -> bool:
        try:
            return self.get("/liveness", timeout=0.5)[0] == 200
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        super().start()
        self.wait_ready(self.answers, timeout, f"sidecar on http port {self.http_port}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_sidecar(
    node: DataNodeProcess,
    etcd: EtcdServer | Sequence[str],
    cluster: str,
    *flags: str,
    consul: ConsulAgent | None = None,
    zone: str = "",
    wait: bool = True,
    http_port: int = 0,
    name: str = "",
) -> SidecarProcess:
    http_port = http_port or free_port()
    endpoints = [etcd.endpoint] if isinstance(etcd, EtcdServer) else list(etcd)
    argv = [
        sys.executable, "-m", "slotkeeper", "sidecar",
        "--cluster", cluster, "--etcd", ",".join(endpoints),
        "--datanode", f"{LOOPBACK}:{node.admin_port}", "--advertise-addr", LOOPBACK,
        "--dir", str(node.dir), "--http-port", str(http_port), "--log-level", "info",
        "--boot-etcd-timeout", "1.5",
        *(["--consul", consul.http_addr] if consul is not None else []),
        *(["--zone", zone] if zone else []),
        *flags,
    ]
    proc = SidecarProcess(
        argv=argv,
        log_path=node.dir.parent / f"sidecar-{name or node.port}.log",
        cwd=REPO_ROOT,
        http_port=http_port,
        dir=node.dir,
    )
    if wait:
        proc.start()
    else:
        ManagedProcess.start(proc)
    return proc


@dataclass
class Member:
    """A data node and its sidecar."""

    node: DataNodeProcess
    sidecar: SidecarProcess
    node_id: str = ""

    def stop(self) -> None:
        self.sidecar.stop()
        self.node.stop()


def start_member(
    directory: Path,
    etcd: EtcdServer,
    cluster: str,
    *sidecar_flags: str,
    consul: ConsulAgent | None = None,
    zone: str = "",
    port: int = 0,
    admin_port: int = 0,
) -> Member:
    node = start_datanode(directory, "--cluster-enabled", "yes", port=port,
                          admin_port=admin_port)
    try:
        sidecar = start_sidecar(node, etcd, cluster, *sidecar_flags, consul=consul, zone=zone)
    except BaseException:
        node.kill()
        raise
    node_id = node.admin().execute_command("SLOTKEEPER", "NODEID").decode()
    return Member(node, sidecar, node_id)


# --------------------------------------------------------------------------- coordinator


def member_record(
    node_id: str,
    status: Status,
    *,
    role: Role = Role.NONE,
    shard: str = "",
    state: NodeState = NodeState.ONLINE,
    health: Health = Health.ONLINE,
    replica_id: int = 0,
    hidden: bool = False,
) -> NodeRecord:
    return NodeRecord(
        node_id, status.addr, status.port, status.admin_port, zone=status.zone, shard=shard,
        role=role, state=state, health=health, hidden=hidden,
        replica_id=replica_id or (random_replica_id() if role is not Role.NONE else 0),
    )


def fake_node(role: Role, shard: str, **kw: Any) -> NodeRecord:
    """A member that no process serves (for views with other nodes in them)."""
    port = free_port()
    return NodeRecord(new_id(), LOOPBACK, port, port + 1, shard=shard, role=role,
                      state=kw.pop("state", NodeState.ACTIVE if role is Role.PRIMARY
                                   else NodeState.STANDBY),
                      health=kw.pop("health", Health.ONLINE),
                      replica_id=random_replica_id(), **kw)


def migration_doc(m: MigrationRecord, **extra: Any) -> bytes:
    return orjson.dumps({"id": m.id, "slots": [list(r) for r in m.slots],
                         "from_shard": m.from_shard, "to_shard": m.to_shard,
                         "state": m.state.value, **extra})


@dataclass
class FakeCoordinator:
    store: Store
    keys: Keys
    written: list[Topology] = field(default_factory=list)

    async def write(self, topo: Topology, *, force: bool = False) -> None:
        """Write ``topo`` as the coordinator would: one transaction guarded by the
        epoch, replacing every node, shard and migration record."""
        snap = await self.store.load(self.keys.root)
        epoch = topo.epoch
        ops: list[Put | Delete] = [Put(self.keys.epoch, str(epoch).encode())]
        keep = {self.keys.epoch}
        for n in topo.nodes:
            ops.append(Put(self.keys.node(n.id), node_to_json(n, epoch)))
            keep.add(self.keys.node(n.id))
        for s in topo.shards:
            ops.append(Put(self.keys.shard(s.id), shard_to_json(s, epoch)))
            keep.add(self.keys.shard(s.id))
        for m in topo.migrations:
            key = self.keys.migration(m.id)
            current = snap.value(key)
            extra = {}
            if current is not None:
                extra = {k: v for k, v in orjson.loads(current).items()
                         if k not in ("id", "slots", "from_shard", "to_shard", "state")}
            ops.append(Put(key, migration_doc(m, **extra)))
            keep.add(key)
        for prefix in (self.keys.nodes, self.keys.shards, self.keys.migrations):
            ops += [Delete(kv.key) for kv in snap.under(prefix) if kv.key not in keep]
        compares = [] if force else [Compare.unchanged(self.keys.epoch, snap.get(self.keys.epoch))]
        assert await self.store.cas(compares, ops), "epoch moved while writing"
        self.written.append(topo)

    async def update(self, topo: Topology, changed: Sequence[NodeRecord] = ()) -> None:
        """Write only ``epoch`` and the ``changed`` node records (one transaction, no read
        first): the cheapest change a coordinator makes."""
        ops = [Put(self.keys.epoch, str(topo.epoch).encode())]
        ops += [Put(self.keys.node(n.id), node_to_json(n, topo.epoch)) for n in changed]
        assert await self.store.cas([], ops)
        self.written.append(topo)

    async def settings(self, settings: Settings) -> None:
        await self.store.put(self.keys.settings, settings.to_json())

    async def status(self, node_id: str) -> Status | None:
        kv = await self.store.get(self.keys.status(node_id))
        return None if kv is None else Status.from_json(kv.value)

    async def wait_status(
        self, node_id: str, pred: Callable[[Status], bool] = lambda s: True,
        timeout: float = 10.0, what: str = "",
    ) -> Status:
        async def check() -> Status | None:
            st = await self.status(node_id)
            return st if st is not None and pred(st) else None

        got = await async_wait_until(check, timeout=timeout, interval=0.02,
                                     what=what or f"status/{node_id[:8]}")
        assert got is not None
        return got

    async def lease_holder(self, shard: str) -> str | None:
        kv = await self.store.get(self.keys.lease(shard))
        return None if kv is None else kv.value.decode()

    async def migration(self, migration_id: str) -> dict[str, Any] | None:
        kv = await self.store.get(self.keys.migration(migration_id))
        return None if kv is None else orjson.loads(kv.value)  # type: ignore[no-any-return]


def one_shard(
    members: Sequence[tuple[str, Status]], epoch: int, *, slots: tuple[tuple[int, int], ...] = ((0, 16383),),
    shard_id: str = "", replica_health: Health = Health.ONLINE,
) -> Topology:
    """A one-shard view: the first member primary, the others replicas."""
    shard_id = shard_id or new_id()
    nodes = []
    for i, (nid, st) in enumerate(members):
        nodes.append(member_record(
            nid, st, role=Role.PRIMARY if i == 0 else Role.REPLICA, shard=shard_id,
            state=NodeState.ACTIVE if i == 0 else NodeState.STANDBY,
            health=Health.ONLINE if i == 0 else replica_health,
        ))
    shard = ShardRecord(shard_id, slots, members[0][0], tuple(m[0] for m in members[1:]))
    return Topology.build(epoch, [shard], nodes)
