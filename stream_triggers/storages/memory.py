"""Process-local storage: sessions live in a dict for the life of the process.

The stored value is the immutable ``SessionState`` itself, so loading and saving are
O(1) whatever the session's size.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from stream_triggers.engine import SessionState
from stream_triggers.storages.base import BaseTriggerStorage, ConcurrentModification
from stream_triggers.storages.locking import SessionLocks

__all__ = ["MemoryStore", "MemoryStorage"]


class MemoryStore:
    """A namespace of sessions; ``MemoryStorage`` uses one shared store by default."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionState] = {}
        self.versions: dict[str, int] = {}  # beside the states, not paired in tuples: fewer objects to collect
        self.expiries: dict[str, float] = {}  # wall-clock deadlines of sessions saved with a ``timeout``
        self.locks = SessionLocks()

    def clear(self) -> None:
        """Forget every session (the testing mixin calls this between tests)."""
        self.sessions.clear()
        self.versions.clear()
        self.expiries.clear()


DEFAULT_STORE = MemoryStore()


class MemoryStorage(BaseTriggerStorage):
    """Sessions in this process's memory (lost when it exits).

    ``timeout`` is the original cache backend's: seconds a session lives after its
    last save (None: for ever), then it reads as new.
    """

    def __init__(self, uid: str, store: MemoryStore | None = None, timeout: float | None = None) -> None:
        super().__init__(uid)
        self.store = store if store is not None else DEFAULT_STORE
        self.timeout = timeout
        self._lock = self.store.locks(uid)

    def fresh(self) -> MemoryStorage:
        return MemoryStorage(self.uid, self.store, self.timeout)

    def _load_state(self) -> tuple[SessionState | None, int]:
        store = self.store
        uid = self.uid
        if store.expiries and store.expiries.get(uid, float("inf")) <= time.time():
            store.sessions.pop(uid, None)  # (the version stays: the save check still holds)
            store.expiries.pop(uid, None)
        return store.sessions.get(uid), store.versions.get(uid, 0)

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        # Every writer holds the session lock (``save`` checks), so nothing can come
        # between this check and the write.
        versions = self.store.versions
        current = versions.get(self.uid, 0)
        if current != expected_version:
            raise ConcurrentModification(
                f"Session {self.uid!r} changed (version {current}) since it was loaded "
                f"(version {expected_version}); reload and retry."
            )
        self.store.sessions[self.uid] = state
        versions[self.uid] = current + 1
        if self.timeout is not None:
            self.store.expiries[self.uid] = time.time() + self.timeout
        elif self.store.expiries:
            self.store.expiries.pop(self.uid, None)
        return current + 1

    def _session_lock(self) -> AbstractContextManager[object]:
        return self._lock  # one reusable RLock per session, looked up once
