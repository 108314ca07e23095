"""The keyspace: values organised by hash slot, TTLs as absolute times, memory estimate.

Values are plain Python objects, one type each: ``bytes`` (string), ``dict`` (hash),
``deque`` (list), ``set`` (set) and :class:`datanode.zset.ZSet` (sorted set).
Keys live in one dict per slot, so counting, listing, exporting or dropping one
slot's keys never scans the whole keyspace. TTLs are absolute milliseconds in
``expires``; a min-heap of ``(at, key)`` feeds the active expiry cycle (stale heap
entries are skipped, and the heap is rebuilt when it grows past twice the TTLs).

The clock is injected (``clock`` returns wall-clock milliseconds), so tests can
drive expiry without sleeping.

Memory is an *estimate* of the dataset (keys, values, per-entry overhead) kept up
to date on every write: strings exactly, collections by their handlers through
:meth:`account`. ``maxmemory`` is compared with it, not with the process size.

Home slots (:meth:`set_home`, the slots a cluster-mode node serves without routing)
are tracked so that a key's presence can stand for its slot check: ``away`` counts
the keys held outside them, and ``home_keys`` is ``data`` itself while that count
is 0 (an empty set otherwise), so ``key in home_keys`` proves the key's slot is home
without computing its CRC16.
"""

from __future__ import annotations

import heapq
import random
import time
from binascii import crc_hqx
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import islice
from typing import Any

from clusterstate.slots import SLOT_COUNT, key_slot

from .errors import WRONGTYPE, CommandError
from .zset import ZSet

# Rough cost of one key in the dict, its key object and headers (bytes).
ENTRY_OVERHEAD = 96
# Rough cost of one element inside a collection beyond its own bytes.
ELEMENT_OVERHEAD = 64

TYPE_NAMES: dict[type, bytes] = {
    bytes: b"string",
    dict: b"hash",
    deque: b"list",
    set: b"set",
    ZSet: b"zset",
}


_LOOK_UP: Any = object()  # Keyspace.set: the caller did not look the key up
_NO_KEYS: frozenset[bytes] = frozenset()  # home_keys while some key is away
ALL_HOME: Sequence[bool] = (True,) * SLOT_COUNT


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def estimate_size(key: bytes, value: Any) -> int:
    """Estimated bytes one entry costs (key, value, overhead)."""
    t = type(value)
    if t is bytes:
        return len(key) + len(value) + ENTRY_OVERHEAD
    total = len(key) + ENTRY_OVERHEAD
    if t is dict:
        for f, v in value.items():
            total += len(f) + len(v) + ELEMENT_OVERHEAD
    elif t is ZSet:
        for m in value.scores:
            total += len(m) + 2 * ELEMENT_OVERHEAD
    else:  # deque, set
        for m in value:
            total += len(m) + ELEMENT_OVERHEAD
    return total


