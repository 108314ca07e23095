"""The local snapshot: ``node.json`` in the data node's data dir.

What the sidecar last applied, kept so that a restart can decide its role at boot
without etcd (DESIGN §4 rules 2, 5, 6): the node id, the last applied node record
with its epoch, the replica_id and shard, whether the replica was still loading
its first sync, and the whole served view of that epoch (so a node restarted while
etcd is unreachable serves its last view, fenced).

Written atomically (temporary file, fsync, rename, fsync of the directory)
whenever the applied node record changes (role, state, shard, replica_id,
loading); a change of epoch alone is written at most once a second (the newest
view then), so a node does not fsync twice per epoch while a rebalance bumps the
epoch several times a second. The file may thus trail the applied epoch by up to
a second: the registry-behind check of DESIGN §4 compares with that epoch. :func:`read` never raises for a missing or
unreadable file: a bad file is reported and treated as absent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from clusterstate.topology import NodeRecord, Role, Topology, TopologyError

log = logging.getLogger(__name__)

FILE_NAME = "node.json"
FORMAT = 1


class SnapshotError(ValueError):
    """node.json exists but cannot be used."""


@dataclass(frozen=True, slots=True)
class LocalSnapshot:
    node_id: str
    epoch: int = 0  # epoch of the last applied view (0: never applied one)
    node: NodeRecord | None = None  # my record in that view (None: not a member)
    replica_id: int = 0
    shard: str = ""
    loading: bool = False  # a replica that has not finished syncing for this replica_id
    view: Topology | None = None

    @property
    def role(self) -> Role:
        return self.node.role if self.node is not None else Role.NONE

    def with_(self, **changes: Any) -> LocalSnapshot:
        return replace(self, **changes)

    def to_json(self) -> bytes:
        node = None if self.node is None else _node_doc(self.node)
        return orjson.dumps(
            {
                "format": FORMAT,
                "node_id": self.node_id,
                "epoch": self.epoch,
                "node": node,
                "replica_id": self.replica_id,
                "shard": self.shard,
                "role": self.role.value,
                "loading": self.loading,
                "view": None if self.view is None else self.view.to_dict(),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> LocalSnapshot:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("node_id"), str):
            raise SnapshotError("not a node.json document (no node_id)")
        try:
            view = None if doc.get("view") is None else Topology.from_dict(doc["view"])
            node = None if doc.get("node") is None else _node_from_doc(doc["node"])
            return cls(
                node_id=doc["node_id"],
                epoch=_int(doc.get("epoch", 0), "epoch"),
                node=node,
                replica_id=_int(doc.get("replica_id", 0), "replica_id"),
                shard=str(doc.get("shard", "")),
                loading=bool(doc.get("loading", False)),
                view=view,
            )
        except TopologyError as exc:
            raise SnapshotError(str(exc)) from exc


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise SnapshotError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _node_doc(node: NodeRecord) -> dict[str, Any]:
    return {
        "id": node.id, "addr": node.addr, "port": node.port, "admin_port": node.admin_port,
        "zone": node.zone, "shard": node.shard, "role": node.role.value,
        "state": node.state.value, "health": node.health.value, "hidden": node.hidden,
        "nofailover": node.nofailover, "priority": node.priority, "replica_id": node.replica_id,
    }


def _node_from_doc(doc: Any) -> NodeRecord:
    if not isinstance(doc, dict):
        raise SnapshotError("node must be an object")
    solo = dict(doc, role="none", shard="")  # a view of one spare validates the fields
    view = Topology.from_dict({"epoch": 0, "shards": [], "nodes": [solo]})
    base = view.nodes[0]
    try:
        return replace(base, role=Role(doc.get("role", "none")), shard=str(doc.get("shard", "")))
    except ValueError as exc:
        raise SnapshotError(f"node.role: {exc}") from exc


def path_in(directory: str | Path) -> Path:
    return Path(directory) / FILE_NAME


def read(path: Path, node_id: str) -> LocalSnapshot | None:
    """The snapshot at ``path`` if it is usable and belongs to ``node_id``; else None
    (logged). A snapshot of another node id means the data dir changed hands."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("local snapshot %s unreadable (%s): ignored", path, exc)
        return None
    try:
        snap = LocalSnapshot.from_json(data)
    except SnapshotError as exc:
        log.warning("local snapshot %s unusable (%s): ignored", path, exc)
        return None
    if snap.node_id != node_id:
        log.warning("local snapshot %s belongs to node %s, not %s: ignored",
                    path, snap.node_id, node_id)
        return None
    return snap


def write(path: Path, snap: LocalSnapshot) -> None:
    """Replace ``path`` atomically with ``snap``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(snap.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def from_applied(node_id: str, view: Topology | None, loading: bool) -> LocalSnapshot:
    """The snapshot of having applied ``view`` (None: no view yet)."""
    if view is None:
        return LocalSnapshot(node_id=node_id, loading=loading)
    me = next((n for n in view.nodes if n.id == node_id), None)
    return LocalSnapshot(
        node_id=node_id,
        epoch=view.epoch,
        node=me,
        replica_id=me.replica_id if me is not None else 0,
        shard=me.shard if me is not None else "",
        loading=loading and me is not None and me.role is Role.REPLICA,
        view=view,
    )
