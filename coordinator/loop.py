"""The coordinator's loop: one view, one plan, one transaction per action, one
sentence — per cycle.

:meth:`Coordinator.cycle` reads the cluster (one etcd range read, plus
Consul's health), plans (:func:`coordinator.planner.plan`), applies the
actions (:class:`coordinator.reconciler.Reconciler`) and returns one sentence
saying what it did or what the cluster waits for; :meth:`Coordinator.run`
logs that sentence (INFO when it changed, DEBUG when it repeats). A standby's
cycle only says who leads.

Cycles are woken by a watch on the cluster's keys (any change: a status, a
lease, an intent), by the API after it recorded an intent, and by leadership
changes; ``loop_wait`` is the timer fallback (transfer deadlines, Consul).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from clusterstate.keys import Keys
from dcs.consul import ConsulCatalog
from dcs.errors import StoreError, WatchCompacted
from dcs.port import Store
from dcs.retry import DEFAULT_POLICY

from .leader import Elector
from .metrics import Metrics
from .planner import plan
from .policy import Policy
from .reconciler import Reconciler
from .view import ClusterView, ViewError, consul_health, load_view

log = logging.getLogger(__name__)

#: Seconds a wake-up waits for more changes before the cycle runs.
COALESCE = 0.01


class Coordinator:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        elector: Elector,
        *,
        consul: ConsulCatalog | None = None,
        policy: Policy | None = None,
        history_limit: int = 1000,
        loop_wait: float = 1.0,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.elector = elector
        self.consul = consul
        self.policy = policy or Policy()
        self.loop_wait = loop_wait
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.reconciler = Reconciler(
            store,
            keys,
            fence=elector.fence,
            history_limit=history_limit,
            leader_id=elector.instance_id,
            clock=clock,
        )
        self.last_view: ClusterView | None = None
        self._consul: Mapping[str, str] | None = None
        self._consul_at = -1e9
        self.last_sentence = ""
        self.cycles = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run a cycle as soon as possible."""
        self._wake.set()

    async def consul_health(self) -> Mapping[str, str] | None:
        """Consul's view of the data nodes, refreshed at most every ``loop_wait``."""
        if self.consul is None:
            return None
        now = time.monotonic()
        if now - self._consul_at >= self.loop_wait:
            self._consul_at = now
            self._consul = await consul_health(self.consul)
        return self._consul

    # ----------------------------------------------------------------- one cycle

    async def cycle(self) -> str:
        """Run one cycle; return its sentence."""
        started = time.perf_counter()
        outcome = "error"
        try:
            sentence, outcome = await self._cycle()
        finally:
            self.cycles += 1
            self.metrics.cycles.labels(outcome).inc()
            self.metrics.cycle_seconds.observe(time.perf_counter() - started)
            self.metrics.leader.set(1 if self.elector.is_leader() else 0)
        self.last_sentence = sentence
        return sentence

    async def _cycle(self) -> tuple[str, str]:
        if not self.elector.is_leader():
            leader = self.elector.known_leader
            if leader is not None and leader.id != self.elector.instance_id:
                return f"standing by: {leader.id} leads ({leader.api or 'no API address'})", "standby"
            return "standing by: no leader holds coordinator/leader", "standby"
        try:
            view = await load_view(self.store, self.keys, await self.consul_health())
        except StoreError as exc:
            self.metrics.etcd_errors.inc()
            return f"cannot read the cluster from etcd: {exc}", "error"
        except ViewError as exc:
            return f"not acting: the records in etcd are inconsistent: {exc}", "error"
        self.last_view = view
        self.metrics.observe_view(view)
        decided = plan(view, view.settings, self.clock(), self.policy)
        if not decided.actions:
            return decided.sentence(), "idle"
        if not self.elector.is_leader():
            return "leadership lapsed before acting: not writing", "standby"
        try:
            done = await self.reconciler.apply(view, decided.actions)
        except StoreError as exc:
            self.metrics.etcd_errors.inc()
            self.wake()
            return f"etcd failed while applying the plan ({decided.sentence()}): {exc}", "error"
        self.metrics.observe_applied(done.applied)
        if done.epoch != view.epoch:
            self.metrics.epoch.set(done.epoch)
        what = "; ".join(a.why for a in done.applied)
        if done.lost is not None:
            self.metrics.cas_conflicts.inc()
            self.wake()
            head = f"{what}; then " if what else ""
            return (
                f"{head}lost a compare-and-set on {done.lost.kind} at epoch {done.epoch} "
                "(the cluster changed meanwhile): reloading and planning again",
                "conflict",
            )
        if decided.deferred:
            self.wake()
            what += f"; {len(decided.deferred)} more next cycle"
        if decided.notes:
            what += "; " + "; ".join(decided.notes)
        if done.epoch != view.epoch:
            return f"epoch {view.epoch}→{done.epoch}: {what}", "acted"
        return what, "acted"

    # ----------------------------------------------------------------- the task

    async def run(self) -> None:
        """Cycle until cancelled: on wake-ups, else every ``loop_wait``."""
        watcher = asyncio.create_task(self._watch(), name="coordinator-watch")
        previous = ""
        self.wake()  # the first cycle at once
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.loop_wait):
                        await self._wake.wait()
                await asyncio.sleep(COALESCE)  # one cycle for a burst of changes
                self._wake.clear()
                try:
                    sentence = await self.cycle()
                except Exception:
                    log.exception("coordinator cycle failed")
                    await asyncio.sleep(min(self.loop_wait, 1.0))
                    continue
                level = logging.INFO if sentence != previous else logging.DEBUG
                log.log(level, "%s", sentence)
                previous = sentence
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self) -> None:
        """Wake the loop on every change under the cluster root."""
        failures = 0
        while True:
            try:
                snapshot = await self.store.load(self.keys.root)
                failures = 0
                async for _batch in self.store.watch(self.keys.root, snapshot.revision + 1):
                    self.wake()
            except WatchCompacted:
                continue
            except StoreError as exc:
                failures += 1
                delay = DEFAULT_POLICY.backoff(failures)
                log.debug("watch of %s interrupted: %s; again in %.2fs", self.keys.root, exc, delay)
                await asyncio.sleep(delay)


__all__ = ["Coordinator"]
