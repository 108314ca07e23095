"""What to do with a served view: a pure plan of steps against what was applied.

    plan = plan_view(applied, view, node_id, floor_epoch=…, loading=…)
    for step in plan.steps: …          # the applier carries them out, in order
    applied = plan.applied              # once every step succeeded

Ordering rules (DESIGN §3, docs/slot-transfer.md):

- A primary that stops being one is fenced first (``WRITE-PERMIT REVOKE``), then
  gives up ``leases/<shard>``, then gets the new view and its new role.
- A node that becomes primary is fenced before the view and ``PROMOTE`` reach it;
  it becomes writable only after it holds ``leases/<shard>`` (the applier takes
  the slot lease, the lease keeper grants the permit).
- A view that moves slots away from this node's shard is applied after the
  target shards' primaries applied it (``WaitForTargets``, bounded by the caller).
- A view older than what was applied, or older than the floor set at boot, is
  never applied. A different view at the same epoch is refused (the coordinator
  bumps the epoch with every change).
- A replica still loading its first sync is never promoted by this sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from clusterstate.records import Settings
from clusterstate.topology import Role, Topology, node_by_id, shard_by_id


@dataclass(frozen=True, slots=True)
class Applied:
    """What this sidecar has applied to its data node since the data node started."""

    view: Topology | None = None
    role: Role = Role.NONE
    shard: str = ""
    replica_id: int = 0  # the data node's replica_id (seeded from SLOTKEEPER REPLICATION)
    primary: tuple[str, int] | None = None  # the admin address it replicates from

    @property
    def epoch(self) -> int:
        return self.view.epoch if self.view is not None else -1


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Fence:
    """``WRITE-PERMIT REVOKE``: stop writes now."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReleaseSlotLease:
    shard: str


@dataclass(frozen=True, slots=True)
class WaitForTargets:
    """Wait (bounded) until these nodes' status shows ``epoch_applied >= epoch``,
    or their data nodes (admin ``addrs``, polled directly) answer that epoch."""

    node_ids: tuple[str, ...]
    epoch: int
    addrs: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PushView:
    view: Topology


@dataclass(frozen=True, slots=True)
class Promote:
    epoch: int
    replica_id: int


@dataclass(frozen=True, slots=True)
class Replicate:
    host: str
    port: int  # the primary's admin port
    epoch: int
    replica_id: int
    new_member: bool  # a replica_id other than the data node's: full resync, loading


Step = Fence | ReleaseSlotLease | WaitForTargets | PushView | Promote | Replicate


@dataclass(frozen=True, slots=True)
class ViewPlan:
    steps: tuple[Step, ...]
    applied: Applied  # what is applied once every step succeeded
    sentence: str  # one log line
    skip: bool = False  # nothing to do (stale, or the same view)
    error: str = ""  # reported in status/ (last_error)


