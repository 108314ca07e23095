"""Keys and bytes per slot, measured on the shards' primaries (a read-only probe).

``SLOTKEEPER SLOTSIZES`` on each primary's admin port answers ``[slot, keys,
bytes, …]`` for the slots holding keys there; only the slots the primary's shard
owns in the view are kept (a source may still hold keys of a slot it gave away
until its background drop ends). Every primary is asked at once with a short
timeout; if one does not answer, the measurement is unknown (None) rather than
wrong.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import hiredis

from .view import ClusterView

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlotSizes:
    keys: dict[int, int]
    bytes: dict[int, int]


async def _ask(host: str, port: int, timeout: float) -> list[int]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(b"*2\r\n$10\r\nSLOTKEEPER\r\n$9\r\nSLOTSIZES\r\n")
        parser = hiredis.Reader()
        async with asyncio.timeout(timeout):
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed")
                parser.feed(data)
                reply = parser.gets()
                if reply is not False:
                    break
        if isinstance(reply, hiredis.ReplyError) or not isinstance(reply, list):
            raise ConnectionError(f"unexpected reply {reply!r}")
        return [int(x) for x in reply]
    finally:
        writer.close()


async def measure(view: ClusterView, timeout: float = 2.0) -> SlotSizes | None:
    """Per-slot keys and bytes of every shard, or None if a primary did not answer."""
    shards = [e.record for e in view.shards.values()]
    asks = []
    for s in shards:
        primary = view.nodes.get(s.primary)
        if primary is None:
            return None
        asks.append(_ask(primary.record.addr, primary.record.admin_port, timeout))
    try:
        replies = await asyncio.gather(*asks)
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        log.info("slot sizes not measured: %s", exc)
        return None
    keys: dict[int, int] = {}
    nbytes: dict[int, int] = {}
    for shard, flat in zip(shards, replies, strict=True):
        owned = {slot for lo, hi in shard.slots for slot in range(lo, hi + 1)}
        for i in range(0, len(flat) - 2, 3):
            slot = flat[i]
            if slot in owned:
                keys[slot] = flat[i + 1]
                nbytes[slot] = flat[i + 2]
    return SlotSizes(keys, nbytes)


__all__ = ["SlotSizes", "measure"]
