"""Observed health into the served view (pure): registration, node states and
health, the hidden flag of loading replicas, ``sync_replicas``, epoch conflicts.

Rules (DESIGN §1, §2):

- A sidecar registers by writing ``status/<id>``; a status with no node record
  becomes an ONLINE spare (role none) with the status's address, ports and zone.
- A node whose status vanished is OFFLINE with health ``fail`` (it keeps its
  role, shard and replica_id). When its status comes back: a spare is ONLINE, a
  primary ACTIVE, a replica RECOVERING.
- A primary's and a spare's health is what their sidecar reports.
- A RECOVERING replica is ``loading`` until it is *caught up*: it applied its
  current assignment, replicates from its shard's current primary, and is
  within ``settings.max_lag_bytes`` of it; then it is STANDBY ``online``. A
  STANDBY whose sidecar reports ``loading`` (a resync) is RECOVERING again.
  Lag alone never changes a STANDBY's health: offsets never bump the epoch.
- ``hide_while_loading``: a replica hidden by that policy is unhidden when it
  is caught up (or when the policy is turned off).
- ``sync_replicas`` (only when ``min_replicas_to_ack`` ≥ 1): a replica leaves
  it as soon as its sidecar stops reporting it online as a replica, and enters
  it once it is STANDBY and caught up. It is emptied when acknowledgements are
  turned off.

All changes of one cycle are one :class:`UpdateHealth` action (one epoch bump).
Registration and health keep flowing while the cluster is paused: they are
observations, not decisions.
"""

from __future__ import annotations

import re
from dataclasses import replace

from clusterstate.records import Settings, Status
from clusterstate.topology import Health, NodeRecord, NodeState, Role, ShardRecord

from .actions import (
    NodeWrite,
    Proposal,
    RegisterNodes,
    ResolveEpochConflict,
    ShardWrite,
    UpdateHealth,
    Writes,
)
from .intents import short
from .policy import Policy
from .replication import caught_up, observed_health
from .view import HIDDEN_BY_POLICY, ClusterView

_NODE_ID_RE = re.compile(r"[0-9a-f]{40}")
_NUMBER_RE = re.compile(r"\b[0-9]{1,19}\b")


