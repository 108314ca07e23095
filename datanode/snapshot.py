"""Snapshots: the whole keyspace in one checksummed file, written in place or by a
forked child, loaded at start.

File layout (all integers little-endian)::

    offset 0   magic        b"SLOTKEEPER-SNAP" (15 bytes)
           15  version      u16 (FORMAT_VERSION)
           17  created      u64 unix ms when the snapshot was taken
           25  key count    u64 entries that follow
           33  meta length  u32
           37  meta         JSON object (UTF-8): facts the node stores with the data,
                            e.g. replication id and offset; ``{}`` when none
               entries      datanode.codec entry stream (key, value, TTL as absolute ms)
               end marker   0xFF
               checksum     u32 zlib.crc32 of every byte before it (header included)

A file is only ever written as ``<path>.tmp-<pid>`` (pid of the writing process),
fsynced, renamed over ``<path>`` and the directory fsynced, so ``<path>`` is
always a complete snapshot: the previous one or the new one. Loading a file
that is truncated, corrupt, or of another format version raises
:class:`SnapshotError` naming the file and what is wrong; the node refuses to
start rather than start empty.

BGSAVE forks: the child writes the keyspace as it was at fork time (copy-on-write)
and leaves with ``os._exit``; the parent only forks (O(1) in the dataset, apart
from the kernel copying page tables) and reaps the child from ``poll()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import logging
import os
import re
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codec import CodecError, EntryDecoder, StreamTruncated, encode_dicts

log = logging.getLogger(__name__)

MAGIC = b"SLOTKEEPER-SNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<15sHQQI")
HEADER_SIZE = _HEADER.size  # 37
_CRC = struct.Struct("<I")
CHUNK = 1 << 20


class SnapshotError(Exception):
    """A snapshot cannot be read or written (the message names the file)."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What loading a snapshot found."""

    path: Path
    created_ms: int  # when the snapshot was taken (unix ms)
    keys: int  # entries in the file
    loaded: int  # entries loaded (the others had expired)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _tmp_path(path: Path, pid: int) -> Path:
    return path.with_name(f"{path.name}.tmp-{pid}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _live_count(ks: Any, now: int) -> int:
    """Exact number of keys live at ``now`` (what :func:`encode_dicts` will write)."""
    data = ks.data
    total = len(data)
    for key, at in ks.expires.items():
        if at <= now and key in data:
            total -= 1
    return total


def write_snapshot(
    ks: Any, path: Path, tmp: Path, now: int, meta: dict[str, Any] | None = None
) -> tuple[int, int]:
    """Write the keys of ``ks`` live at ``now`` (and ``meta``) to ``path`` via ``tmp``.

    Returns ``(keys, bytes)``.
    The temp file is removed on any failure; ``path`` is untouched unless the new
    file is complete and synced.
    """
    # Nothing changes while this runs: a synchronous save, or a forked child that
    # owns its copy of the keyspace; so the slot dicts are iterated directly.
    count = _live_count(ks, now)
    meta_bytes = json.dumps(meta or {}, separators=(",", ":")).encode()
    tally = [0]
    try:
        with open(tmp, "wb") as f:
            header = _HEADER.pack(MAGIC, FORMAT_VERSION, now, count, len(meta_bytes)) + meta_bytes
            f.write(header)
            crc = zlib.crc32(header)
            size = len(header)
            for chunk in encode_dicts([ks.data], ks.expires, now, CHUNK, tally=tally):
                crc = zlib.crc32(chunk, crc)
                f.write(chunk)
                size += len(chunk)
            if tally[0] != count:
                raise SnapshotError(f"wrote {tally[0]} keys but counted {count}: keyspace changed")
            f.write(_CRC.pack(crc))
            size += _CRC.size
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return count, size


def read_snapshot(path: Path, ks: Any, now: int) -> SnapshotInfo:
    """Load ``path`` into ``ks``, skipping keys expired at ``now``.

    Raises :class:`SnapshotError` (naming the file) if it is truncated, corrupt or of
    another version; ``FileNotFoundError`` if it does not exist.
    """
    name = str(path)

    def fail(reason: str) -> SnapshotError:
        return SnapshotError(f"snapshot {name} is unusable: {reason}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            if not MAGIC.startswith(header[: len(MAGIC)]):
                raise fail("not a slotkeeper snapshot (bad magic)")
            raise fail(f"truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
        magic, version, created, count, meta_len = _HEADER.unpack(header)
        if magic != MAGIC:
            raise fail("not a slotkeeper snapshot (bad magic)")
        if version != FORMAT_VERSION:
            raise fail(
                f"unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            )
        start = HEADER_SIZE + meta_len  # first entry
        if size < start + 1 + _CRC.size:
            raise fail(f"truncated: {size} bytes, no room for the end marker and checksum")
        meta_bytes = f.read(meta_len)
        body_end = size - _CRC.size  # the checksum covers [0, body_end)
        crc = zlib.crc32(meta_bytes, zlib.crc32(header))
        dec = EntryDecoder(offset=start, limit=body_end)
        remaining = body_end - start
        ks_set = ks.set
        set_expire = ks.set_expire
        loaded = 0
        try:
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    raise fail(
                        f"truncated: file shrank while reading at offset {body_end - remaining}"
                    )
                remaining -= len(chunk)
                crc = zlib.crc32(chunk, crc)
                for key, value, at in dec.feed(chunk):
                    if at is not None:
                        if at <= now:
                            continue
                        ks_set(key, value)
                        set_expire(key, at)
                    else:
                        ks_set(key, value)
                    loaded += 1
        except StreamTruncated as exc:
            raise fail(
                f"truncated (or a corrupt length) at offset {exc.offset}: {exc.reason}"
            ) from None
        except CodecError as exc:
            raise fail(f"corrupt data at offset {exc.offset}: {exc.reason}") from None
        if not dec.done:
            raise fail(
                f"truncated at offset {dec.offset}: no end marker "
                f"({dec.pending} bytes of an incomplete record)"
            )
        if dec.rest:
            raise fail(f"{len(dec.rest)} unexpected bytes after the end marker")
        stored = _CRC.unpack(f.read(_CRC.size))[0]
        if stored != crc:
            raise fail(
                f"checksum mismatch (stored {stored:08x}, computed {crc:08x}): the file is corrupt"
            )
        if dec.count != count:
            raise fail(f"header announces {count} keys but the file holds {dec.count}")
    try:
        meta = json.loads(meta_bytes) if meta_bytes else {}
    except ValueError as exc:
        raise fail(f"bad metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise fail("bad metadata: not a JSON object")
    return SnapshotInfo(path, created, count, loaded, meta)


# --------------------------------------------------------------------------- child setup

_PR_SET_PDEATHSIG = 1
try:
    _MAX_FD = max(int(os.sysconf("SC_OPEN_MAX")), 1024)
except (ValueError, OSError):  # pragma: no cover
    _MAX_FD = 1 << 16
try:  # resolved in the parent, so the child does not load anything
    _libc: Any = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    _prctl: Any = _libc.prctl if _libc is not None else None
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _prctl = None


def _child_setup(parent: int, keep: tuple[int, ...]) -> None:
    """First steps of a snapshot child: default signals, die with the parent, lower
    priority, and close inherited descriptors (client sockets, listeners, the loop's)."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)  # the parent's loop must never see the child's signals
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)
    if _prctl is not None:
        # A child outliving a killed node could rename an old snapshot over a newer one.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    # Under CPU or memory pressure the serving parent goes first: the child yields the
    # CPU and is the OOM killer's preferred victim.
    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("800")
    low = 3
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, _MAX_FD)


# --------------------------------------------------------------------------- snapshotter


class Snapshotter:
    """Snapshots of one data node: load at start, SAVE, BGSAVE, periodic and shutdown saves."""

    def __init__(self, node: Any, path: Path | str) -> None:
        self.node = node
        self.path = Path(path)
        self.last_save = int(time.time())  # unix s of the last successful save
        self.last_attempt = time.time()  # time of the last save attempt
        self.in_progress = False  # a BGSAVE child is running
        self.last_status = "ok"  # "ok" | "err" of the last save
        self.scheduled = False  # BGSAVE SCHEDULE: start one when the running child ends
        self.saves = 0  # successful saves since start
        self.last_keys = 0
        self.last_bytes = 0
        self.last_duration = -1.0  # seconds of the last BGSAVE (-1: none yet)
        self.last_fork_ms = 0.0  # parent's time in fork() for the last BGSAVE
        # Facts stored with the data (e.g. replication id and offset): set by the node,
        # called when a snapshot starts; ``meta`` holds what the loaded snapshot had.
        self.meta_source: Callable[[], dict[str, Any]] | None = None
        self.meta: dict[str, Any] = {}
        self.child_pid: int | None = None
        self._child_started = 0.0
        self._dirty_at_fork = 0
        self._pipe: int | None = None

    # ------------------------------------------------------------------ load
    def load(self) -> int | None:
        """Load the snapshot into the node's keyspace; None if there is none.

        Raises :class:`SnapshotError` for an unusable file.
        """
        self._remove_stale_temps()
        node = self.node
        ks = node.ks
        started = time.monotonic()
        try:
            info = read_snapshot(self.path, ks, ks.clock())
        except FileNotFoundError:
            log.info("no snapshot at %s: starting empty", self.path)
            return None
        except SnapshotError:
            ks.flush()
            raise
        except OSError as exc:
            ks.flush()
            raise SnapshotError(f"cannot read snapshot {self.path}: {exc}") from exc
        node.dirty = 0
        self.meta = info.meta
        log.info(
            "snapshot %s loaded: %d keys (%d expired skipped) in %.2fs",
            self.path,
            info.loaded,
            info.keys - info.loaded,
            time.monotonic() - started,
        )
        return info.loaded

    def _remove_stale_temps(self) -> None:
        pattern = re.compile(re.escape(self.path.name) + r"\.tmp-\d+$")
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for n in names:
            if pattern.match(n):
                log.warning("removing leftover snapshot temp file %s", self.path.parent / n)
                _unlink(self.path.parent / n)

    # ------------------------------------------------------------------ SAVE
    def save(self) -> None:
        """Write a snapshot now, in this process (SAVE, SHUTDOWN). Raises SnapshotError."""
        if self.child_pid is not None:
            self.abort_child()  # superseded by this save
        node = self.node
        self.last_attempt = time.time()
        started = time.monotonic()
        tmp = _tmp_path(self.path, os.getpid())
        try:
            meta = self.meta_source() if self.meta_source is not None else None
            keys, size = write_snapshot(node.ks, self.path, tmp, node.ks.clock(), meta)
        except Exception as exc:
            self.last_status = "err"
            log.error("snapshot to %s failed: %s", self.path, exc)
            raise SnapshotError(f"cannot write snapshot {self.path}: {exc}") from exc
        self._succeeded(keys, size)
        node.dirty = 0
        log.info(
            "snapshot saved to %s: %d keys, %d bytes in %.2fs",
            self.path,
            keys,
            size,
            time.monotonic() - started,
        )

    def _succeeded(self, keys: int, size: int) -> None:
        self.last_save = int(time.time())
        self.last_status = "ok"
        self.saves += 1
        self.last_keys = keys
        self.last_bytes = size

    # ------------------------------------------------------------------ BGSAVE
    def bgsave(self) -> bool:
        """Fork a child that writes the snapshot; False if one runs already or fork failed."""
        if self.child_pid is not None:
            return False
        node = self.node
        self.last_attempt = time.time()
        self.scheduled = False
        now = node.ks.clock()
        dirty = node.dirty
        meta = self.meta_source() if self.meta_source is not None else None
        rfd, wfd = os.pipe()
        parent = os.getpid()
        # Objects alive now go to the permanent generation: the parent's collector
        # will not walk (and so not copy) their pages while the child runs.
        gc.freeze()
        t0 = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:
            gc.unfreeze()
            os.close(rfd)
            os.close(wfd)
            self.last_status = "err"
            log.error("background snapshot not started: fork failed: %s", exc)
            return False
        if pid == 0:  # ---- child: never returns
            self._child_main(parent, rfd, wfd, now, meta)
        self.last_fork_ms = (time.perf_counter() - t0) * 1000.0
        os.close(wfd)
        os.set_blocking(rfd, False)
        self._pipe = rfd
        self.child_pid = pid
        self._child_started = time.monotonic()
        self._dirty_at_fork = dirty
        self.in_progress = True
        log.info(
            "background snapshot started by child %d (fork took %.1f ms)", pid, self.last_fork_ms
        )
        return True

    def _child_main(
        self, parent: int, rfd: int, wfd: int, now: int, meta: dict[str, Any] | None
    ) -> None:
        gc.disable()  # first thing: a collection would touch (and copy) every page
        code = 1
        try:
            os.close(rfd)
            _child_setup(parent, (wfd,))
            tmp = _tmp_path(self.path, os.getpid())
            keys, size = write_snapshot(self.node.ks, self.path, tmp, now, meta)
            os.write(wfd, b"ok %d %d" % (keys, size))
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            with contextlib.suppress(BaseException):
                os.write(wfd, b"err " + str(exc).encode("utf-8", "replace")[:2000])
        finally:
            os._exit(code)

    def poll(self) -> None:
        """Reap a finished child (called from the cron); start a scheduled BGSAVE."""
        pid = self.child_pid
        if pid is None:
            if self.scheduled:
                self.bgsave()
            return
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, -1
        if done == 0:
            return
        message = self._read_pipe()
        self._finish_child()
        duration = time.monotonic() - self._child_started
        self.last_duration = duration
        code = os.waitstatus_to_exitcode(status) if status != -1 else None
        if code == 0 and message.startswith("ok "):
            _, keys, size = message.split()
            self._succeeded(int(keys), int(size))
            node = self.node
            node.dirty = max(0, node.dirty - self._dirty_at_fork)
            log.info(
                "background snapshot done: %s keys, %s bytes in %.2fs (child %d)",
                keys,
                size,
                duration,
                pid,
            )
        else:
            _unlink(_tmp_path(self.path, pid))
            self.last_status = "err"
            if code is None:
                why = "child status lost"
            elif code < 0:
                why = f"child killed by signal {-code}"
            else:
                why = message.removeprefix("err ") or f"child exited with code {code}"
            log.error("background snapshot to %s failed: %s (child %d)", self.path, why, pid)
        if self.scheduled:
            self.bgsave()

    def _read_pipe(self) -> str:
        if self._pipe is None:
            return ""
        try:
            return os.read(self._pipe, 4096).decode("utf-8", "replace")
        except BlockingIOError:
            return ""
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return ""
            raise

    def _finish_child(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        self.child_pid = None
        self.in_progress = False
        gc.unfreeze()

    def abort_child(self) -> None:
        """Kill a running BGSAVE child and remove its temp file (the last snapshot stays)."""
        pid = self.child_pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        _unlink(_tmp_path(self.path, pid))
        self._finish_child()
        log.info("background snapshot aborted (child %d killed)", pid)

    # ------------------------------------------------------------------ INFO
    def info(self) -> dict[str, Any]:
        """Redis's INFO persistence fields that apply."""
        running = self.child_pid is not None
        return {
            "loading": 0,
            "rdb_changes_since_last_save": self.node.dirty,
            "rdb_bgsave_in_progress": int(running),
            "rdb_last_save_time": self.last_save,
            "rdb_last_bgsave_status": self.last_status,
            "rdb_last_bgsave_time_sec": int(self.last_duration) if self.last_duration >= 0 else -1,
            "rdb_current_bgsave_time_sec": (
                int(time.monotonic() - self._child_started) if running else -1
            ),
            "rdb_saves": self.saves,
            "rdb_last_fork_usec": int(self.last_fork_ms * 1000),
            "rdb_last_save_keys": self.last_keys,
            "rdb_last_save_bytes": self.last_bytes,
        }
