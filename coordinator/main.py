"""``slotkeeper coordinator``: one coordinator instance as a process.

:class:`Service` wires the parts: the etcd store, the elector campaigning on
``coordinator/leader``, the loop, the admin API and the Consul registration of
``slotkeeper-coordinator`` (with an HTTP check on ``/health``). :func:`run` is
the process entry point (``coordinator.main.run(argv) -> exit code``): it stops
cleanly on SIGTERM or SIGINT, resigning leadership so a standby takes over at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from clusterstate.keys import Keys
from dcs.consul import ConsulCatalog, HttpCheck, coordinator_registration
from dcs.errors import StoreError
from dcs.etcd import EtcdStore

from .api import Api
from .config import Config, ConfigError, load_config
from .leader import Elector
from .loop import Coordinator

log = logging.getLogger(__name__)


class Service:
    """A running coordinator instance (also used in-process by tests)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = Keys(config.cluster)
        self.store = EtcdStore(
            config.etcd,
            timeout=config.etcd_timeout,
            ca_cert=config.etcd_cacert or None,
            cert_cert=config.etcd_cert or None,
            cert_key=config.etcd_key or None,
        )
        self.consul = ConsulCatalog(config.consul) if config.consul else None
        self.elector = Elector(
            self.store,
            self.keys,
            instance_id=config.instance_id,
            api_url=config.api_url,
            ttl=config.leader_ttl,
            request_timeout=config.etcd_timeout,
            on_change=self._leadership_changed,
        )
        self.coordinator = Coordinator(
            self.store,
            self.keys,
            self.elector,
            consul=self.consul,
            policy=config.policy(),
            history_limit=config.history_limit,
            loop_wait=config.loop_wait,
        )
        self.api = Api(self.coordinator, token=config.token, wait_timeout=config.wait_timeout)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _leadership_changed(self, leading: bool) -> None:
        log.info("%s is now %s", self.config.instance_id, "the leader" if leading else "a standby")
        self.coordinator.wake()

    async def start(self) -> None:
        self._runner = web.AppRunner(self.api.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        await site.start()
        log.info(
            "coordinator %s of cluster %s: API on %s, etcd %s",
            self.config.instance_id,
            self.config.cluster,
            self.config.api_url,
            self.config.etcd,
        )
        self._tasks = [
            asyncio.create_task(self.elector.run(), name="elector"),
            asyncio.create_task(self.coordinator.run(), name="loop"),
        ]
        if self.consul is not None:
            self._tasks.append(asyncio.create_task(self._register(), name="consul"))

    async def _register(self) -> None:
        """Register with Consul, retrying until it answers (best effort)."""
        assert self.consul is not None
        registration = coordinator_registration(
            self.config.instance_id,
            self.config.advertise_addr,
            self.config.http_port,
            check=HttpCheck(f"{self.config.api_url}/health", interval=2.0, timeout=1.0),
        )
        delay = 0.5
        while True:
            try:
                await self.consul.register(registration)
                return
            except StoreError as exc:
                log.warning("consul registration failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self, *, resign: bool = True) -> None:
        """Stop acting, resign (revoke the leader lease) unless told not to,
        deregister from Consul, close everything."""
        pending = set(self._tasks)
        for _ in range(3):  # a cancel can be swallowed by a racing asyncio.timeout (3.11)
            for task in pending:
                task.cancel()
            if not pending:
                break
            _, pending = await asyncio.wait(pending, timeout=5)
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it stopped anyway
        if pending:
            log.warning("%d task(s) did not stop within 15 s", len(pending))
        self._tasks = []
        if resign:
            await self.elector.resign()
        if self.consul is not None:
            with contextlib.suppress(StoreError):
                await self.consul.deregister(self.config.instance_id)
            await self.consul.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()


async def serve(config: Config) -> None:
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
        log.info("stopping: resigning leadership")
    finally:
        await service.stop()


def run(argv: Sequence[str]) -> int:
    """The process: ``slotkeeper coordinator [flags]``; returns the exit code."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"slotkeeper coordinator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"slotkeeper coordinator: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["Service", "run", "serve"]
