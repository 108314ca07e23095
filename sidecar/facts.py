"""What the sidecar knows at one instant, as one frozen value, and what follows from
it (pure): the observed health, the ``status/<node_id>`` record, the Consul tags.

The supervisor's :class:`~sidecar.state.State` produces a :class:`Facts` whenever
a publisher, a probe or a decision needs one; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterstate.records import Status
from clusterstate.topology import Health, NodeState, Role

from .permit import WriterFacts, refusal


@dataclass(frozen=True, slots=True)
class Replication:
    """The data node's ``SLOTKEEPER REPLICATION`` answer, the fields the sidecar uses."""

    role: str = "primary"  # what the data node is: primary | replica
    epoch: int = 0
    replica_id: int = 0
    replid: str = ""
    offset: int = 0
    link_up: bool = False  # replica: streaming from its primary
    syncing: bool = False  # replica: a full sync is loading
    load_progress: float = 1.0
    full_syncs_loaded: int = 0  # full syncs this data node process has loaded, ever
    last_error: str = ""
    replicas: tuple[Mapping[str, Any], ...] = ()  # primary: its followers

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> Replication:
        def num(name: str, default: int = 0) -> int:
            try:
                return int(reply.get(name, default))
            except (TypeError, ValueError):
                return default

        try:
            progress = float(reply.get("load_progress", 1.0))
        except (TypeError, ValueError):
            progress = 1.0
        replicas = reply.get("replicas") or ()
        return cls(
            role=str(reply.get("role", "primary")),
            epoch=num("epoch"),
            replica_id=num("replica_id"),
            replid=str(reply.get("replid", "")),
            offset=num("offset"),
            link_up=reply.get("link") == "up",
            syncing=bool(num("sync_in_progress")),
            load_progress=progress,
            full_syncs_loaded=num("full_syncs_loaded"),
            last_error=str(reply.get("last_error") or ""),
            replicas=tuple(r for r in replicas if isinstance(r, Mapping)),
        )


@dataclass(frozen=True, slots=True)
class Facts:
    node_id: str = ""
    addr: str = ""
    port: int = 0
    admin_port: int = 0
    http_port: int = 0
    zone: str = ""
    now: float = 0.0
    boot_rule: str = ""
    # the data node
    datanode_up: bool = False
    datanode_error: str = ""
    repl: Replication = field(default_factory=Replication)
    # etcd
    etcd_up: bool = False
    etcd_error: str = ""
    degraded: bool = False  # boot rule 5: running from the local snapshot
    lease_id: int = 0
    # what was applied
    epoch_applied: int = -1
    role_applied: Role = Role.NONE
    shard: str = ""
    replica_id: int = 0
    state: str = ""  # NodeState of this node's record ("" without one)
    hidden: bool = False
    served_zone: str | None = None  # the zone of this node's record (None without one)
    slot_lease: bool = False
    permit_until: float | None = None  # last granted permit deadline (monotonic)
    loading: bool = False  # a replica that has not finished its first sync
    # the replica_id under which the data node was last seen holding a complete copy of
    # its primary's data (None: not seen since the data node started, or resyncing)
    synced_replica_id: int | None = None
    conflict: str = ""
    last_error: str = ""
    primary_offset: int | None = None  # the shard primary's last published offset
    shutting_down: bool = False
    handoff: str = ""  # target of a leadership transfer away from this primary
    migrations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def writer(self) -> WriterFacts:
        return WriterFacts(
            primary=self.role_applied is Role.PRIMARY,
            slot_lease=self.slot_lease,
            conflict=bool(self.conflict),
            shutting_down=self.shutting_down,
            datanode_up=self.datanode_up,
            handoff=bool(self.handoff),
        )

    @property
    def writable(self) -> bool:
        """Holds the slot lease and a write permit that has not run out."""
        return (
            not self.writer_refusal
            and self.permit_until is not None
            and self.permit_until > self.now
        )

    @property
    def writer_refusal(self) -> str:
        return refusal(self.writer)

    @property
    def health(self) -> Health:
        return observed_health(self)

    @property
    def lag(self) -> int | None:
        """Bytes this replica is behind its primary's last published offset."""
        if self.role_applied is not Role.REPLICA or self.primary_offset is None:
            return None
        return max(0, self.primary_offset - self.repl.offset)


def observed_health(f: Facts) -> Health:
    """``online``, ``loading`` (a replica whose data is not a full copy yet) or
    ``fail`` (the data node does not answer)."""
    if not f.datanode_up:
        return Health.FAIL
    if f.role_applied is Role.REPLICA:
        if f.repl.syncing:
            return Health.LOADING
        if f.repl.link_up:
            return Health.ONLINE
        return Health.LOADING if f.loading else Health.ONLINE
    return Health.ONLINE