def plan_view(
    applied: Applied,
    view: Topology,
    node_id: str,
    *,
    floor_epoch: int = 0,
    loading: bool = False,
) -> ViewPlan:
    """The steps that take the data node from ``applied`` to ``view``."""
    if view.epoch < floor_epoch or view.epoch < applied.epoch:
        floor = max(floor_epoch, applied.epoch)
        return ViewPlan((), applied, f"stale view epoch {view.epoch} ignored (applied or "
                        f"floor epoch {floor})", skip=True)
    if applied.view is not None and view.epoch == applied.epoch:
        if view == applied.view:
            return ViewPlan((), applied, f"view epoch {view.epoch} already applied", skip=True)
        return ViewPlan(
            (), applied, f"view epoch {view.epoch} differs from the one applied at that epoch: "
            "refused", skip=True,
            error=f"a different view at the same epoch {view.epoch} was written: the coordinator "
            "must bump the epoch with every change",
        )
    me = node_by_id(view, node_id)
    role = me.role if me is not None else Role.NONE
    shard = me.shard if me is not None else ""
    was_primary = applied.role is Role.PRIMARY
    stays_primary = was_primary and role is Role.PRIMARY and shard == applied.shard
    steps: list[Step] = []
    error = ""
    if was_primary and not stays_primary:
        steps += [Fence("no longer the primary"), ReleaseSlotLease(applied.shard)]
    targets = targets_first(applied.view, view, node_id)
    if targets:
        addrs = tuple((n.addr, n.admin_port) for t in targets
                      if (n := node_by_id(view, t)) is not None)
        steps.append(WaitForTargets(targets, view.epoch, addrs))
    new = Applied(view, role, shard, applied.replica_id, None)
    if role is Role.PRIMARY:
        assert me is not None
        if loading and applied.role is not Role.PRIMARY:
            error = (f"refusing to promote at epoch {view.epoch}: this replica is still loading "
                     "its first sync (not promotable)")
            steps += [Fence("not promotable while loading"), PushView(view)]
            new = replace(applied, view=view)
            return ViewPlan(tuple(steps), new, error, error=error)
        if not stays_primary:
            steps.append(Fence(f"becoming primary of shard {shard}: fenced until "
                               "leases/<shard> is ours"))
        steps += [PushView(view), Promote(view.epoch, me.replica_id)]
        new = replace(new, replica_id=me.replica_id)
        what = "stays primary" if stays_primary else "promoted to primary"
    elif role is Role.REPLICA:
        assert me is not None
        found = shard_by_id(view, shard)
        assert found is not None  # a valid view lists every member's shard
        primary = node_by_id(view, found.primary)
        assert primary is not None
        new_member = me.replica_id != applied.replica_id
        steps += [
            PushView(view),
            Replicate(primary.addr, primary.admin_port, view.epoch, me.replica_id, new_member),
        ]
        new = replace(new, replica_id=me.replica_id, primary=(primary.addr, primary.admin_port))
        what = f"replica of {primary.id[:8]} at {primary.addr}:{primary.admin_port}"
        if new_member:
            what += f" (new replica_id {me.replica_id}: full resync)"
    else:
        steps.append(PushView(view))
        new = replace(new, replica_id=applied.replica_id)
        what = "not a member" if me is None else "spare"
    sentence = f"view epoch {view.epoch}: {what}" + (f", shard {shard}" if shard else "")
    return ViewPlan(tuple(steps), new, sentence, error=error)


def targets_first(old: Topology | None, new: Topology, node_id: str) -> tuple[str, ...]:
    """Primaries of the shards that take slots from this node's shard in ``new``:
    they apply ``new`` before this node does."""
    if old is None:
        return ()
    me = node_by_id(old, node_id)
    if me is None or not me.shard:
        return ()
    mine_before = shard_by_id(old, me.shard)
    mine_after = shard_by_id(new, me.shard)
    if mine_before is None or (mine_after is not None and mine_after.slots == mine_before.slots):
        return ()  # the common case, decided without expanding 16384 slots
    lost = _slots(mine_before.slots) - (_slots(mine_after.slots) if mine_after else set())
    if not lost:
        return ()
    receivers = {s.id for s in new.shards if s.id != me.shard and lost & _slots(s.slots)}
    out = []
    for shard_id in sorted(receivers):
        shard = shard_by_id(new, shard_id)
        if shard is not None and shard.primary != node_id:
            out.append(shard.primary)
    return tuple(out)


def _slots(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {slot for start, end in ranges for slot in range(start, end + 1)}


def slot_lease_wanted(applied: Applied, lease_allowed: bool) -> str:
    """The shard whose ``leases/<shard>`` this node should hold ("" for none)."""
    if lease_allowed and applied.role is Role.PRIMARY and applied.shard:
        return applied.shard
    return ""


def min_acks_wanted(settings: Settings, applied: Applied) -> tuple[int, int] | None:
    """``(n, ack_timeout_ms)`` for ``SLOTKEEPER MIN-REPLICAS-TO-ACK`` on a primary."""
    if applied.role is not Role.PRIMARY:
        return None
    return settings.min_replicas_to_ack, settings.ack_timeout_ms
