"""The one actor that changes the data node: it applies views, holds or gives up the
slot lease, grants or revokes the write permit, and runs migrations.

Inputs arrive as callbacks from the other tasks (new records from the watcher,
acknowledged keepalives and lease loss from the lease keeper, replication facts
from the monitor); each callback only records what it got, sends an urgent fence
when the right to write was lost, and wakes :meth:`Applier.run`, which reconciles:

1. the latest view (:func:`sidecar.plan.plan_view`, carried out step by step);
2. the slot lease (:func:`sidecar.slotlease.decide`);
3. ``MIN-REPLICAS-TO-ACK`` from the settings;
4. migrations in which this node is the target primary;
5. the local snapshot (``node.json``), written when the applied record changes.

Write-permit commands are sent without any ``await`` between the decision and the
write to the socket, so they reach the data node in decision order (a grant
decided before a fence can never arrive after it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterstate.keys import KeyKind, Keys
from clusterstate.topology import Role, Topology, node_by_id, shard_by_id
from dcs.errors import StoreError
from dcs.port import Lease, Store

from . import permit, slotlease
from . import snapshot as local_snapshot
from .admin import AdminConnection, AdminError, Datanode, DatanodeUnavailable
from .boot import BootDecision
from .facts import Replication, still_loading, synced_replica_id
from .plan import (
    Applied,
    Fence,
    Promote,
    PushView,
    ReleaseSlotLease,
    Replicate,
    ViewPlan,
    WaitForTargets,
    min_acks_wanted,
    plan_view,
    slot_lease_wanted,
)
from .state import State
from .transfer import MigrationRun, migrations_to_run
from .watcher import Records

log = logging.getLogger(__name__)

TARGET_POLL = 0.003  # seconds between probes of a target's applied epoch
SNAPSHOT_COALESCE = 1.0  # seconds between two local snapshots that differ only in epoch


def registry_conflict(floor: int, registry_epoch: int) -> str:
    return (f"registry epoch {registry_epoch} is behind the epoch {floor} this node already "
            "applied (registry restored from an older backup?): serving read-only until the "
            "coordinator resolves it")


class Applier:
    def __init__(
        self,
        *,
        node_id: str,
        keys: Keys,
        datanode: Datanode,
        state: State,
        snapshot_path: Path,
        target_first_timeout: float,
        seed_replica_id: int,
        responsive_within: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.keys = keys
        self.datanode = datanode
        self.state = state
        self.snapshot_path = snapshot_path
        self.target_first_timeout = target_first_timeout
        self.responsive_within = responsive_within
        self.clock = clock
        self.applied = Applied(replica_id=seed_replica_id)
        self.floor = 0
        self.lease_allowed = False
        self.store: Store | None = None  # set when etcd is reached
        self.lease: Lease | None = None
        self.last_send: float | None = None
        self.last_ttl = 0
        self.records: Records | None = None
        self.pending: Topology | None = None
        self.pending_source = "registry"
        self.held = ""  # shard whose leases/<shard> we hold (as far as we know)
        self.claim_revision = 0
        self.min_acks: tuple[int, int] | None = None
        self.runs: dict[str, tuple[MigrationRun, asyncio.Task[None]]] = {}
        self.saved: local_snapshot.LocalSnapshot | None = None
        self.wake = asyncio.Event()
        self.records_changed = asyncio.Event()
        self._waiting_logged = ""
        self.deferred: tuple[Applied, Topology] | None = None
        self.granted_until = 0.0  # the latest permit deadline ever sent (fences may be lost)
        self.datanode_seen = clock()  # when the data node last answered the monitor
        self._to_save: local_snapshot.LocalSnapshot | None = None
        self._save_wanted = asyncio.Event()

    # ------------------------------------------------------------------ setup

    def start_from(self, decision: BootDecision, store: Store | None) -> None:
        """Take the boot decision's starting point (called again when etcd is reached
        after rule 5)."""
        self.floor = max(self.floor, decision.floor_epoch)
        self.lease_allowed = decision.lease_allowed
        self.store = store
        self.state.update(conflict=decision.conflict, loading=decision.loading,
                          boot_rule=decision.rule.value, degraded=decision.degraded)
        if decision.view is not None:
            self.pending, self.pending_source = decision.view, decision.source
        self.wake.set()

    # ------------------------------------------------------------------ callbacks

    def on_records(self, records: Records, changed: set[KeyKind]) -> None:
        self.records = records
        if KeyKind.LEASE in changed and self.held:
            rec = records.leases.get(self.held)
            if records.revision >= self.claim_revision and (
                rec is None or rec.holder != self.node_id
                or (self.lease is not None and rec.lease != self.lease.id)
            ):
                log.warning("leases/%s is no longer ours (%s): fenced", self.held,
                            "deleted" if rec is None else f"held by {rec.holder[:8]}")
                self._fence_now("slot lease lost")
                self.held = ""
        if changed & {KeyKind.EPOCH, KeyKind.SHARD, KeyKind.NODE, KeyKind.MIGRATION}:
            if records.view is not None:
                self.pending, self.pending_source = records.view, "registry"
                if not self._still_primary(records.view) and self.applied.role is Role.PRIMARY \
                        and records.view.epoch > self.applied.epoch:
                    # Stop writes the moment a view demotes us, not when it is applied.
                    self._fence_now(f"demoted by the view of epoch {records.view.epoch}")
            if records.view_error:
                self.state.update(last_error=f"records do not form a valid view: "
                                             f"{records.view_error}")
        if KeyKind.STATUS in changed:
            self._update_primary_offset(records)
        if KeyKind.SHARD in changed or KeyKind.NODE in changed:
            self._follow_handoff(records)
        self.records_changed.set()
        self.wake.set()

    def _still_primary(self, view: Topology) -> bool:
        """Whether ``view`` keeps this node the primary of the shard it applied."""
        me = node_by_id(view, self.node_id)
        return me is not None and me.role is Role.PRIMARY and me.shard == self.applied.shard

    def _follow_handoff(self, records: Records) -> None:
        """A leadership transfer away from this primary (``handoff`` on its shard):
        stop writes at once, before the view of that epoch is applied and reported;
        writes resume if the transfer is aborted (DESIGN §3). The transfer's end by a
        view that demotes this node does not resume anything."""
        me = node_by_id(records.view, self.node_id) if records.view is not None else None
        if me is None or me.role is not Role.PRIMARY:
            return  # demoted (or never primary): the plan fences; writes stay stopped
        target = records.handoffs.get(me.shard, "")
        current = self.state.peek().handoff
        if target == current:
            return
        self.state.update(handoff=target)
        if target:
            log.info("leadership transfer of shard %s to %s: writes stopped", me.shard,
                     target[:8])
            self._fence_now("leadership transfer", keeps_slot_lease=True)
        else:
            log.info("leadership transfer aborted: writes resume")

    def on_datanode_reply(self) -> None:
        self.datanode_seen = self.clock()

    def on_keepalive(self, send_time: float, ttl: int) -> None:
        self.last_send, self.last_ttl = send_time, ttl
        writer = self.state.peek().writer
        if self.clock() - self.datanode_seen > self.responsive_within:
            # A data node that stopped answering gets no new permit: if it is only hung,
            # the permit it holds runs out soon and its lease can be released safely.
            writer = dataclasses.replace(writer, datanode_up=False)
        action = permit.after_keepalive(writer, send_time, ttl, self.clock())
        if isinstance(action, permit.Grant):
            self._send_grant(action)

    def on_lease_lost(self) -> None:
        self.lease, self.last_send = None, None
        self.held = ""
        self._fence_now("etcd lease lost")
        self.state.update(lease_id=0)

    async def on_new_lease(self, lease: Lease) -> None:
        self.lease = lease
        self.state.update(lease_id=lease.id)
        self.wake.set()

    def on_replication(self, repl: Replication) -> None:
        """An observation of the data node's replication: the observed health and the
        loading flag change together (the status that says ``online`` is published
        from the same facts that say promotable)."""
        before = self.state.peek()
        synced = synced_replica_id(before.repl, repl, before.synced_replica_id)
        after = dataclasses.replace(before, repl=repl, datanode_up=True, datanode_error="",
                                    synced_replica_id=synced)
        loading = still_loading(after)
        self.state.update(repl=repl, datanode_up=True, datanode_error="",
                          synced_replica_id=synced, loading=loading)
        if loading != before.loading:
            log.info("replica %s", "loading" if loading else "synced: online, promotable")
            self.wake.set()  # the local snapshot records it; a deferred promotion may go

    # ------------------------------------------------------------------ permit

    def _send_grant(self, grant: permit.Grant) -> None:
        self.datanode.grant(grant.until_ms).add_done_callback(_ignore)
        self.granted_until = max(self.granted_until, grant.deadline)
        self.state.update(permit_until=grant.deadline)

    def _fence_now(self, why: str, *, force: bool = True, keeps_slot_lease: bool = False) -> None:
        """Revoke the permit now (``force=False``: only if one may be live)."""
        was = self.state.peek().slot_lease or self.state.peek().permit_until is not None
        if keeps_slot_lease:
            self.state.update(permit_until=None)
        else:
            self.state.update(slot_lease=False, permit_until=None)
        if was or force:
            self.datanode.revoke().add_done_callback(_ignore)
        if was:
            log.info("write permit revoked: %s", why)

    def fence_for_shutdown(self) -> None:
        self.state.update(shutting_down=True)
        self._fence_now("shutting down")

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        writer = asyncio.create_task(self._snapshot_writer(), name="local-snapshot")
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                try:
                    await self.reconcile()
                except DatanodeUnavailable:
                    raise
                except StoreError as exc:
                    log.warning("etcd request failed while reconciling (%s): retrying", exc)
                    await asyncio.sleep(0.1)
                    self.wake.set()
        finally:
            writer.cancel()

    async def reconcile(self) -> None:
        await self._reconcile_view()
        # Before any permit: a primary made writable must wait for its replicas'
        # acknowledgements from its very first write (DESIGN §3).
        await self._reconcile_min_acks()
        await self._reconcile_deferred()
        await self._reconcile_slot_lease()
        self._reconcile_permit()
        self._reconcile_migrations()
        self._request_snapshot()

    # ------------------------------------------------------------------ 1. the view

    async def _reconcile_view(self) -> None:
        view, source = self.pending, self.pending_source
        if view is None or view == self.applied.view:
            return
        self.pending = None
        ceiling = max(self.floor, self.applied.epoch)
        if source == "registry":
            conflict = self.state.peek().conflict
            if view.epoch < ceiling:
                text = registry_conflict(ceiling, view.epoch)
                if conflict != text:
                    log.error("stale view epoch %d from the registry ignored: %s", view.epoch,
                              text)
                    self.state.update(conflict=text)
                    self.lease_allowed = False
                    self._fence_now("registry conflict")
                return
            if conflict:
                log.info("registry epoch %d caught up with the local epoch %d: conflict "
                         "resolved, adopting the registry", view.epoch, ceiling)
                self.state.update(conflict="")
                self.lease_allowed = True
        await self._apply(view, source)

    async def _apply(self, view: Topology, source: str) -> None:
        before = self.applied
        plan = plan_view(before, view, self.node_id, floor_epoch=self.floor,
                         loading=self.state.peek().loading)
        if plan.skip:
            if plan.error:
                log.error("%s", plan.sentence)
                self.state.update(last_error=plan.error)
            return
        if await self._carry_out(plan):
            self._adopt(plan, source)
            # A promotion refused while loading is carried out once the replica is synced.
            me = node_by_id(view, self.node_id)
            refused = (bool(plan.error) and me is not None and me.role is Role.PRIMARY
                       and plan.applied.role is not Role.PRIMARY)
            self.deferred = (before, view) if refused else None

    async def _reconcile_deferred(self) -> None:
        deferred = self.deferred
        if deferred is None or self.state.peek().loading:
            return
        before, view = deferred
        self.deferred = None
        if self.applied.view is not view:
            return  # a newer view came meanwhile
        log.info("replica synced: carrying out the promotion of epoch %d", view.epoch)
        self.applied = before
        await self._apply(view, "registry")

    async def _carry_out(self, plan: ViewPlan) -> bool:
        for step in plan.steps:
            try:
                if isinstance(step, Fence):
                    self._fence_now(step.reason)
                elif isinstance(step, ReleaseSlotLease):
                    await self._release(step.shard)
                elif isinstance(step, WaitForTargets):
                    await self._wait_for_targets(step)
                elif isinstance(step, PushView):
                    await self.datanode.push_view(step.view)
                elif isinstance(step, Promote):
                    await self.datanode.promote(step.epoch, step.replica_id)
                elif isinstance(step, Replicate) and step.new_member:
                    _, observed = await self.datanode.replicate_and_observe(
                        step.host, step.port, step.epoch, step.replica_id)
                    self._joined(step.replica_id, observed)
                elif isinstance(step, Replicate):
                    await self.datanode.replicate(step.host, step.port, step.epoch,
                                                  step.replica_id)
            except AdminError as exc:
                text = f"data node refused {type(step).__name__} for epoch {plan.applied.epoch}: {exc}"
                log.error("%s", text)
                self.state.update(last_error=text)
                return False
        return True

    def _joined(self, replica_id: int, observed: Replication | None) -> None:
        """A new replica_id was instructed: a full resync, loading until the data node is
        seen holding a complete copy under that replica_id. ``observed`` was read right
        behind ``REPLICATE`` (before any sync it started could complete): it is the
        baseline that lets the next observation count a full sync loaded meanwhile, even
        if the primary died and the link was never seen up."""
        if observed is not None:
            self.on_replication(observed)
        self.state.update(loading=self.state.peek().synced_replica_id != replica_id)

    def _adopt(self, plan: ViewPlan, source: str) -> None:
        applied = plan.applied
        self.applied = applied
        me = node_by_id(applied.view, self.node_id) if applied.view is not None else None
        self.state.update(
            epoch_applied=applied.epoch,
            role_applied=applied.role,
            shard=applied.shard,
            replica_id=applied.replica_id,
            state=me.state.value if me is not None else "",
            hidden=me.hidden if me is not None else False,
            served_zone=me.zone if me is not None else None,
            last_error=plan.error,
        )
        if applied.role is not Role.PRIMARY:
            self.state.update(handoff="")
        log.info("%s (from the %s)", plan.sentence, "local snapshot" if source == "local"
                 else "registry")
        if self.records is not None:
            self._update_primary_offset(self.records)

    async def _wait_for_targets(self, step: WaitForTargets) -> None:
        """Until every target primary applied ``step.epoch``: seen in its status in
        etcd, or answered by its data node (``TOPOLOGY EPOCH`` on its admin port,
        polled every few ms: the status takes two etcd round trips more, and
        the source refuses writes to the slots meanwhile). Bounded."""
        start = self.clock()
        deadline = start + self.target_first_timeout
        probed: set[str] = set()
        probe = asyncio.create_task(self._probe_targets(step, probed))
        try:
            while True:
                statuses = self.records.statuses if self.records is not None else {}
                behind = [n for n in step.node_ids if n not in probed and (
                    n not in statuses or statuses[n].epoch_applied < step.epoch)]
                if not behind:
                    log.info("slots move away at epoch %d: the target primaries %s applied it "
                             "first (waited %.0f ms)", step.epoch,
                             ",".join(n[:8] for n in step.node_ids),
                             (self.clock() - start) * 1000)
                    return
                left = deadline - self.clock()
                if left <= 0:
                    log.warning("targets %s did not apply epoch %d within %.1fs: applying anyway",
                                ",".join(n[:8] for n in behind), step.epoch,
                                self.target_first_timeout)
                    return
                self.records_changed.clear()
                try:
                    async with asyncio.timeout(min(left, TARGET_POLL)):
                        await self.records_changed.wait()
                except TimeoutError:
                    pass
        finally:
            probe.cancel()

    async def _probe_targets(self, step: WaitForTargets, probed: set[str]) -> None:
        """Ask the targets' data nodes for their epoch until each has ``step.epoch``
        (best effort: errors leave it to the status in etcd)."""
        for node_id, (host, port) in zip(step.node_ids, step.addrs, strict=False):
            conn = AdminConnection(host, port, timeout=1.0)
            try:
                await conn.connect()
                while True:
                    epoch = await conn.call("SLOTKEEPER", "TOPOLOGY", "EPOCH")
                    if isinstance(epoch, int) and epoch >= step.epoch:
                        probed.add(node_id)
                        self.records_changed.set()
                        break
                    await asyncio.sleep(TARGET_POLL)
            except (AdminError, DatanodeUnavailable, OSError):
                continue
            finally:
                conn.close()

    def _update_primary_offset(self, records: Records) -> None:
        view = self.applied.view
        offset = None
        if view is not None and self.applied.role is Role.REPLICA:
            shard = shard_by_id(view, self.applied.shard)
            status = records.statuses.get(shard.primary) if shard is not None else None
            offset = status.repl_offset if status is not None else None
        self.state.update(primary_offset=offset)

    # ------------------------------------------------------------------ 2. slot lease

    async def _reconcile_slot_lease(self) -> None:
        store, records, lease = self.store, self.records, self.lease
        if store is None or records is None or lease is None:
            return
        facts = self.state.peek()
        allowed = (self.lease_allowed and not facts.conflict and not facts.shutting_down
                   and records.view is not None and self._still_primary(records.view))
        wanted_shard = slot_lease_wanted(self.applied, allowed)
        shard = wanted_shard or self.held or self.applied.shard
        if not shard:
            return
        record = records.leases.get(shard)
        if self.held == shard and wanted_shard and facts.slot_lease:
            return  # ours; the watch may simply not have shown it yet
        claim = slotlease.decide(bool(wanted_shard) and shard == wanted_shard, record,
                                 self.node_id, lease.id)
        if claim is slotlease.Claim.HOLD:
            self._holding(shard, record.mod_revision if record else 0)
        elif claim in (slotlease.Claim.ACQUIRE, slotlease.Claim.REPLACE):
            if records.view is None or records.view.epoch != self.applied.epoch:
                return  # a newer view is on its way: decide on that one
            replace = None
            if claim is slotlease.Claim.REPLACE:
                replace = records.values[self.keys.lease(shard)].value
            got = await slotlease.acquire(store, self.keys, shard, self.node_id, lease.id,
                                          records.epoch_revision, replace)
            if got is None:
                log.info("leases/%s not taken: the epoch moved on or another node took it",
                         shard)
                self.wake.set()
                return
            log.info("leases/%s taken on lease %x at epoch %d: writable", shard, lease.id,
                     self.applied.epoch)
            self._holding(shard, got.mod_revision)
        elif claim is slotlease.Claim.WAIT:
            assert record is not None
            if self._waiting_logged != record.holder:
                self._waiting_logged = record.holder
                log.info("leases/%s is held by %s: staying read-only until it is released or "
                         "the coordinator says otherwise", shard, record.holder[:8])
        elif claim is slotlease.Claim.RELEASE:
            await self._release(shard)

    def _holding(self, shard: str, revision: int) -> None:
        self.held, self.claim_revision = shard, revision
        self._waiting_logged = ""
        self.state.update(slot_lease=True)
        action = permit.on_change(self.state.peek().writer, self.last_send, self.last_ttl,
                                  self.clock())
        if isinstance(action, permit.Grant):
            self._send_grant(action)

    async def _release(self, shard: str) -> None:
        self._fence_now(f"giving up leases/{shard}", force=False)
        if self.held == shard:
            self.held = ""
        if self.store is None:
            return
        if await slotlease.release(self.store, self.keys, shard, self.node_id):
            log.info("leases/%s released", shard)

    def _reconcile_permit(self) -> None:
        """Grant at once when the right to write came back (a conflict resolved, a
        transfer aborted) rather than at the next keepalive."""
        facts = self.state.peek()
        if facts.permit_until is not None or facts.writer_refusal:
            return
        action = permit.on_change(facts.writer, self.last_send, self.last_ttl, self.clock())
        if isinstance(action, permit.Grant):
            self._send_grant(action)

    # ------------------------------------------------------------------ 3. settings

    async def _reconcile_min_acks(self) -> None:
        if self.records is None:
            return
        wanted = min_acks_wanted(self.records.settings, self.applied)
        if wanted is None or wanted == self.min_acks:
            return
        try:
            await self.datanode.min_replicas_to_ack(*wanted)
        except AdminError as exc:
            log.warning("MIN-REPLICAS-TO-ACK %d refused: %s", wanted[0], exc)
        self.min_acks = wanted
        log.info("min_replicas_to_ack %d (ack timeout %d ms) set on the data node", *wanted)

    # ------------------------------------------------------------------ 4. migrations

    def _reconcile_migrations(self) -> None:
        if self.store is None:
            return
        jobs = {j.id: j for j in migrations_to_run(self.applied.view, self.node_id,
                                                   bool(self.held) and self.state.peek().slot_lease)}
        for mid, (_run, task) in list(self.runs.items()):
            if task.done() and mid not in jobs:
                del self.runs[mid]
            elif mid not in jobs and not task.done():
                log.info("migration %s is no longer running here: stopping it", mid)
                task.cancel()
                del self.runs[mid]
        for mid, job in jobs.items():
            if mid in self.runs:
                continue
            run = MigrationRun(job, datanode=self.datanode, store=self.store, keys=self.keys,
                               node_id=self.node_id, on_progress=self._on_progress,
                               clock=self.clock, records=lambda: self.records)
            self.runs[mid] = (run, asyncio.create_task(run.run(), name=f"migration-{mid}"))

    def _on_progress(self, migration_id: str, doc: dict[str, Any]) -> None:
        current = dict(self.state.peek().migrations)
        current[migration_id] = {k: doc.get(k) for k in (
            "keys_moved", "bytes_moved", "copy_state", "error")}
        self.state.update(migrations=current)

    def stop_migrations(self) -> None:
        for _, task in self.runs.values():
            task.cancel()
        self.runs.clear()

    # ------------------------------------------------------------------ 5. local snapshot

    def _request_snapshot(self) -> None:
        """Have the writer task save the applied record if it changed (off the path
        that applies views: an fsync can take milliseconds)."""
        if self.applied.view is None:
            return
        snap = local_snapshot.from_applied(self.node_id, self.applied.view,
                                           self.state.peek().loading)
        if snap != self.saved and snap != self._to_save:
            self._to_save = snap
            self._save_wanted.set()

    async def _snapshot_writer(self) -> None:
        last_write = -1e9
        while True:
            await self._save_wanted.wait()
            self._save_wanted.clear()
            snap = self._to_save
            if snap is None or snap == self.saved:
                continue
            if self.saved is not None and _same_record(snap, self.saved):
                # only the epoch (and the rest of the view) moved on: at most one
                # write (two fsyncs) per SNAPSHOT_COALESCE, the newest view then
                wait = last_write + SNAPSHOT_COALESCE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    self._save_wanted.clear()
                    snap = self._to_save
                    if snap is None or snap == self.saved:
                        continue
            last_write = time.monotonic()
            try:
                await asyncio.to_thread(local_snapshot.write, self.snapshot_path, snap)
            except OSError as exc:
                log.error("local snapshot %s not written: %s", self.snapshot_path, exc)
                await asyncio.sleep(1.0)
                self._save_wanted.set()
                continue
            self.saved = snap

    async def flush_snapshot(self) -> None:
        """Write the pending local snapshot now (tests, shutdown)."""
        self._request_snapshot()
        snap = self._to_save
        if snap is not None and snap != self.saved:
            await asyncio.to_thread(local_snapshot.write, self.snapshot_path, snap)
            self.saved = snap


def _same_record(a: local_snapshot.LocalSnapshot, b: local_snapshot.LocalSnapshot) -> bool:
    """The same node record, replica_id, shard and loading state (what the role at
    boot is decided from): only the epoch and the rest of the view differ."""
    return (a.node, a.replica_id, a.shard, a.loading) == (b.node, b.replica_id, b.shard,
                                                           b.loading)


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a lost connection is the monitor's business