def synced_replica_id(prev: Replication, repl: Replication, latched: int | None) -> int | None:
    """The replica_id under which the data node holds a complete copy of its primary's
    data, after the observation ``repl`` that follows ``prev`` (``latched``: the value
    before it; None: no complete copy is known).

    Evidence is read from the data node, whatever the sidecar has applied yet: its link
    streaming with no full sync loading, or a full sync *loaded* between two
    observations that both show this replica_id (the primary may have died before any
    observation saw the link up). A replica_id is never reused, so an observation that
    shows it was made after the data node took that membership's ``REPLICATE``: a sync
    counted between two of them was loaded for it. A full sync in progress clears it.
    """
    if repl.role != "replica":
        return latched
    if repl.syncing:
        return None
    if repl.link_up:
        return repl.replica_id
    if repl.replica_id == prev.replica_id and repl.full_syncs_loaded > prev.full_syncs_loaded:
        return repl.replica_id
    return latched


def still_loading(f: Facts) -> bool:
    """The loading flag after this observation: cleared once a replica streams with
    no full sync in progress, or once its data node was seen holding a complete copy
    for the replica_id this node applied (a link that died after that sync does not
    make it loading again); set while a full sync loads. A replica restarted mid-join
    (boot rule 6) stays loading until its data node completes a sync."""
    if f.role_applied is not Role.REPLICA or not f.datanode_up:
        return f.loading
    if f.repl.syncing:
        return True
    if f.repl.link_up and f.repl.replica_id == f.replica_id:
        return False
    if f.synced_replica_id is not None and f.synced_replica_id == f.replica_id:
        return False
    return f.loading


def status_record(f: Facts) -> Status:
    """``status/<node_id>``: the node's endpoints and what is observed of it."""
    health = observed_health(f)
    progress = f.repl.load_progress if health is Health.LOADING else 1.0
    if health is Health.LOADING and not f.repl.syncing:
        progress = 0.0  # waiting for the sync to start
    errors = [e for e in (f.last_error, f.repl.last_error if health is not Health.ONLINE else "")
              if e]
    return Status(
        addr=f.addr,
        port=f.port,
        admin_port=f.admin_port,
        http_port=f.http_port,
        zone=f.zone,
        health=health.value,
        role_applied=f.role_applied.value,
        epoch_applied=max(f.epoch_applied, 0),
        repl_offset=f.repl.offset,
        replid=f.repl.replid,
        load_progress=round(progress, 4),
        writable=f.writable,
        conflict=f.conflict,
        last_error="; ".join(errors),
    )


def same_but_offset(a: Status, b: Status) -> bool:
    """True when two status records differ at most in the replication offset and id
    (published at a bounded rate, not on every change)."""
    return a.with_(repl_offset=0, replid="") == b.with_(repl_offset=0, replid="")


@dataclass(frozen=True, slots=True)
class ConsulFacts:
    """What the Consul registration shows (DESIGN §6)."""

    role: str
    shard: str
    state: str
    epoch: int
    replica_id: int
    zone: str
    hidden: bool


def consul_facts(f: Facts) -> ConsulFacts:
    state = f.state or (NodeState.ONLINE.value if f.etcd_up or f.degraded else "")
    return ConsulFacts(
        role=f.role_applied.value,
        shard=f.shard,
        state=state or NodeState.ONLINE.value,
        epoch=max(f.epoch_applied, 0),
        replica_id=f.replica_id,
        # the served record's zone (live: PATCH /v1/nodes/<id>); --zone until there is one
        zone=f.zone if f.served_zone is None else f.served_zone,
        hidden=f.hidden,
    )


def status_document(f: Facts) -> dict[str, Any]:
    """``GET /status``: everything, for people and scripts."""
    status = status_record(f)
    return {
        "node_id": f.node_id,
        "boot_rule": f.boot_rule,
        "datanode": {"up": f.datanode_up, "error": f.datanode_error,
                     "addr": f.addr, "port": f.port, "admin_port": f.admin_port},
        "etcd": {"up": f.etcd_up, "error": f.etcd_error, "degraded": f.degraded,
                 "lease": f"{f.lease_id:x}" if f.lease_id else ""},
        "role": f.role_applied.value,
        "shard": f.shard,
        "state": f.state,
        "hidden": f.hidden,
        "handoff": f.handoff,
        "epoch": f.epoch_applied,
        "replica_id": f.replica_id,
        "health": status.health,
        "slot_lease": f.slot_lease,
        "writable": f.writable,
        "permit_ms_left": (
            None if f.permit_until is None else max(0, int((f.permit_until - f.now) * 1000))
        ),
        "replication": {
            "role": f.repl.role, "offset": f.repl.offset, "replid": f.repl.replid,
            "link_up": f.repl.link_up, "syncing": f.repl.syncing,
            "load_progress": f.repl.load_progress, "lag": f.lag,
            "full_syncs_loaded": f.repl.full_syncs_loaded,
            "synced_replica_id": f.synced_replica_id,
        },
        "loading": f.loading,
        "conflict": f.conflict,
        "last_error": status.last_error,
        "migrations": {k: dict(v) for k, v in f.migrations.items()},
        "shutting_down": f.shutting_down,
    }
