"""Sorted set: a member → score dict plus a list of ``(score, member)`` kept sorted.

Order is Redis's: by score, then by member bytes — exactly tuple order. Inserts and
removals are a bisect plus a list memmove, which stays fast well past 100k members.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

_MAX_MEMBER = b"\xff" * 64  # sorts after any realistic member for range bounds


class ZSet:
    __slots__ = ("scores", "order")

    def __init__(self) -> None:
        self.scores: dict[bytes, float] = {}
        self.order: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self.scores)

    def __contains__(self, member: bytes) -> bool:
        return member in self.scores

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        return iter(self.order)

    def score(self, member: bytes) -> float | None:
        return self.scores.get(member)

    def add(self, member: bytes, score: float) -> bool:
        """Set ``member``'s score; True if the member is new."""
        old = self.scores.get(member)
        if old is not None:
            if old == score:
                return False
            del self.order[bisect_left(self.order, (old, member))]
            self.scores[member] = score
            insort(self.order, (score, member))
            return False
        self.scores[member] = score
        insort(self.order, (score, member))
        return True

    def remove(self, member: bytes) -> bool:
        old = self.scores.pop(member, None)
        if old is None:
            return False
        del self.order[bisect_left(self.order, (old, member))]
        return True

    def rank(self, member: bytes) -> int | None:
        old = self.scores.get(member)
        if old is None:
            return None
        return bisect_left(self.order, (old, member))

    def range_by_index(self, start: int, stop: int) -> list[tuple[float, bytes]]:
        """Entries ``start..stop`` inclusive, already clamped by the caller."""
        return self.order[start : stop + 1]

    def index_range_by_score(
        self, low: float, low_excl: bool, high: float, high_excl: bool
    ) -> tuple[int, int]:
        """Half-open index range ``[i, j)`` of entries whose score lies within the bounds."""
        order = self.order
        if low_excl:
            i = bisect_right(order, (low, _MAX_MEMBER))
            while i < len(order) and order[i][0] == low:
                i += 1
        else:
            i = bisect_left(order, (low, b""))
        if high_excl:
            j = bisect_left(order, (high, b""))
        else:
            j = bisect_right(order, (high, _MAX_MEMBER))
            while j < len(order) and order[j][0] == high:
                j += 1
        return i, max(i, j)

    def pop_min(self) -> tuple[float, bytes]:
        score, member = self.order.pop(0)
        del self.scores[member]
        return score, member

    def pop_max(self) -> tuple[float, bytes]:
        score, member = self.order.pop()
        del self.scores[member]
        return score, member
