"""An in-memory link: packets wait in a queue ordered by the time they arrive.

The link of the virtual-clock simulator (stack.sim). It has no clock of its own: whoever puts a
packet says when it arrives, and whoever drives time takes what is due.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")


class MemoryQueue(Generic[T]):
    """Deliveries by arrival time; equal times leave in the order they were put."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Everything that has arrived by `now`, in arrival order."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due
