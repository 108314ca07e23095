"""The sidecar process: one supervisor, one task per concern.

Always running: the HTTP endpoints (:mod:`sidecar.api`), the Consul registrar
(:mod:`sidecar.registrar`) and, with ``--supervise``, the data node process.

Per *session* (one life of the data node, as seen from here):

1. connect to the data node's admin port (waiting for it), read its node id and
   ports, fence it (``WRITE-PERMIT REVOKE``), start the monitor;
2. read the local snapshot and the registry, decide the role at boot
   (:func:`sidecar.boot.decide_boot`); with etcd unreachable, start from the
   local snapshot (rule 5) and keep retrying, then decide again;
3. grant the lease, publish ``status/<node_id>`` (registration), then run the
   lease keeper, the registry watcher, the applier and the status publisher
   until the data node dies or a stop is requested.

When the data node dies the lease is revoked at once (its status and any slot
lease vanish: the coordinator fails over) and a new session waits for the data
node to come back. SIGTERM: fence, revoke the lease, deregister from Consul, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from clusterstate.topology import Role
from dcs.consul import ConsulCatalog
from dcs.errors import StoreError, StoreUnavailable
from dcs.etcd import EtcdStore
from dcs.port import Lease, Snapshot, Store
from dcs.retry import RetryPolicy, retry

from . import permit
from . import snapshot as local_snapshot
from .admin import AdminConnection, Datanode, DatanodeUnavailable, fence_or_confirm_gone
from .api import Api
from .applier import Applier
from .boot import decide_boot, registry_from_values
from .config import SidecarConfig
from .lease import LeaseKeeper, LeaseTiming
from .monitor import DatanodeMonitor
from .process import SupervisedDatanode
from .registrar import Registrar
from .state import State
from .status import StatusPublisher
from .watcher import RegistryWatcher

log = logging.getLogger(__name__)

T = TypeVar("T")


class SessionOver(Exception):
    """The data node died, or a stop was requested, while a session step waited."""


class Sidecar:
    def __init__(
        self,
        config: SidecarConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.keys = config.keys
        self.clock = clock
        self.state = State(clock)
        self.api = Api(self.state, clock)
        self._store = store
        self.catalog: ConsulCatalog | None = None
        self.registrar: Registrar | None = None
        self.process = SupervisedDatanode(config.supervise) if config.supervise else None
        self.stopping = asyncio.Event()
        self.applier: Applier | None = None
        self.keeper: LeaseKeeper | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._monitor: asyncio.Task[str] | None = None
        self._publisher: StatusPublisher | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            c = self.config
            self._store = EtcdStore(
                list(c.etcd), timeout=c.etcd_timeout,
                username=c.etcd_user or None, password=c.etcd_password or None,
                ca_cert=c.etcd_cacert or None, cert_cert=c.etcd_cert or None,
                cert_key=c.etcd_key or None,
            )
        return self._store

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: fencing, revoking the lease, deregistering")
            self.stopping.set()

    # ------------------------------------------------------------------ process

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        c = self.config
        http_port = await self.api.start(c.http_bind, c.http_port)
        self.state.update(http_port=http_port, zone=c.zone, addr=c.advertise_addr)
        if c.consul:
            self.catalog = ConsulCatalog(c.consul, c.consul_token or None,
                                         verify=c.consul_verify or True)
            self.registrar = Registrar(self.catalog, self.state, health_url=c.health_url,
                                       deregister_after=c.consul_deregister_after)
            self._background.append(asyncio.create_task(self.registrar.run(), name="consul"))
        if self.process is not None:
            self._background.append(asyncio.create_task(self.process.run(), name="datanode"))
        code = 0
        try:
            while not self.stopping.is_set():
                try:
                    await self.session()
                except SessionOver:
                    pass
                except ValueError as exc:  # the timing rule, bad settings
                    log.error("cannot run: %s", exc)
                    code = 1
                    break
                except Exception:
                    log.exception("session failed: starting over in 1s")
                    await self._revoke()
                    await self._sleep_unless_stopping(1.0)
        finally:
            await self.shutdown()
        return code

    async def shutdown(self) -> None:
        applier = self.applier
        fenced = False
        if applier is not None:
            applier.fence_for_shutdown()
            applier.stop_migrations()
            with contextlib.suppress(OSError):
                await applier.flush_snapshot()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await applier.datanode.revoke()
                    fenced = True
        if fenced or applier is None:
            await self._revoke()
        else:
            await self._release_lease(*self.config.datanode_addr)
        self.applier = None
        if self.registrar is not None:
            await self.registrar.deregister()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.process is not None:
            await self.process.stop()
        if self.catalog is not None:
            await self.catalog.close()
        if self._store is not None:
            await self._store.close()
        await self.api.stop()
        log.info("sidecar stopped")

    async def _revoke(self) -> None:
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            await keeper.revoke(timeout=1.0)
        self.state.update(lease_id=0, slot_lease=False)

    # ------------------------------------------------------------------ one data node life

    async def session(self) -> None:
        c = self.config
        host, port = c.datanode_addr
        conn = AdminConnection(host, port, timeout=max(1.0, c.datanode_timeout))
        await self._connect(conn)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self._run_session(conn, tasks)
        except DatanodeUnavailable as exc:
            log.error("data node stopped answering: %s", exc)
        finally:
            if not self.stopping.is_set():
                # The data node is gone (or a task failed): the lease goes first, so the
                # coordinator fails over at once; everything else after.
                await self._release_lease(host, port)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.applier is not None and not self.stopping.is_set():
                self.applier.stop_migrations()
                self.applier = None
            if not self.stopping.is_set():
                conn.close()

    async def _run_session(self, conn: AdminConnection, tasks: list[asyncio.Task[Any]]) -> None:
        c = self.config
        dn = Datanode(conn)
        node_id = await dn.node_id()
        client_port, admin_port = await dn.ports()
        await dn.revoke()  # fenced before anything else: a primary waits for its permit
        repl = await dn.replication()
        self.state.update(node_id=node_id, port=client_port, admin_port=admin_port,
                          datanode_up=True, datanode_error="", repl=repl, lease_id=0,
                          slot_lease=False, permit_until=None, epoch_applied=-1,
                          role_applied=Role.NONE, shard="", state="", hidden=False,
                          served_zone=None, replica_id=repl.replica_id,
                          synced_replica_id=None, migrations={})
        log.info("data node %s answering (clients :%d, admin :%d), %s at epoch %d: fenced",
                 node_id, client_port, admin_port, repl.role, repl.epoch)
        local = local_snapshot.read(c.snapshot_path, node_id)
        applier = Applier(
            node_id=node_id, keys=self.keys, datanode=dn, state=self.state,
            snapshot_path=c.snapshot_path, target_first_timeout=c.target_first_timeout,
            seed_replica_id=repl.replica_id, clock=self.clock,
            responsive_within=max(0.3, 3 * c.ping_interval),
        )
        self.applier = applier
        monitor = DatanodeMonitor(host=conn.host, port=conn.port,
                                  on_replication=applier.on_replication,
                                  on_reply=applier.on_datanode_reply,
                                  interval=c.ping_interval, timeout=c.datanode_timeout,
                                  clock=self.clock)
        self._monitor = asyncio.create_task(monitor.run(), name="monitor")
        self._monitor.add_done_callback(self._on_datanode_gone)
        tasks.append(self._monitor)
        tasks.append(asyncio.create_task(applier.run(), name="applier"))

        snap = await self._race(self._load_registry(self.clock() + c.boot_etcd_timeout))
        if snap is None:
            decision = decide_boot(local, None)
            log.warning("%s", decision.sentence)
            applier.start_from(decision, None)
            snap = await self._race(self._load_registry(None))
            local = applier.saved or local
        assert snap is not None  # without a deadline the registry is loaded or we never get here
        records = RegistryWatcher(self.store, self.keys, applier.on_records)
        seeded = records.seed(snap)
        registry = registry_from_values(self.keys, seeded.raw(), node_id)
        decision = decide_boot(local, registry)
        (log.warning if decision.conflict else log.info)("%s", decision.sentence)
        timing = LeaseTiming.of(seeded.settings)
        applier.records = seeded
        applier.start_from(decision, self.store)

        keeper = LeaseKeeper(
            self.store, timing,
            on_ack=applier.on_keepalive, on_lost=applier.on_lease_lost,
            on_new_lease=self._new_lease_handler(applier),
            on_trouble=self._etcd_trouble, on_ok=self._etcd_ok, clock=self.clock,
        )
        self.keeper = keeper
        publisher = StatusPublisher(self.store, self.keys, node_id, self.state,
                                    offset_interval=timing.keepalive_interval, clock=self.clock)
        self._publisher = publisher
        lease = await self._race(keeper.grant())
        await self._new_lease_handler(applier)(lease)
        await publisher.publish_now()
        tasks.append(asyncio.create_task(keeper.run(), name="lease"))
        tasks.append(asyncio.create_task(records.run(), name="watcher"))
        tasks.append(asyncio.create_task(publisher.run(), name="status"))
        stop = asyncio.create_task(self.stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        for task in done:
            if task is stop or task is self._monitor:
                continue
            exc = task.exception()
            if exc is not None:
                raise exc
            raise RuntimeError(f"task {task.get_name()} ended")

    def _new_lease_handler(self, applier: Applier) -> Callable[[Lease], Awaitable[None]]:
        async def handler(lease: Lease) -> None:
            await applier.on_new_lease(lease)
            if self._publisher is not None:
                self._publisher.reset()

        return handler

    def _on_datanode_gone(self, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            return
        reason = task.result() if task.exception() is None else repr(task.exception())
        if self.stopping.is_set():
            return
        log.error("data node gone: %s", reason)
        self.state.update(datanode_up=False, datanode_error=reason, slot_lease=False,
                          permit_until=None)

    async def _release_lease(self, host: str, port: int) -> None:
        """Revoke the lease once the data node can no longer write: at once if its
        process is gone or it acknowledged a fence; otherwise after the last write
        permit granted to it ran out (a hung primary must not outlive its lease)."""
        if self.keeper is None or self.keeper.lease is None:
            return
        fate = await fence_or_confirm_gone(host, port, timeout=0.2)
        granted = self.applier.granted_until if self.applier is not None else 0.0
        delay = permit.release_delay(fate, granted, self.clock())
        if delay > 0:
            log.warning("the data node does not answer and may hold a write permit for %.0f ms "
                        "more: revoking the lease when it has run out", delay * 1000)
            await asyncio.sleep(delay + 0.01)
        else:
            log.info("data node %s: revoking the lease now (fast failover)", fate)
        await self._revoke()

    async def _connect(self, conn: AdminConnection) -> None:
        logged = False
        while True:
            if self.stopping.is_set():
                raise SessionOver("stopping")
            try:
                await conn.connect()
                return
            except DatanodeUnavailable as exc:
                self.state.update(datanode_up=False, datanode_error=str(exc))
                if not logged:
                    log.warning("waiting for the data node: %s", exc)
                    logged = True
            await self._sleep_unless_stopping(0.1)

    async def _race(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the data node dies or a stop is requested first."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.create_task(self.stopping.wait())
        waiters: set[asyncio.Future[Any]] = {task, stop}
        if self._monitor is not None:
            waiters.add(self._monitor)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise SessionOver("data node gone or stopping")

    async def _load_registry(self, deadline: float | None) -> Snapshot | None:
        # One attempt per round (retries of our own, logged once by _etcd_trouble).
        policy = RetryPolicy(attempts=1, timeout=self.config.etcd_timeout, max_delay=2.0)
        failures = 0
        while True:
            try:
                snap = await retry(lambda: self.store.load(self.keys.root), policy=policy,
                                   what="load the registry", clock=self.clock)
                self._etcd_ok()
                return snap
            except StoreUnavailable as exc:
                self._etcd_trouble(str(exc))
                failures += 1
                if deadline is not None and self.clock() >= deadline:
                    return None
                await asyncio.sleep(policy.backoff(failures))
            except StoreError as exc:  # refused (auth, permissions): keep trying, loudly
                log.error("etcd refused to load the registry: %s", exc)
                self._etcd_trouble(str(exc))
                await asyncio.sleep(1.0)

    def _etcd_trouble(self, why: str) -> None:
        if self.state.update(etcd_up=False, etcd_error=why):
            log.warning("etcd unreachable: %s", why)

    def _etcd_ok(self) -> None:
        if self.state.update(etcd_up=True, etcd_error="", degraded=False):
            log.info("etcd reachable")

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()


__all__ = ["Sidecar"]