def plan_registration(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    new: list[NodeWrite] = []
    for node_id, st in view.statuses.items():
        if node_id in view.nodes:
            continue
        record = _registered(node_id, st)
        if record is None:
            out.notes.append(f"sidecar {short(node_id)} reports no usable id or address yet")
            continue
        new.append(NodeWrite(record))
    if new:
        ids = tuple(w.record.id for w in new)
        out.actions.append(
            RegisterNodes(
                why=f"{_count(ids, 'new node')} registered: {', '.join(short(i) for i in ids)}",
                writes=Writes(nodes=tuple(new)),
                nodes=ids,
            )
        )
    return out


def _registered(node_id: str, st: Status) -> NodeRecord | None:
    if not _NODE_ID_RE.fullmatch(node_id) or not st.addr or not 0 < st.port < 65536:
        return None
    admin = st.admin_port if 0 < st.admin_port < 65536 else st.port + 10000
    if admin > 65535:
        return None
    return NodeRecord(
        node_id,
        st.addr,
        st.port,
        admin,
        zone=st.zone,
        role=Role.NONE,
        state=NodeState.ONLINE,
        health=observed_health(st),
    )


# --------------------------------------------------------------------------- health


def desired_node(view: ClusterView, settings: Settings, node_id: str) -> tuple[NodeRecord, str]:
    """The record the node should have given what its sidecar reports, and its
    ``hidden_by``."""
    entry = view.nodes[node_id]
    r = entry.record
    st = view.status(node_id)
    hidden_by = entry.hidden_by
    if st is None:
        return replace(r, state=NodeState.OFFLINE, health=Health.FAIL), hidden_by
    observed = observed_health(st)
    if r.role is Role.NONE:
        state = NodeState.ONLINE if r.state is NodeState.OFFLINE else r.state
        return replace(r, state=state, health=observed), hidden_by
    if r.role is Role.PRIMARY:
        state = NodeState.ACTIVE if r.state is NodeState.OFFLINE else r.state
        return replace(r, state=state, health=observed), hidden_by
    # a replica
    if observed is Health.FAIL:
        state = NodeState.RECOVERING if r.state is NodeState.OFFLINE else r.state
        new = replace(r, state=state, health=Health.FAIL)
    elif r.state in (NodeState.OFFLINE, NodeState.RECOVERING):
        if caught_up(view, node_id, settings):
            new = replace(r, state=NodeState.STANDBY, health=Health.ONLINE)
        else:
            new = replace(r, state=NodeState.RECOVERING, health=Health.LOADING)
    elif r.state is NodeState.STANDBY and observed is Health.LOADING:
        new = replace(r, state=NodeState.RECOVERING, health=Health.LOADING)
    else:
        new = replace(r, health=observed)
    if new.hidden and hidden_by == HIDDEN_BY_POLICY:
        ready = new.state is NodeState.STANDBY and new.health is Health.ONLINE
        if ready or not settings.hide_while_loading:
            new, hidden_by = replace(new, hidden=False), ""
    return new, hidden_by


def desired_sync(
    view: ClusterView, settings: Settings, shard: ShardRecord, records: dict[str, NodeRecord]
) -> tuple[str, ...]:
    if settings.min_replicas_to_ack < 1:
        return ()
    keep: list[str] = []
    for node_id in shard.replicas:
        st = view.status(node_id)
        record = records[node_id]
        reporting = (
            st is not None
            and observed_health(st) is Health.ONLINE
            and st.role_applied == Role.REPLICA
            and record.health is Health.ONLINE
        )
        if node_id in shard.sync_replicas:
            if reporting:
                keep.append(node_id)
        elif (
            reporting
            and record.state is NodeState.STANDBY
            and caught_up(view, node_id, settings)
        ):
            keep.append(node_id)
    # keep the existing order, newcomers after
    old = [n for n in shard.sync_replicas if n in keep]
    return tuple(old + [n for n in keep if n not in old])


def plan_health(view: ClusterView, settings: Settings, now: float, policy: Policy) -> Proposal:
    out = Proposal()
    records: dict[str, NodeRecord] = {}
    node_writes: list[NodeWrite] = []
    changes: list[str] = []
    for node_id, entry in view.nodes.items():
        new, hidden_by = desired_node(view, settings, node_id)
        records[node_id] = new
        if new != entry.record or (new.hidden and hidden_by != entry.hidden_by):
            node_writes.append(NodeWrite.kept(entry, new, hidden_by))
            changes.append(_node_change(entry.record, new))
    shard_writes: list[ShardWrite] = []
    for shard_id, shard_entry in view.shards.items():
        shard = shard_entry.record
        sync = desired_sync(view, settings, shard, records)
        if sync != shard.sync_replicas:
            shard_writes.append(ShardWrite.kept(shard_entry, replace(shard, sync_replicas=sync)))
            changes.append(
                f"shard {short(shard_id)} sync_replicas "
                f"[{', '.join(short(n) for n in shard.sync_replicas)}] → "
                f"[{', '.join(short(n) for n in sync)}]"
            )
    if changes:
        out.actions.append(
            UpdateHealth(
                why="; ".join(changes),
                writes=Writes(nodes=tuple(node_writes), shards=tuple(shard_writes)),
                changes=tuple(changes),
            )
        )
    return out


def _node_change(old: NodeRecord, new: NodeRecord) -> str:
    parts = []
    if old.state is not new.state:
        parts.append(f"{old.state.value}→{new.state.value}")
    if old.health is not new.health:
        parts.append(f"{old.health.value}→{new.health.value}")
    if old.hidden != new.hidden:
        parts.append("hidden" if new.hidden else "unhidden")
    return f"node {short(new.id)} {' '.join(parts) or 'updated'}"


# --------------------------------------------------------------------------- epoch conflicts


def plan_epoch_conflict(
    view: ClusterView, settings: Settings, now: float, policy: Policy
) -> Proposal:
    """Role-at-boot rule 2 (DESIGN §4): a node whose local epoch is ahead of the
    registry's serves read-only and reports a conflict. The registry wins: the
    epoch moves past the highest local epoch reported, so those nodes adopt it."""
    out = Proposal()
    ahead = {
        node_id: local
        for node_id, st in view.statuses.items()
        if st.conflict and (local := local_epoch(st)) >= view.epoch
    }
    if not ahead:
        return out
    top = max(ahead.values())
    if settings.pause:
        out.notes.append(
            f"paused: {_count(ahead, 'node')} report a local epoch up to {top}, "
            f"ahead of the registry's {view.epoch}"
        )
        return out
    ids = tuple(sorted(ahead))
    out.actions.append(
        ResolveEpochConflict(
            why=(
                f"{', '.join(short(i) for i in ids)} report a local epoch up to {top}, ahead of "
                f"the registry's {view.epoch}: moving the epoch to {top + 1} so they adopt it"
            ),
            writes=Writes(epoch=top + 1),
            nodes=ids,
            epoch=top + 1,
        )
    )
    return out


def local_epoch(st: Status) -> int:
    """The local epoch a node in conflict reports: its ``epoch_applied``, or the
    largest number its ``conflict`` text names (the sidecar words it as "local
    snapshot epoch N is ahead of the registry epoch M")."""
    named = [int(n) for n in _NUMBER_RE.findall(st.conflict)]
    return max([st.epoch_applied, *named])


def _count(items: object, noun: str) -> str:
    n = len(items)  # type: ignore[arg-type]
    return f"{n} {noun}{'' if n == 1 else 's'}"


__all__ = [
    "desired_node",
    "desired_sync",
    "plan_epoch_conflict",
    "plan_health",
    "plan_registration",
]
