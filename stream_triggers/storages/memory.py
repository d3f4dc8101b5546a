"""Process-local storage: sessions live in a dict for the life of the process.

The stored value is the immutable ``SessionState`` itself, so loading and saving are
O(1) whatever the session's size.
"""

from __future__ import annotations

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
        self.locks = SessionLocks()

    def clear(self) -> None:
        self.sessions.clear()
        self.versions.clear()


DEFAULT_STORE = MemoryStore()


class MemoryStorage(BaseTriggerStorage):
    """Sessions in this process's memory (lost when it exits)."""

    def __init__(self, uid: str, store: MemoryStore | None = None) -> None:
        super().__init__(uid)
        self.store = store if store is not None else DEFAULT_STORE
        self._lock = self.store.locks(uid)

    def fresh(self) -> MemoryStorage:
        return MemoryStorage(self.uid, self.store)

    def _load_state(self) -> tuple[SessionState | None, int]:
        store = self.store
        return store.sessions.get(self.uid), store.versions.get(self.uid, 0)

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
        return current + 1

    def _session_lock(self) -> AbstractContextManager[object]:
        return self._lock  # one reusable RLock per session, looked up once
