"""The Consul registration of this data node (DESIGN §6).

Service ``slotkeeper-datanode``, id = node_id, address and port of the data
node's client port, tags ``role:<role>``, ``<role>`` (for DNS such as
``primary.slotkeeper-datanode.service.consul``), ``shard:<id>``, ``state:<STATE>``,
``zone:<zone>`` (and ``hidden`` for a hidden node), meta node_id, epoch,
replica_id, zone; an HTTP check on the sidecar's ``/health``.

Registered once the node id is known, updated whenever the role, shard, state,
epoch (at most once a second when nothing else changed), replica_id, zone or
hidden flag changes (Consul keeps the check's status
across updates; the zone and the flag are the served record's, so an operator's
change reaches Consul live), re-registered if the agent lost it (checked every
``verify_every`` seconds), and deregistered on a clean shutdown. Consul being
unreachable never blocks anything else: the registration is retried with backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from types import MappingProxyType

from dcs.consul import (
    DATANODE_SERVICE,
    ConsulCatalog,
    HttpCheck,
    Registration,
    datanode_registration,
)
from dcs.errors import StoreError

from .facts import ConsulFacts, consul_facts
from .state import State

log = logging.getLogger(__name__)

EPOCH_EVERY = 1.0  # seconds between updates that change nothing but the epoch in meta


def _epoch_only(old: Registration | None, new: Registration) -> bool:
    """``new`` differs from ``old`` in the meta epoch alone."""
    if old is None or old.id != new.id or old.tags != new.tags:
        return False
    strip = lambda m: {k: v for k, v in m.items() if k != "epoch"}  # noqa: E731
    return dataclasses.replace(old, meta=MappingProxyType(strip(old.meta))) == \
        dataclasses.replace(new, meta=MappingProxyType(strip(new.meta)))


def registration(
    node_id: str, address: str, port: int, cf: ConsulFacts, check: HttpCheck | None
) -> Registration:
    reg = datanode_registration(
        node_id, address, port, role=cf.role, shard=cf.shard, state=cf.state,
        epoch=cf.epoch, replica_id=cf.replica_id, check=check,
    )
    tags = list(reg.tags)
    if cf.zone:
        tags.append(f"zone:{cf.zone}")
    if cf.hidden:
        tags.append("hidden")
    meta = {**reg.meta, "zone": cf.zone, "hidden": str(cf.hidden).lower()}
    return dataclasses.replace(reg, tags=tuple(tags), meta=MappingProxyType(meta))


class Registrar:
    def __init__(
        self,
        catalog: ConsulCatalog,
        state: State,
        *,
        health_url: str,
        deregister_after: float,
        verify_every: float = 30.0,
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.check = HttpCheck(health_url, interval=1.0, timeout=1.0,
                               deregister_after=deregister_after)
        self.verify_every = verify_every
        self.registered: Registration | None = None
        self.node_id = ""

    def wanted(self) -> Registration | None:
        f = self.state.facts()
        if not f.node_id or not f.port:
            return None
        return registration(f.node_id, f.addr, f.port, consul_facts(f), self.check)

    async def run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        last_verify = loop.time()
        last_update = -1e9
        while True:
            version = self.state.version
            want = self.wanted()
            wait = self.verify_every
            try:
                if want is not None and want != self.registered and _epoch_only(
                        self.registered, want) and loop.time() - last_update < EPOCH_EVERY:
                    # only the epoch in meta changed: at most one update per EPOCH_EVERY
                    # (a migration bumps the epoch several times a second; tags and every
                    # other field still reach Consul at once)
                    wait = EPOCH_EVERY - (loop.time() - last_update)
                elif want is not None and want != self.registered:
                    last_update = loop.time()
                    if self.registered is None or self.registered.id != want.id:
                        await self.catalog.register(want)
                    else:
                        await self.catalog.update(want.id, tags=want.tags, meta=want.meta)
                    self.registered, self.node_id = want, want.id
                elif self.registered is not None and loop.time() - last_verify >= self.verify_every:
                    last_verify = loop.time()
                    ids = [i.id for i in await self.catalog.instances(DATANODE_SERVICE)]
                    if self.registered.id not in ids:
                        log.warning("consul lost the registration of %s: registering again",
                                    self.registered.id)
                        self.registered = None
                        continue
                failures = 0
            except StoreError as exc:
                failures += 1
                delay = min(0.2 * 2 ** min(failures, 5), 5.0)
                log.warning("consul registration failed (%s): retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            await self.state.changed(version, timeout=max(0.01, wait))

    async def deregister(self) -> None:
        if not self.node_id:
            return
        try:
            await self.catalog.deregister(self.node_id)
        except StoreError as exc:
            log.warning("consul deregistration failed: %s", exc)
