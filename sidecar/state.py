"""The sidecar's current knowledge: one :class:`~sidecar.facts.Facts` value, swapped
whole on every change, and a way to wait for the next change.

Every task reads ``state.facts()`` (a frozen value, stamped with the injected
clock) and writes with ``state.update(field=value, …)``; publishers (status,
Consul) wait with ``await state.changed(version)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from .facts import Facts


class State:
    def __init__(self, clock: Callable[[], float], initial: Facts | None = None) -> None:
        self._clock = clock
        self._facts = initial or Facts()
        self._version = 0
        self._event = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    def facts(self) -> Facts:
        return dataclasses.replace(self._facts, now=self._clock())

    def peek(self) -> Facts:
        """The facts without a fresh timestamp (cheap; for reading one field)."""
        return self._facts

    def update(self, **changes: Any) -> bool:
        """Apply ``changes``; True (and waiters woken) if anything changed."""
        current = self._facts
        if all(getattr(current, k) == v for k, v in changes.items()):
            return False
        self._facts = dataclasses.replace(current, **changes)
        self._version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()
        return True

    async def changed(self, since: int, timeout: float | None = None) -> bool:
        """Wait until the version moves past ``since`` (True) or ``timeout`` (False)."""
        if self._version != since:
            return True
        event = self._event
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True
