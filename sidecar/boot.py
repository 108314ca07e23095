"""Role at boot (DESIGN §4): one pure decision from the local snapshot and the registry.

    decision = decide_boot(local, registry)   # registry None: etcd unreachable

The six rules, in the order they are tried:

5. etcd unreachable → start from the local snapshot's view, in the last role but
   fenced; keep retrying the registry; ``/health`` says degraded.
2. local epoch > registry epoch (registry restored from an older backup) → do not
   act on the older records: serve the local view read-only, report the conflict.
6. the registry records this node as a replica and the local snapshot says it was
   still loading its first sync for that replica_id → resume as a loading,
   non-promotable replica.
1. the registry records this node (epoch ≥ local) → adopt the registry; a
   recorded primary becomes writable only once it holds ``leases/<shard>``.
3. no record, cluster empty → cold start: register (status) and wait for the
   coordinator's bootstrap.
4. no record, cluster exists → register as a spare.

The decision says which view to apply first, the lowest epoch ever to apply
(``floor_epoch``: nothing older than what was applied before), whether the slot
lease may be taken, and whether to start as loading. What happens next is the
same steady-state loop for every rule.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from clusterstate.keys import KeyKind, Keys
from clusterstate.records import RecordError, served_view
from clusterstate.topology import NodeRecord, Role, Topology, node_by_id

from .snapshot import LocalSnapshot


class BootRule(enum.StrEnum):
    ADOPT = "adopt-registry"  # rule 1
    LOCAL_AHEAD = "local-ahead"  # rule 2
    COLD_START = "cold-start"  # rule 3
    SPARE = "spare"  # rule 4
    ETCD_UNREACHABLE = "etcd-unreachable"  # rule 5
    RESUME_LOADING = "resume-loading"  # rule 6

    @property
    def number(self) -> int:
        return _NUMBERS[self]


_NUMBERS = {
    BootRule.ADOPT: 1,
    BootRule.LOCAL_AHEAD: 2,
    BootRule.COLD_START: 3,
    BootRule.SPARE: 4,
    BootRule.ETCD_UNREACHABLE: 5,
    BootRule.RESUME_LOADING: 6,
}


@dataclass(frozen=True, slots=True)
class Registry:
    """What etcd says, read at one revision."""

    epoch: int
    record: NodeRecord | None  # this node's nodes/<id>
    empty: bool  # no epoch, no shards, no nodes: nobody bootstrapped the cluster yet
    view: Topology | None  # the served view (None when the records do not form one)
    error: str = ""  # why there is no view although records exist


@dataclass(frozen=True, slots=True)
class BootDecision:
    rule: BootRule
    view: Topology | None  # the view to apply first
    source: str  # where that view comes from: "registry", "local" or "none"
    floor_epoch: int  # views with a lower epoch are never applied
    lease_allowed: bool  # may take leases/<shard> (false: read-only until told otherwise)
    loading: bool  # start as a loading, non-promotable replica
    conflict: str  # reported in status/ (rule 2)
    degraded: bool  # etcd unreachable
    sentence: str  # the one log line

    @property
    def registered(self) -> bool:
        """Whether etcd was reached, so status/ can be written (registration)."""
        return not self.degraded


def registry_from_values(keys: Keys, values: Mapping[str, bytes], node_id: str) -> Registry:
    """The registry from every value under the cluster root at one revision."""
    served = {}
    for key, raw in sorted(values.items()):  # key order: one canonical view per revision
        parsed = keys.parse(key)
        if parsed is not None and parsed.kind in (
            KeyKind.EPOCH, KeyKind.SHARD, KeyKind.NODE, KeyKind.MIGRATION
        ):
            served[key] = raw
    has_records = any(
        (p := keys.parse(k)) is not None and p.kind in (KeyKind.SHARD, KeyKind.NODE)
        for k in served
    )
    try:
        view: Topology | None = served_view(keys, served, finished=False)
        error = ""
    except RecordError as exc:
        view, error = None, str(exc)
    epoch = view.epoch if view is not None else _epoch_of(values.get(keys.epoch))
    record = node_by_id(view, node_id) if view is not None else None
    empty = not has_records and epoch == 0
    return Registry(epoch, record, empty, view if has_records or epoch else None, error)


def _epoch_of(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def decide_boot(local: LocalSnapshot | None, registry: Registry | None) -> BootDecision:
    """DESIGN §4's six rules; see the module docstring for their order."""
    local_epoch = local.epoch if local is not None else 0
    local_view = local.view if local is not None else None
    if registry is None:
        role = local.role.value if local is not None else "none"
        return BootDecision(
            BootRule.ETCD_UNREACHABLE, local_view, "local" if local_view else "none",
            floor_epoch=local_epoch, lease_allowed=False,
            loading=bool(local is not None and local.loading), conflict="", degraded=True,
            sentence=f"rule 5: etcd unreachable: starting from the local snapshot (epoch "
            f"{local_epoch}, role {role}), fenced, retrying the registry",
        )
    if local_epoch > registry.epoch:
        conflict = (
            f"local snapshot epoch {local_epoch} is ahead of the registry epoch "
            f"{registry.epoch}: registry restored from an older backup? not acting on it"
        )
        return BootDecision(
            BootRule.LOCAL_AHEAD, local_view, "local" if local_view else "none",
            floor_epoch=local_epoch, lease_allowed=False,
            loading=bool(local is not None and local.loading), conflict=conflict,
            degraded=False, sentence=f"rule 2: {conflict}; serving read-only",
        )
    record = registry.record
    if record is not None:
        resumed = (
            record.role is Role.REPLICA
            and local is not None
            and local.loading
            and local.replica_id == record.replica_id
            and local.shard == record.shard
        )
        if resumed:
            return BootDecision(
                BootRule.RESUME_LOADING, registry.view, "registry", floor_epoch=local_epoch,
                lease_allowed=True, loading=True, conflict="", degraded=False,
                sentence=f"rule 6: restarted mid-join: resuming as a loading, non-promotable "
                f"replica of shard {record.shard} (replica_id {record.replica_id})",
            )
        what = f"{record.role} of shard {record.shard}" if record.shard else "spare"
        return BootDecision(
            BootRule.ADOPT, registry.view, "registry", floor_epoch=local_epoch,
            lease_allowed=True, loading=False, conflict="", degraded=False,
            sentence=f"rule 1: adopting the registry: {what}, state {record.state}, epoch "
            f"{registry.epoch} (local {local_epoch})"
            + ("; writable once leases/<shard> is ours" if record.role is Role.PRIMARY else ""),
        )
    if registry.empty:
        return BootDecision(
            BootRule.COLD_START, None, "none", floor_epoch=local_epoch, lease_allowed=True,
            loading=False, conflict="", degraded=False,
            sentence="rule 3: cold start: no record and an empty cluster: registering ONLINE, "
            "waiting for the coordinator's bootstrap",
        )
    return BootDecision(
        BootRule.SPARE, registry.view, "registry" if registry.view else "none",
        floor_epoch=local_epoch, lease_allowed=True, loading=False, conflict="",
        degraded=False,
        sentence=f"rule 4: no record in an existing cluster (epoch {registry.epoch}): "
        "registering ONLINE as a spare",
    )
