"""The replication backlog: the last bytes of the stream, for partial resyncs."""

from __future__ import annotations

from collections import deque

SEAL = 64 * 1024  # the open tail becomes an immutable chunk at this size


class Backlog:
    """A bounded window ``[start, end)`` of the replication stream.

    Offsets count stream bytes from the beginning of the replication history
    (``end`` is the node's ``master_repl_offset``). The bytes are kept as a deque of
    sealed chunks of about 64 KiB plus an open tail: an append extends the tail
    (sealing it when full), and trimming drops whole chunks from the front, so
    neither ever moves the window's bytes. The window holds at least the last
    ``size`` bytes (at most one chunk more).
    """

    __slots__ = ("size", "start", "_chunks", "_held", "_tail")

    def __init__(self, size: int, start: int) -> None:
        self.size = max(size, 1)
        self.start = start
        self._chunks: deque[bytes] = deque()
        self._held = 0  # bytes in _chunks
        self._tail = bytearray()

    @property
    def histlen(self) -> int:
        return self._held + len(self._tail)

    @property
    def end(self) -> int:
        return self.start + self._held + len(self._tail)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        tail = self._tail
        tail += data
        if len(tail) >= SEAL:
            self._chunks.append(bytes(tail))
            self._held += len(tail)
            self._tail = bytearray()
            self._trim()

    def _trim(self) -> None:
        chunks = self._chunks
        keep = self.size
        while chunks and self._held + len(self._tail) - len(chunks[0]) >= keep:
            first = chunks.popleft()
            self._held -= len(first)
            self.start += len(first)

    def holds(self, offset: int) -> bool:
        """True if the stream from ``offset`` to the end is in the window."""
        return self.start <= offset <= self.end

    def read_from(self, offset: int) -> bytes | None:
        """The stream from ``offset`` to the end; None if not held any more."""
        if not self.holds(offset):
            return None
        skip = offset - self.start
        parts: list[bytes] = []
        for chunk in self._chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            parts.append(chunk[skip:] if skip else chunk)
            skip = 0
        parts.append(bytes(self._tail[skip:]))
        return b"".join(parts)

    def reset(self, start: int) -> None:
        """Forget the history: the window is empty and starts at ``start``."""
        self._chunks.clear()
        self._held = 0
        self._tail = bytearray()
        self.start = start

    def resize(self, size: int) -> None:
        self.size = max(size, 1)
        self._trim()
