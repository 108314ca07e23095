"""Watching the data node: is it alive, and what does its replication say.

One connection of its own (so a long command on the applier's connection never
delays the verdict). A closed or reset connection means the process is gone:
:meth:`DatanodeMonitor.run` returns at once with the reason, and the supervisor
revokes the etcd lease (fast failover, DESIGN §3). A process that keeps its
socket but stops answering (SIGSTOP, a stuck loop) is declared dead when a PING
gets no reply within ``timeout``.

Every ``poll_every`` seconds it also reads ``SLOTKEEPER REPLICATION`` and hands
the result to ``on_replication`` (role, offsets, link, load progress).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .admin import AdminConnection, AdminError, Datanode, DatanodeUnavailable
from .facts import Replication

log = logging.getLogger(__name__)


class DatanodeMonitor:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_replication: Callable[[Replication], None],
        on_reply: Callable[[], None] = lambda: None,
        interval: float = 0.1,
        timeout: float = 1.0,
        poll_every: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = AdminConnection(host, port, timeout=timeout)
        self.on_replication = on_replication
        self.on_reply = on_reply
        self.interval = interval
        self.timeout = timeout
        self.poll_every = poll_every
        self.clock = clock

    async def run(self) -> str:
        """Watch until the data node dies; returns why it is considered dead."""
        try:
            await self.conn.connect()
        except DatanodeUnavailable as exc:
            return str(exc)
        node = Datanode(self.conn)
        lost = self.conn.lost
        last_poll = -1e9
        try:
            while True:
                try:
                    async with asyncio.timeout(self.interval):
                        return "data node connection closed: " + await asyncio.shield(lost)
                except TimeoutError:
                    pass
                try:
                    if self.clock() - last_poll >= self.poll_every:
                        last_poll = self.clock()
                        repl = await node.replication()
                        self.on_reply()
                        self.on_replication(repl)
                    else:
                        await self.conn.call("PING")
                        self.on_reply()
                except AdminError as exc:
                    log.warning("data node refused a monitoring command: %s", exc)
                except DatanodeUnavailable as exc:
                    return str(exc)
        finally:
            self.conn.close()
