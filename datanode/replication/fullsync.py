"""Full sync: a forked child streams the keyspace straight into a replica's socket,
and the replica side that loads it.

Wire format, after the replica's ``PSYNC`` (everything written by the child)::

    +FULLRESYNC <replid> <offset>\\r\\n      (absent after the old SYNC command)
    SKSYNC1 <keys>\\r\\n                     keys that follow (for progress)
    <entry stream>                          datanode.codec records, then 0xFF
    <crc32>                                 u32 LE over the entry stream (0xFF included)

then the replication stream from ``<offset>`` on, written by the parent once the
child has exited. The child writes the keyspace as it was at fork time, which is
exactly the state after stream offset ``<offset>``: the parent decides the offset
and forks in one step, with no command in between.

The parent's work is the fork and reaping the child (O(1) in the dataset); the
child waits for the socket with ``poll`` (it stays non-blocking: the flag is shared
with the parent's event loop) and gives up after the replication timeout.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import struct
import time
import zlib
from typing import Any

from ..codec import CodecError, EntryDecoder, encode_dicts
from ..keyspace import Keyspace
from ..snapshot import _child_setup, _live_count

CHUNK = 1 << 20
HEADER = b"SKSYNC1"
_CRC = struct.Struct("<I")


class SyncError(Exception):
    """A full sync stream is malformed (the link is dropped and retried)."""


# =========================================================================== primary side


class _SocketWriter:
    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout
        self.total = 0
        self.poller = select.poll()
        self.poller.register(fd, select.POLLOUT)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                if not self.poller.poll(self.timeout * 1000):
                    raise TimeoutError(
                        f"replica read nothing for {self.timeout:.0f}s during a full sync"
                    ) from None
                continue
            view = view[n:]
            self.total += n


def write_fullsync(fd: int, ks: Any, now: int, head: bytes, timeout: float) -> tuple[int, int]:
    """Write ``head``, then the keyspace (live at ``now``) in the format above, to ``fd``.

    Returns ``(keys, bytes written)``."""
    count = _live_count(ks, now)
    out = _SocketWriter(fd, timeout)
    out.write(head + b"%s %d\r\n" % (HEADER, count))
    crc = 0
    tally = [0]
    for chunk in encode_dicts([ks.data], ks.expires, now, CHUNK, tally=tally):
        crc = zlib.crc32(chunk, crc)
        out.write(chunk)
    if tally[0] != count:
        raise SyncError(f"wrote {tally[0]} keys but counted {count}: keyspace changed")
    out.write(_CRC.pack(crc))
    return count, out.total


def fork_fullsync(ks: Any, fd: int, head: bytes, timeout: float) -> tuple[int, int]:
    """Fork a child that writes a full sync to socket ``fd``; ``(pid, status pipe)``.

    The child writes ``ok <keys> <bytes>`` or ``err <reason>`` to the pipe and exits.
    Raises OSError if the fork fails."""
    now = ks.clock()
    rfd, wfd = os.pipe()
    parent = os.getpid()
    gc.freeze()  # the parent's collector then leaves the shared pages alone
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        os.close(rfd)
        os.close(wfd)
        raise
    if pid == 0:  # ---- child: never returns
        gc.disable()
        code = 1
        try:
            os.close(rfd)
            _child_setup(parent, (fd, wfd))
            keys, size = write_fullsync(fd, ks, now, head, timeout)
            os.write(wfd, b"ok %d %d" % (keys, size))
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            with contextlib.suppress(BaseException):
                os.write(wfd, b"err " + str(exc).encode("utf-8", "replace")[:2000])
        finally:
            os._exit(code)
    os.close(wfd)
    os.set_blocking(rfd, False)
    return pid, rfd


# =========================================================================== replica side


class SyncLoader:
    """Loads a full sync stream into a fresh keyspace, chunk by chunk.

    ``feed`` returns None until the stream (entries, end marker, checksum) is
    complete, then the bytes that followed it: the start of the replication stream.
    """

    def __init__(self, total: int, clock: Any, maxmemory: int, policy: str) -> None:
        self.ks = Keyspace(clock)
        self.ks.expire_deletes = False
        self.ks.set_policy(maxmemory, policy)
        self.total = total
        self.started = time.monotonic()
        self.nbytes = 0
        self._decoder = EntryDecoder()
        self._crc = 0
        self._trailer: bytearray | None = None

    @property
    def loaded(self) -> int:
        return self._decoder.count

    def progress(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.loaded / self.total)

    def eta(self) -> float:
        done = self.progress()
        if done <= 0.0:
            return -1.0
        return (time.monotonic() - self.started) * (1.0 - done) / done

    def feed(self, data: bytes) -> bytes | None:
        self.nbytes += len(data)
        if self._trailer is None:
            dec = self._decoder
            try:
                entries = dec.feed(data)
            except CodecError as exc:
                raise SyncError(f"bad full sync stream: {exc}") from None
            ks = self.ks
            kset = ks.set
            set_expire = ks.set_expire
            for key, value, at in entries:
                kset(key, value)
                if at is not None:
                    set_expire(key, at)  # kept even if already past: the primary deletes
            if not dec.done:
                self._crc = zlib.crc32(data, self._crc)
                return None
            rest = len(dec.rest)
            self._crc = zlib.crc32(memoryview(data)[: len(data) - rest], self._crc)
            self._trailer = bytearray(dec.rest)
        else:
            self._trailer += data
        if len(self._trailer) < _CRC.size:
            return None
        (stored,) = _CRC.unpack_from(self._trailer)
        if stored != self._crc:
            raise SyncError(
                f"full sync checksum mismatch (sent {stored:08x}, computed {self._crc:08x})"
            )
        if self.loaded != self.total:
            raise SyncError(f"full sync announced {self.total} keys but held {self.loaded}")
        return bytes(self._trailer[_CRC.size :])


def adopt(live: Any, loaded: Any) -> None:
    """Make ``live`` hold what ``loaded`` holds, in O(1) (connections keep ``live``).

    WATCHers of ``live`` see their keys changed (as after FLUSHALL)."""
    live.adopt(loaded)
