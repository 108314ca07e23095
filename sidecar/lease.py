"""The sidecar's etcd lease (DESIGN §3): one per sidecar, kept alive every
``keepalive_interval``, each keepalive retried within ``retry_timeout``.

After each acknowledged keepalive ``on_ack(send_time, ttl)`` is called with the
send time of the attempt that was acknowledged (noted just before sending it)
and the TTL it restarted: the write permit is computed from exactly these
(:mod:`sidecar.permit`). When etcd reports the lease gone (it expired while etcd
was unreachable, or was revoked), ``on_lost`` is called, a new lease is granted
and ``on_new_lease`` re-attaches what hung on the old one (status, slot lease).
``on_trouble`` / ``on_ok`` report reachability for ``/health``.

The timing rule (keepalive interval + 2 × retry timeout ≤ TTL) is checked when the
timing is built: a keepalive that fails and is retried twice still lands before
the lease can expire.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clusterstate.records import Settings
from dcs.errors import LeaseLost, StoreError, StoreUnavailable
from dcs.port import Lease, Store
from dcs.retry import RetryPolicy, Sleep, check_lease_timing, retry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    ttl: float
    keepalive_interval: float
    retry_timeout: float

    def __post_init__(self) -> None:
        check_lease_timing(self.ttl, self.keepalive_interval, self.retry_timeout)

    @classmethod
    def of(cls, settings: Settings) -> LeaseTiming:
        return cls(settings.lease_ttl, settings.keepalive_interval, settings.retry_timeout)

    @property
    def grant_ttl(self) -> int:
        """etcd grants whole seconds (at least its minimum, usually 2)."""
        return max(1, math.ceil(self.ttl))

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=5,
            timeout=self.retry_timeout,
            initial_delay=min(0.05, self.retry_timeout / 4),
            max_delay=max(self.retry_timeout / 2, min(0.05, self.retry_timeout / 4)),
        )


class LeaseKeeper:
    def __init__(
        self,
        store: Store,
        timing: LeaseTiming,
        *,
        on_ack: Callable[[float, int], None],
        on_lost: Callable[[], None],
        on_new_lease: Callable[[Lease], Awaitable[None]],
        on_trouble: Callable[[str], None],
        on_ok: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.timing = timing
        self.on_ack = on_ack
        self.on_lost = on_lost
        self.on_new_lease = on_new_lease
        self.on_trouble = on_trouble
        self.on_ok = on_ok
        self.clock = clock
        self.sleep = sleep
        self.lease: Lease | None = None
        self.last_send: float | None = None  # send time of the last acknowledged keepalive
        self.last_ttl: int = 0

    async def grant(self, deadline: float | None = None) -> Lease:
        """A new lease; retried until ``deadline`` (None: for as long as it takes)."""
        failures = 0
        while True:
            sent = self.clock()
            try:
                lease = await retry(
                    lambda: self.store.grant(self.timing.grant_ttl),
                    policy=self.timing.policy, what="lease grant", clock=self.clock,
                    sleep=self.sleep,
                )
            except StoreUnavailable as exc:
                failures += 1
                self.on_trouble(str(exc))
                if deadline is not None and self.clock() >= deadline:
                    raise
                await self.sleep(self.timing.policy.backoff(failures))
                continue
            self.lease = lease
            self.last_send, self.last_ttl = sent, lease.ttl
            self.on_ok()
            log.info("lease %x granted (TTL %ds)", lease.id, lease.ttl)
            return lease

    async def run(self) -> None:
        """Keep the lease alive forever (cancel to stop)."""
        if self.lease is None:
            await self.on_new_lease(await self.grant())
        failures = 0
        while True:
            lease = self.lease
            assert lease is not None
            sent = [self.clock()]

            async def attempt(lease: Lease = lease, sent: list[float] = sent) -> int:
                sent[0] = self.clock()
                return await self.store.keepalive_once(lease)

            try:
                ttl = await retry(
                    attempt, policy=self.timing.policy,
                    deadline=self.clock() + self.timing.retry_timeout,
                    what="lease keepalive", clock=self.clock, sleep=self.sleep,
                )
            except LeaseLost:
                log.warning("lease %x is gone (expired or revoked): everything bound to it is "
                            "deleted; granting a new one", lease.id)
                self.lease, self.last_send = None, None
                self.on_lost()
                await self.on_new_lease(await self.grant())
                failures = 0
                continue
            except StoreUnavailable as exc:
                failures += 1
                self.on_trouble(str(exc))
                await self.sleep(min(self.timing.policy.backoff(failures),
                                     self.timing.keepalive_interval))
                continue
            failures = 0
            self.last_send, self.last_ttl = sent[0], ttl
            self.on_ok()
            self.on_ack(sent[0], ttl)
            await self.sleep(max(0.0, sent[0] + self.timing.keepalive_interval - self.clock()))

    async def revoke(self, timeout: float = 1.0) -> bool:
        """Revoke the lease now (its keys vanish at once); False if that failed."""
        lease, self.lease, self.last_send = self.lease, None, None
        if lease is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await self.store.revoke(lease)
        except (TimeoutError, StoreError) as exc:
            log.warning("lease %x not revoked (%s): it expires by itself within its TTL",
                        lease.id, exc)
            return False
        log.info("lease %x revoked", lease.id)
        return True
