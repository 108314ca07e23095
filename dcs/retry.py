"""The one retry policy for store requests (tooz ``_retry``, Patroni ``Retry``).

Adapters make exactly one attempt per call, each bounded by their own request
timeout; whoever wants retries wraps the call in :func:`retry`::

    snapshot = await retry(lambda: store.load(keys.root), policy=policy, deadline=deadline)

Only :class:`~dcs.errors.StoreUnavailable` is retried. Attempts are bounded in
number and by an overall deadline (absolute, on the monotonic clock; by default
``now + policy.timeout``, Patroni's *retry_timeout*); no attempt runs past the
deadline, and when the policy gives up the last ``StoreUnavailable`` is raised.
Delays grow exponentially with jitter; :meth:`RetryPolicy.backoff` is also what
reconnect loops (the etcd watch) sleep between attempts.

A compare-and-set retried after a timeout may have been applied by the attempt
that timed out, so the retry then reports ``False``: callers that CAS reload
their snapshot either way.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import tenacity
from tenacity.stop import stop_base

from .errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry an unavailable store.

    ``attempts`` bounds the number of tries, ``timeout`` the total time (when the
    caller gives no deadline); the delay after the n-th consecutive failure is
    drawn from ``[cap/2, cap]`` with ``cap = min(max_delay, initial_delay * 2**(n-1))``.
    """

    attempts: int = 5
    timeout: float = 5.0
    initial_delay: float = 0.05
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.timeout <= 0:
            raise ValueError(f"retry timeout must be > 0, got {self.timeout}")
        if not 0 < self.initial_delay <= self.max_delay:
            raise ValueError(
                f"need 0 < initial_delay <= max_delay, got {self.initial_delay}, {self.max_delay}"
            )

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) consecutive failures."""
        cap = min(self.max_delay, self.initial_delay * 2 ** min(max(failures, 1) - 1, 62))
        return random.uniform(cap / 2, cap)


DEFAULT_POLICY = RetryPolicy()


class _StopAtDeadline(stop_base):
    """Stop when sleeping before the next attempt would reach the deadline."""

    def __init__(self, deadline: float, clock: Clock) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    deadline: float | None = None,
    what: str = "store request",
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run ``op`` until it succeeds, retrying :class:`StoreUnavailable` only.

    ``deadline`` is absolute (``clock()`` seconds); each attempt is cut off when
    it is reached. Any other exception propagates at once. When attempts or time
    run out, the last ``StoreUnavailable`` is raised.
    """
    end = clock() + policy.timeout if deadline is None else deadline

    async def attempt() -> T:
        remaining = end - clock()
        if remaining <= 0:
            raise StoreUnavailable(f"{what}: retry deadline reached")
        try:
            async with asyncio.timeout(remaining):
                return await op()
        except TimeoutError as exc:
            raise StoreUnavailable(f"{what}: no answer before the retry deadline") from exc

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "%s failed (attempt %d/%d): %s; retrying in %.2fs",
            what,
            state.attempt_number,
            policy.attempts,
            exc,
            state.upcoming_sleep,
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | _StopAtDeadline(end, clock),
        wait=lambda state: policy.backoff(state.attempt_number),
        retry=tenacity.retry_if_exception_type(StoreUnavailable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return cast(T, await retrying(attempt))


def check_lease_timing(ttl: float, keepalive_interval: float, retry_timeout: float) -> None:
    """DESIGN §3 timing rule, checked at start: a keepalive that fails and is
    retried twice must still land before the lease expires."""
    if keepalive_interval + 2 * retry_timeout > ttl:
        raise ValueError(
            f"keepalive interval {keepalive_interval}s + 2 x retry timeout {retry_timeout}s "
            f"exceeds the lease TTL {ttl}s"
        )


__all__ = ["DEFAULT_POLICY", "RetryPolicy", "check_lease_timing", "retry"]
