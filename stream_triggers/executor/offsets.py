"""Which task-run offsets may be committed: never past a request still in hand.

A request is *started* when the executor takes it and *done* once its outcome is
acknowledged by the broker (or it needs no outcome: another runner's, or dead-lettered).
The committable offset of a partition is its lowest pending request, or one past the
highest seen, so a crash re-runs at most the requests in hand (at-least-once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Per partition: which requests are done, so commits never pass an unfinished one."""

    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._highest: dict[int, int] = {}
        self._lock = threading.Lock()

    def started(self, partition: int, offset: int) -> None:
        with self._lock:
            self._pending.setdefault(partition, set()).add(offset)
            self._highest[partition] = max(self._highest.get(partition, -1), offset)

    def done(self, partition: int, offset: int) -> None:
        with self._lock:
            self._pending.get(partition, set()).discard(offset)

    def pending(self, partition: int) -> set[int]:
        """Offsets of ``partition`` taken and not done (a copy)."""
        with self._lock:
            return set(self._pending.get(partition, ()))

    def committable(self) -> dict[int, int]:
        """Partition -> next offset to commit (lowest pending, or one past the highest seen)."""
        with self._lock:
            return {
                p: (min(self._pending[p]) if self._pending.get(p) else highest + 1)
                for p, highest in self._highest.items()
            }

    def forget(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._pending.pop(p, None)
                self._highest.pop(p, None)
