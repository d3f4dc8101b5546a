"""Per-session locks, composed into storages rather than inherited."""

from __future__ import annotations

import threading
from collections.abc import Hashable

from stream_triggers.exceptions import StreamTriggersError

__all__ = ["LockAcquisitionFailed", "SessionLocks"]


class LockAcquisitionFailed(StreamTriggersError, RuntimeError):
    """The session lock is held elsewhere and the caller asked not to wait (``block=False``)."""


class SessionLocks:
    """One re-entrant lock per key, created on first use (threads of one process)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, threading.RLock] = {}

    def __call__(self, key: Hashable) -> threading.RLock:
        lock = self._locks.get(key)
        if lock is None:
            with self._guard:
                lock = self._locks.setdefault(key, threading.RLock())
        return lock