class Keyspace:
    """All keys of the node (one logical database, db 0)."""

    def __init__(self, clock: Callable[[], int] = wall_ms) -> None:
        self.clock = clock
        # Every key and its value in one dict (lookups and overwrites need no slot),
        # and each key again in its slot's index (key -> None, insertion ordered), so
        # one slot's keys are counted, listed, exported or dropped alone.
        self.data: dict[bytes, Any] = {}
        self.slots: list[dict[bytes, None]] = [{} for _ in range(SLOT_COUNT)]
        # Home slots (see the module doc): flags by slot, the keys outside them, and
        # the keys known to be home (data while none is away).
        self.home: Sequence[bool] = ALL_HOME
        self.away = 0
        self.home_keys: Collection[bytes] = self.data
        self.expires: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self.count = 0
        self.mem = 0
        self.hits = 0
        self.misses = 0
        self.expired_keys = 0
        self.evicted_keys = 0
        # A replica hides expired keys but never deletes on its own (its primary does).
        self.expire_deletes = True
        # WATCH: key -> clients watching it; those clients' ``dirty`` flag is set on change.
        self.watched: dict[bytes, set[Any]] = {}
        # Called with the key whenever the keyspace itself deletes one (expiry, eviction),
        # so replication can propagate the deletion as an effect.
        self.on_delete: Callable[[bytes], None] | None = None
        # LRU clock per key, only kept while the policy needs it.
        self.lru: dict[bytes, int] | None = None
        self._tick = 0
        self.maxmemory = 0
        self.policy = "noeviction"

    # ------------------------------------------------------------------ lookups
    def get(self, key: bytes) -> Any:
        """Read lookup: the value, or None if absent or expired (counts hits/misses)."""
        v = self.data.get(key)
        if v is not None:
            exp = self.expires
            if exp and key in exp and exp[key] <= self.clock():
                self._expire(key)
                self.misses += 1
                return None
            self.hits += 1
            if self.lru is not None:
                self._tick += 1
                self.lru[key] = self._tick
            return v
        self.misses += 1
        return None

    def get_for_write(self, key: bytes) -> Any:
        """Write lookup: like :meth:`get` but without hit/miss accounting."""
        v = self.data.get(key)
        if v is not None:
            exp = self.expires
            if exp and key in exp and exp[key] <= self.clock():
                self._expire(key)
                return None
            if self.lru is not None:
                self._tick += 1
                self.lru[key] = self._tick
        return v

    def get_typed(self, key: bytes, typ: type) -> Any:
        """Read lookup that raises WRONGTYPE when the key holds another type."""
        v = self.get(key)
        if v is not None and type(v) is not typ:
            raise CommandError(WRONGTYPE)
        return v

    def get_typed_for_write(self, key: bytes, typ: type) -> Any:
        v = self.get_for_write(key)
        if v is not None and type(v) is not typ:
            raise CommandError(WRONGTYPE)
        return v

    def get_or_create(self, key: bytes, typ: type) -> Any:
        """The collection at ``key`` (WRONGTYPE if another type), created empty if absent."""
        v = self.get_for_write(key)
        if v is None:
            v = typ()
            self.set(key, v)
        elif type(v) is not typ:
            raise CommandError(WRONGTYPE)
        return v

    def exists(self, key: bytes) -> bool:
        return self.get_for_write(key) is not None

    # ------------------------------------------------------------------ writes
    def set(self, key: bytes, value: Any, keep_ttl: bool = False, old: Any = _LOOK_UP) -> None:
        """Store ``value`` at ``key``; the TTL is cleared unless ``keep_ttl``.

        ``old``: what ``data.get(key)`` returned, when the caller just looked it up.
        """
        data = self.data
        if old is _LOOK_UP:
            old = data.get(key)
        data[key] = value
        if type(value) is bytes:
            if type(old) is bytes:  # the common overwrite: only the value size changes
                self.mem += len(value) - len(old)
            else:
                self.mem += len(key) + len(value) + ENTRY_OVERHEAD - (
                    0 if old is None else estimate_size(key, old)
                )
        else:
            self.mem += estimate_size(key, value) - (
                0 if old is None else estimate_size(key, old)
            )
        if old is None:
            self.count += 1
            slot = crc_hqx(key, 0) & 16383 if 123 not in key else key_slot(key)
            self.slots[slot][key] = None
            if not self.home[slot]:
                self.away += 1
                self.home_keys = _NO_KEYS
        if not keep_ttl and self.expires:
            self.expires.pop(key, None)

    def account(self, delta: int) -> None:
        """A collection handler changed the size of a value in place by ``delta`` bytes."""
        self.mem += delta

    def delete(self, key: bytes) -> bool:
        """Delete ``key``; False if it was absent (or already expired)."""
        v = self.data.get(key)
        if v is None:
            return False
        exp = self.expires
        if exp and key in exp and exp[key] <= self.clock():
            self._expire(key)
            return False
        self._remove(key_slot(key), key, v)
        return True

    def _remove(self, slot: int, key: bytes, v: Any) -> None:
        del self.slots[slot][key]
        del self.data[key]
        if not self.home[slot]:
            self.away -= 1
            if not self.away:
                self.home_keys = self.data
        self.count -= 1
        self.mem -= estimate_size(key, v)
        if self.expires:
            self.expires.pop(key, None)
        if self.lru is not None:
            self.lru.pop(key, None)

    def pop(self, key: bytes) -> tuple[Any, int | None] | None:
        """Remove and return ``(value, expire_at)`` of a live key, or None."""
        v = self.get_for_write(key)
        if v is None:
            return None
        at = self.expires.get(key)
        self._remove(key_slot(key), key, v)
        return v, at

    def set_expire(self, key: bytes, at_ms: int) -> None:
        """Give an existing key an absolute expiry time (ms)."""
        self.expires[key] = at_ms
        heapq.heappush(self._heap, (at_ms, key))
        if len(self._heap) > 2 * len(self.expires) + 65536:
            self._heap = [(at, k) for k, at in self.expires.items()]
            heapq.heapify(self._heap)

    def persist(self, key: bytes) -> bool:
        return self.expires.pop(key, None) is not None

    def expire_at(self, key: bytes) -> int | None:
        return self.expires.get(key)

    def flush(self) -> None:
        for keys in self.watched.values():
            for client in keys:
                client.dirty = True
        self.data = {}
        self.slots = [{} for _ in range(SLOT_COUNT)]
        self.expires = {}
        self._heap = []
        self.count = 0
        self.mem = 0
        self.away = 0
        self.home_keys = self.data
        if self.lru is not None:
            self.lru = {}

    def adopt(self, other: Keyspace) -> None:
        """Hold what ``other`` holds, in O(1) (a full sync swaps in the loaded keyspace;
        connections keep this object). Watchers see their keys changed."""
        self.flush()
        self.data = other.data
        self.slots = other.slots
        self.expires = other.expires
        self._heap = other._heap
        self.count = other.count
        self.mem = other.mem
        self._count_away()

    # ------------------------------------------------------------------ home slots
    def set_home(self, home: Sequence[bool]) -> None:
        """Make ``home`` (a flag per slot) the home slots and count the keys away."""
        if home is self.home or home == self.home:
            return
        self.home = home
        self._count_away()

    def _count_away(self) -> None:
        self.away = sum(len(d) for d, home in zip(self.slots, self.home, strict=True) if not home)
        self.home_keys = _NO_KEYS if self.away else self.data

    # ------------------------------------------------------------------ WATCH
    def touch(self, key: bytes) -> None:
        watchers = self.watched.get(key)
        if watchers:
            for client in watchers:
                client.dirty = True

    # ------------------------------------------------------------------ expiry
    def _expire(self, key: bytes) -> None:
        if not self.expire_deletes:
            return
        v = self.data.get(key)
        if v is None:
            return
        self._remove(key_slot(key), key, v)
        self.expired_keys += 1
        self.touch(key)
        if self.on_delete is not None:
            self.on_delete(key)

    def is_expired(self, key: bytes) -> bool:
        at = self.expires.get(key)
        return at is not None and at <= self.clock()

    def active_expire_cycle(self, max_keys: int = 2000, max_ms: float = 5.0) -> int:
        """Delete keys whose TTL passed, oldest first, within a small budget. Returns count."""
        if not self.expire_deletes:
            return 0
        heap = self._heap
        now = self.clock()
        deadline = time.perf_counter() + max_ms / 1000.0
        done = 0
        while heap and heap[0][0] <= now and done < max_keys:
            at, key = heapq.heappop(heap)
            if self.expires.get(key) == at:
                self._expire(key)
                done += 1
                if done % 64 == 0 and time.perf_counter() > deadline:
                    break
        return done

    # ------------------------------------------------------------------ eviction
    def set_policy(self, maxmemory: int, policy: str) -> None:
        self.maxmemory = maxmemory
        self.policy = policy
        if policy == "allkeys-lru":
            if self.lru is None:
                self.lru = {}
        else:
            self.lru = None

    def over_memory(self) -> bool:
        return self.maxmemory > 0 and self.mem > self.maxmemory

    def evict(self, max_keys: int = 4096) -> bool:
        """Free memory by the policy until under ``maxmemory``; False if it cannot."""
        if self.policy == "noeviction":
            return not self.over_memory()
        n = 0
        while self.over_memory() and n < max_keys:
            key = self._eviction_candidate()
            if key is None:
                return False
            v = self.data.get(key)
            if v is None:
                continue
            self._remove(key_slot(key), key, v)
            self.evicted_keys += 1
            self.touch(key)
            if self.on_delete is not None:
                self.on_delete(key)
            n += 1
        return not self.over_memory()

    def _eviction_candidate(self) -> bytes | None:
        if self.policy == "volatile-ttl":
            heap = self._heap
            while heap:
                at, key = heap[0]
                if self.expires.get(key) == at:
                    return key
                heapq.heappop(heap)
            return None
        # allkeys-lru, approximated: the least recently used of a few sampled keys.
        lru = self.lru or {}
        best: bytes | None = None
        best_tick = 0
        for _ in range(5):
            sampled = self.random_key()
            if sampled is None:
                return None
            tick = lru.get(sampled, 0)
            if best is None or tick < best_tick:
                best, best_tick = sampled, tick
        return best

    # ------------------------------------------------------------------ whole-keyspace views
    def random_key(self) -> bytes | None:
        if self.count == 0:
            return None
        slots = self.slots
        for _ in range(64):
            d = slots[random.randrange(SLOT_COUNT)]
            if d:
                return _random_member(d)
        start = random.randrange(SLOT_COUNT)
        for i in range(SLOT_COUNT):
            d = slots[(start + i) % SLOT_COUNT]
            if d:
                return _random_member(d)
        return None

    def iter_keys(self) -> Iterator[bytes]:
        """Every live key (expired ones skipped, not deleted)."""
        now = self.clock()
        exp = self.expires
        for d in self.slots:
            if d:
                for key in list(d):
                    if exp and key in exp and exp[key] <= now:
                        continue
                    yield key

    def iter_items(self) -> Iterator[tuple[bytes, Any, int | None]]:
        """``(key, value, expire_at_ms or None)`` for every live key."""
        now = self.clock()
        exp = self.expires
        for key, value in list(self.data.items()):
            at = exp.get(key) if exp else None
            if at is not None and at <= now:
                continue
            yield key, value, at

    # ------------------------------------------------------------------ per-slot views
    def count_in_slot(self, slot: int) -> int:
        return len(self.slots[slot])

    def keys_in_slot(self, slot: int, count: int) -> list[bytes]:
        out: list[bytes] = []
        for key in self.slots[slot]:
            if len(out) >= count:
                break
            out.append(key)
        return out

    def slot_items(self, slot: int) -> Iterator[tuple[bytes, Any, int | None]]:
        """``(key, value, expire_at)`` of one slot's live keys."""
        now = self.clock()
        exp = self.expires
        data = self.data
        for key in list(self.slots[slot]):
            value = data.get(key)
            if value is None:
                continue
            at = exp.get(key) if exp else None
            if at is not None and at <= now:
                continue
            yield key, value, at

    def drop_slot_batch(self, slot: int, batch: int = 1000) -> int:
        """Delete up to ``batch`` keys of ``slot``; returns how many were deleted.
        Each deletion is reported to ``on_delete`` (replicas drop the keys too)."""
        d = self.slots[slot]
        on_delete = self.on_delete
        n = 0
        for key in list(islice(d, batch)):
            self._remove(slot, key, self.data[key])
            self.touch(key)
            if on_delete is not None:
                on_delete(key)
            n += 1
        return n


def _random_member(d: dict[bytes, None]) -> bytes:
    n = len(d)
    if n == 1:
        return next(iter(d))
    i = random.randrange(n)
    for j, key in enumerate(d):
        if j == i:
            return key
    raise AssertionError("unreachable")
