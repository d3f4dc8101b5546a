"""Storage in a local RocksDB directory (via rocksdict): survives process restarts.

RocksDB lets one process open a directory, so every storage for the same path in
this process shares one handle; a per-session lock serialises this process's
threads.  Values are the versioned session encoding of
:mod:`stream_triggers.events.state_format`, prefixed with an 8-byte save counter used for
the version check.
"""

from __future__ import annotations

import os
import struct
import threading
from contextlib import AbstractContextManager

from rocksdict import Options, Rdict

from stream_triggers.engine import SessionState
from stream_triggers.events.state_format import decode_state, encode_state
from stream_triggers.storages.base import BaseTriggerStorage, ConcurrentModification
from stream_triggers.storages.locking import SessionLocks

__all__ = ["RocksDBStorage", "DEFAULT_PATH_ENV", "close_all"]

DEFAULT_PATH_ENV = "STREAM_TRIGGERS_ROCKSDB_PATH"
_DEFAULT_PATH = "stream-triggers-state"
_VERSION = struct.Struct(">Q")
_KEY_PREFIX = b"session:"

_open_guard = threading.Lock()
_databases: dict[str, tuple[Rdict, SessionLocks, threading.Lock]] = {}


def _database(path: str) -> tuple[Rdict, SessionLocks, threading.Lock]:
    path = os.path.abspath(path)
    with _open_guard:
        entry = _databases.get(path)
        if entry is None:
            os.makedirs(path, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            entry = _databases[path] = (Rdict(path, options), SessionLocks(), threading.Lock())
        return entry


def close_all() -> None:
    """Close every RocksDB handle this process opened (tests reopen directories)."""
    with _open_guard:
        for db, _, _ in _databases.values():
            db.close()
        _databases.clear()


class RocksDBStorage(BaseTriggerStorage):
    """Sessions in the RocksDB directory ``path`` (default: $STREAM_TRIGGERS_ROCKSDB_PATH)."""

    def __init__(self, uid: str, path: str | None = None) -> None:
        super().__init__(uid)
        self.path = os.path.abspath(path or os.environ.get(DEFAULT_PATH_ENV) or _DEFAULT_PATH)
        self._db, self._locks, self._write_guard = _database(self.path)
        self._key = _KEY_PREFIX + uid.encode()

    def fresh(self) -> RocksDBStorage:
        return RocksDBStorage(self.uid, self.path)

    def _load_state(self) -> tuple[SessionState | None, int]:
        value = self._db.get(self._key)
        if value is None:
            return None, 0
        return decode_state(value[_VERSION.size :]), _VERSION.unpack_from(value)[0]

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        encoded = encode_state(state)
        with self._write_guard:
            value = self._db.get(self._key)
            current = 0 if value is None else _VERSION.unpack_from(value)[0]
            if current != expected_version:
                raise ConcurrentModification(
                    f"Session {self.uid!r} changed (version {current}) since it was loaded "
                    f"(version {expected_version}); reload and retry."
                )
            self._db[self._key] = _VERSION.pack(current + 1) + encoded
        return current + 1

    def _session_lock(self) -> AbstractContextManager[object]:
        return self._locks(self.uid)
