"""Leader election on ``coordinator/leader`` (DESIGN §3, Patroni's leader lock).

Each coordinator instance campaigns by creating the key, bound to a fresh
lease of ``ttl`` seconds, if it is absent. The holder refreshes the lease
every ``ttl / 3``; it counts as leader only until *(send time of the last
acknowledged refresh) + ttl × 0.8* — the sidecar's write-permit rule — so it
stops acting before etcd can expire the lease and let a standby in, even when
etcd stops answering. Standbys poll the key every ``ttl / 4`` and campaign when
it is gone: a standby takes over at most about ``ttl × 1.3`` after the
leader's last refresh, well within 2 × TTL. On shutdown the leader revokes
its lease, so a standby takes over within one poll.

Every write of the leader also carries :meth:`Elector.fence`: a compare on the
key's value, which holds a nonce per campaign, so a coordinator whose lease
expired cannot write even if its clock check were wrong.

Timing rule, checked at start: refresh interval + 2 × request timeout ≤ TTL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from clusterstate.keys import Keys
from dcs.errors import LeaseLost, StoreError, StoreUnavailable
from dcs.port import Compare, Lease, Store
from dcs.retry import check_lease_timing

from .view import LeaderInfo

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: A leader acts until this share of the TTL after its last acknowledged refresh was sent.
VALIDITY = 0.8


class Elector:
    """Campaigns for, holds and gives up ``coordinator/leader``. Run :meth:`run`
    as a task; ask :meth:`is_leader` before every action."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        *,
        instance_id: str,
        api_url: str = "",
        ttl: int = 5,
        request_timeout: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl < 2:
            raise ValueError("the leader lease TTL must be >= 2 s (etcd's minimum)")
        check_lease_timing(ttl, ttl / 3, request_timeout)
        self.store = store
        self.keys = keys
        self.instance_id = instance_id
        self.api_url = api_url
        self.ttl = ttl
        self.request_timeout = request_timeout
        self.clock = clock
        self.sleep = sleep
        self.on_change = on_change
        self.known_leader: LeaderInfo | None = None  # the last value seen on the key
        self._lease: Lease | None = None
        self._value: bytes = b""
        self._valid_until = 0.0
        self._was_leader = False
        self._stopped = False

    # ----------------------------------------------------------------- queries

    def is_leader(self) -> bool:
        return self._lease is not None and self.clock() < self._valid_until

    def fence(self) -> Compare | None:
        """The compare every leader write carries."""
        if self._lease is None:
            return None
        return Compare.value(self.keys.coordinator_leader, self._value)

    @property
    def valid_until(self) -> float:
        return self._valid_until

    def leader(self) -> LeaderInfo | None:
        """Who leads, as far as this instance knows."""
        if self.is_leader():
            return LeaderInfo(self.instance_id, self.api_url)
        return self.known_leader

    async def refresh_known_leader(self) -> LeaderInfo | None:
        try:
            kv = await asyncio.wait_for(
                self.store.get(self.keys.coordinator_leader), self.request_timeout * 2
            )
        except (StoreError, TimeoutError):
            return self.leader()
        self.known_leader = None if kv is None else LeaderInfo.from_json(kv.value)
        return self.leader()

    # ----------------------------------------------------------------- the task

    async def run(self) -> None:
        """Campaign and hold until cancelled (then resign)."""
        try:
            while not self._stopped:
                if self._lease is None:
                    await self._campaign()
                    if self._lease is None:
                        await self.sleep(self.ttl / 4)
                        continue
                await self._hold()
        finally:
            self._notify()

    async def resign(self) -> None:
        """Give leadership up now (revoke the lease: the key goes at once)."""
        self._stopped = True
        lease, self._lease = self._lease, None
        self._valid_until = 0.0
        self._notify()
        if lease is not None:
            try:
                await asyncio.wait_for(self.store.revoke(lease), self.request_timeout * 2)
                log.info("resigned leadership of %s", self.keys.cluster)
            except (StoreError, TimeoutError) as exc:
                log.warning("could not revoke the leader lease: %s (it expires by itself)", exc)

    async def _campaign(self) -> None:
        try:
            kv = await self._timed(self.store.get(self.keys.coordinator_leader))
            if kv is not None:
                self.known_leader = LeaderInfo.from_json(kv.value)
                return
            sent = self.clock()
            lease = await self._timed(self.store.grant(self.ttl))
            info = LeaderInfo(self.instance_id, self.api_url, secrets.token_hex(8))
            value = info.to_json()
            won = await self._timed(
                self.store.create(self.keys.coordinator_leader, value, lease)
            )
            if not won:
                await self._revoke_quietly(lease)
                return
        except (StoreError, TimeoutError) as exc:
            log.debug("campaign for %s failed: %s", self.keys.coordinator_leader, exc)
            return
        self._lease, self._value = lease, value
        self._valid_until = sent + min(lease.ttl, self.ttl) * VALIDITY
        self.known_leader = info
        log.info("became the leader of %s (lease %x, ttl %ss)", self.keys.cluster, lease.id, lease.ttl)
        self._notify()

    async def _hold(self) -> None:
        """Refresh every ttl/3 until the lease is lost or validity lapses for good."""
        assert self._lease is not None
        interval = self.ttl / 3
        next_at = self.clock()
        while self._lease is not None and not self._stopped:
            delay = next_at - self.clock()
            if delay > 0:
                await self.sleep(delay)
            if self._lease is None or self._stopped:
                return
            sent = self.clock()
            try:
                granted = await self._timed(self.store.keepalive_once(self._lease))
            except LeaseLost:
                self._drop("the leader lease was lost (expired or revoked)")
                return
            except (StoreUnavailable, TimeoutError) as exc:
                if self.clock() >= self._valid_until:
                    if self._was_leader:
                        log.warning("leadership lapsed: etcd unreachable (%s)", exc)
                    self._notify()
                next_at = self.clock() + min(interval, 0.2)
                continue
            except StoreError as exc:
                self._drop(f"refreshing the leader lease failed: {exc}")
                return
            if self.clock() >= self._valid_until:
                # refreshed after validity lapsed: check the key is still ours
                try:
                    kv = await self._timed(self.store.get(self.keys.coordinator_leader))
                except (StoreError, TimeoutError):
                    next_at = self.clock() + min(interval, 0.2)
                    continue
                if kv is None or kv.value != self._value:
                    self._drop("the leader key is no longer ours")
                    return
            self._valid_until = sent + min(granted, self.ttl) * VALIDITY
            self._notify()
            next_at = sent + interval

    def _drop(self, why: str) -> None:
        log.warning("no longer the leader of %s: %s", self.keys.cluster, why)
        self._lease = None
        self._valid_until = 0.0
        self._notify()

    def _notify(self) -> None:
        now_leader = self.is_leader()
        if now_leader != self._was_leader:
            self._was_leader = now_leader
            if self.on_change is not None:
                self.on_change(now_leader)

    async def _revoke_quietly(self, lease: Lease) -> None:
        try:
            await self._timed(self.store.revoke(lease))
        except (StoreError, TimeoutError):
            pass

    async def _timed(self, aw: Awaitable[T]) -> T:
        return await asyncio.wait_for(aw, self.request_timeout * 2)


__all__ = ["VALIDITY", "Elector"]
