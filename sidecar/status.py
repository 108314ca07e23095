"""Publishing ``status/<node_id>`` (bound to the sidecar's lease).

The record is rebuilt from the facts on every change (:func:`sidecar.facts.status_record`)
and written when it differs from the last one written. A change of the replication
offset alone is written at most once per ``offset_interval`` (offsets move with
every write; the coordinator only needs a recent one to pick a failover candidate).
Writing the first record of a lease is how the node registers (DESIGN §4 rules 3, 4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from clusterstate.keys import Keys
from clusterstate.records import Status
from dcs.errors import LeaseLost, StoreError
from dcs.port import Store

from .facts import same_but_offset, status_record
from .state import State

log = logging.getLogger(__name__)


class StatusPublisher:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        node_id: str,
        state: State,
        *,
        offset_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.key = keys.status(node_id)
        self.state = state
        self.offset_interval = offset_interval
        self.clock = clock
        self.written: Status | None = None
        self.written_at = -1e9
        self.written_lease = 0
        self.kick = asyncio.Event()

    def reset(self) -> None:
        """A new lease: the next record is written whatever it holds."""
        self.written = None
        self.kick.set()

    async def publish_now(self) -> bool:
        """Write the current record if it changed; False if it could not be written."""
        facts = self.state.facts()
        if not facts.lease_id:
            return False
        record = status_record(facts)
        if record == self.written and facts.lease_id == self.written_lease:
            return True
        try:
            await self.store.put(self.key, record.to_json(), facts.lease_id)
        except LeaseLost:
            return False  # the lease keeper grants a new one and resets us
        except StoreError as exc:
            log.debug("status not written (%s): retrying", exc)
            return False
        first = self.written is None
        self.written, self.written_at, self.written_lease = record, self.clock(), facts.lease_id
        if first:
            log.info("status published on lease %x: %s, role %s, epoch %d%s", facts.lease_id,
                     record.health, record.role_applied, record.epoch_applied,
                     f", conflict: {record.conflict}" if record.conflict else "")
        return True

    async def run(self) -> None:
        failures = 0
        while True:
            version = self.state.version
            facts = self.state.facts()
            record = status_record(facts) if facts.lease_id else None
            due = 0.0
            if (record is not None and self.written is not None
                    and facts.lease_id == self.written_lease
                    and record != self.written and same_but_offset(record, self.written)):
                due = self.written_at + self.offset_interval - self.clock()
            if record is not None and due <= 0 and not await self.publish_now():
                failures += 1
                await asyncio.sleep(min(0.05 * 2 ** min(failures, 5), 1.0))
                continue
            failures = 0
            self.kick.clear()
            waiter = asyncio.ensure_future(self.state.changed(version))
            kicker = asyncio.ensure_future(self.kick.wait())
            try:
                await asyncio.wait(
                    {waiter, kicker}, timeout=due if due > 0 else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
                kicker.cancel()
