"""Storage in a local RocksDB directory (via rocksdict): survives process restarts.

RocksDB lets one process open a directory, so this process is the only writer:
every storage for the same path shares one :class:`_Database`, which keeps the
decoded state of recently used sessions (their version check stays) and writes
only what changed.  A save that applied engine inputs to the loaded state appends
those inputs to the session's log (small records, replayed through the pure engine
when the session is next read cold); every ``COMPACT_AFTER`` inputs, and whenever
instances were edited directly, the whole state is written as a snapshot and the
log before it deleted, in one atomic batch.

Keys: ``session:<uid>`` holds the snapshot (an 8-byte version, then the encoding of
:mod:`stream_triggers.events.state_format`); ``log:<len><uid><version>`` one input
each (``[type name, events record, microseconds]``, msgpack), newer than the snapshot;
``expires:<uid>`` the deadline of a session saved with a ``timeout``.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from stream_triggers.engine import EMPTY, Effect, Input, SessionState, step
from stream_triggers.events.records import input_from_record, record_from_input, us_from_datetime
from stream_triggers.events.state_format import decode_state, encode_state, pack, unpack
from stream_triggers.storages.base import BaseTriggerStorage, ConcurrentModification
from stream_triggers.storages.locking import SessionLocks

__all__ = ["RocksDBStorage", "DEFAULT_PATH_ENV", "COMPACT_AFTER", "CACHED_SESSIONS", "close_all"]

DEFAULT_PATH_ENV = "STREAM_TRIGGERS_ROCKSDB_PATH"
_DEFAULT_PATH = "stream-triggers-state"
_VERSION = struct.Struct(">Q")
_UID_LENGTH = struct.Struct(">I")
_KEY_PREFIX = b"session:"
_LOG_PREFIX = b"log:"
_EXPIRES_PREFIX = b"expires:"
_DEADLINE = struct.Struct(">d")

COMPACT_AFTER = 32
"""Logged inputs after which a session's next save writes a snapshot instead."""

CACHED_SESSIONS = 10_000
"""Decoded sessions kept per directory (the oldest written are dropped first)."""


class _Cached:
    """A session as stored: state, version, logged inputs after the snapshot, expiry."""

    __slots__ = ("state", "version", "logged", "expires")

    def __init__(self, state: SessionState, version: int, logged: int, expires: float | None = None) -> None:
        self.state = state
        self.version = version
        self.logged = logged
        self.expires = expires  # wall-clock deadline (``timeout``), or None


class _Writes:
    """The puts and deletes of one save, written atomically (one put goes straight in)."""

    __slots__ = ("db", "puts", "batch")

    def __init__(self, db: Rdict) -> None:
        self.db = db
        self.puts: list[tuple[bytes, bytes]] = []
        self.batch: WriteBatch | None = None

    def _batched(self) -> WriteBatch:
        if self.batch is None:
            self.batch = WriteBatch(raw_mode=True)
        return self.batch

    def put(self, key: bytes, value: bytes) -> None:
        self.puts.append((key, value))

    def delete(self, key: bytes) -> None:
        self._batched().delete(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        self._batched().delete_range(start, end)

    def commit(self) -> None:
        if self.batch is None and len(self.puts) == 1:
            key, value = self.puts[0]
            self.db[key] = value
            return
        batch = self._batched()
        for key, value in self.puts:
            batch.put(key, value)
        self.db.write(batch)


class _Database:
    """One open directory: the handle, the session locks and the decoded sessions."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(path, options)
        self.locks = SessionLocks()
        self.guard = threading.Lock()  # writes and cold reads
        self.sessions: dict[str, _Cached] = {}

    def session(self, uid: str) -> _Cached:
        cached = self.sessions.get(uid)
        if cached is None or (cached.expires is not None and cached.expires <= time.time()):
            with self.guard:
                cached = self._current(uid)
        return cached

    def _current(self, uid: str) -> _Cached:
        """The session (read cold if need be, emptied if it expired); hold ``guard``."""
        cached = self.sessions.get(uid)
        if cached is None:
            cached = self._remember(uid, self._read(uid))
        if cached.expires is not None and cached.expires <= time.time():
            # Expired: from now on a new session, one version on (the check still holds).
            writes = _Writes(self.db)
            version = cached.version + 1
            self._snapshot(writes, uid, EMPTY, version, clear_log=cached.logged > 0)
            writes.delete(_EXPIRES_PREFIX + uid.encode())
            writes.commit()
            cached = self._remember(uid, _Cached(EMPTY, version, 0))
        return cached

    def _remember(self, uid: str, cached: _Cached) -> _Cached:
        sessions = self.sessions
        sessions.pop(uid, None)  # re-inserted last: the most recently written go last
        if len(sessions) >= CACHED_SESSIONS:
            del sessions[next(iter(sessions))]
        sessions[uid] = cached
        return cached

    def _read(self, uid: str) -> _Cached:
        """The stored session, cold: the snapshot, then its logged inputs replayed."""
        value = self.db.get(_KEY_PREFIX + uid.encode())
        if value is None:
            state, version = EMPTY, 0
        else:
            state, version = decode_state(value[_VERSION.size :]), _VERSION.unpack_from(value)[0]
        prefix = _log_prefix(uid)
        logged = 0
        for key, data in self.db.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            logged_version = _VERSION.unpack_from(key, len(prefix))[0]
            if logged_version <= version:
                continue
            state, _ = step(state, _input_from_log(data))
            version, logged = logged_version, logged + 1
        expires = self.db.get(_EXPIRES_PREFIX + uid.encode())
        return _Cached(state, version, logged, None if expires is None else _DEADLINE.unpack(expires)[0])

    def save(
        self,
        uid: str,
        state: SessionState,
        expected_version: int,
        inputs: list[Input] | None,
        timeout: float | None = None,
    ) -> int:
        """Store ``state`` (reached from the stored one by ``inputs``, if given)."""
        with self.guard:
            cached = self._current(uid)
            if cached.version != expected_version:
                raise ConcurrentModification(
                    f"Session {uid!r} changed (version {cached.version}) since it was loaded "
                    f"(version {expected_version}); reload and retry."
                )
            writes = _Writes(self.db)
            records = _log_records(inputs) if inputs and cached.logged + len(inputs) <= COMPACT_AFTER else None
            version = expected_version
            if records is not None:
                prefix = _log_prefix(uid)
                for record in records:
                    version += 1
                    writes.put(prefix + _VERSION.pack(version), record)
                logged = cached.logged + len(records)
            else:
                version += 1
                self._snapshot(writes, uid, state, version, clear_log=cached.logged > 0)
                logged = 0
            expires = None if timeout is None else time.time() + timeout
            if expires is not None:
                writes.put(_EXPIRES_PREFIX + uid.encode(), _DEADLINE.pack(expires))
            elif cached.expires is not None:
                writes.delete(_EXPIRES_PREFIX + uid.encode())
            writes.commit()
            self._remember(uid, _Cached(state, version, logged, expires))
        return version

    @staticmethod
    def _snapshot(writes: _Writes, uid: str, state: SessionState, version: int, clear_log: bool) -> None:
        writes.put(_KEY_PREFIX + uid.encode(), _VERSION.pack(version) + encode_state(state))
        if clear_log:
            prefix = _log_prefix(uid)
            writes.delete_range(prefix, prefix + _VERSION.pack(version + 1))

    def close(self) -> None:
        self.sessions.clear()
        self.db.close()


def _log_prefix(uid: str) -> bytes:
    """Length first: no uid's log keys start with another uid's prefix."""
    encoded = uid.encode()
    return _LOG_PREFIX + _UID_LENGTH.pack(len(encoded)) + encoded


def _log_records(inputs: list[Input]) -> list[bytes] | None:
    """The inputs as log records, or None if one has no record form (then: a snapshot)."""
    records = []
    for event in inputs:
        try:
            type_name, record = record_from_input(event)
            records.append(pack([type_name, record, us_from_datetime(event.at)]))
        except (TypeError, ValueError):
            return None
    return records


def _input_from_log(data: bytes) -> Input:
    type_name, record, at_us = unpack(data)
    record["produced_at"] = at_us
    return input_from_record(type_name, record)  # (a report's two copies of its result weigh once: the engine)


_open_guard = threading.Lock()
_databases: dict[str, _Database] = {}


def _database(path: str) -> _Database:
    database = _databases.get(path)
    if database is None:
        with _open_guard:
            database = _databases.get(path)
            if database is None:
                database = _databases[path] = _Database(path)
    return database


def close_all() -> None:
    """Close every RocksDB handle this process opened (tests reopen directories)."""
    with _open_guard:
        for database in _databases.values():
            database.close()
        _databases.clear()


class RocksDBStorage(BaseTriggerStorage):
    """Sessions in the RocksDB directory ``path`` (default: $STREAM_TRIGGERS_ROCKSDB_PATH).

    ``timeout`` is the original cache backend's: seconds a session lives after its
    last save (None: for ever), then it reads as new.
    """

    def __init__(self, uid: str, path: str | None = None, timeout: float | None = None) -> None:
        super().__init__(uid)
        self.path = os.path.abspath(path or os.environ.get(DEFAULT_PATH_ENV) or _DEFAULT_PATH)
        self.timeout = timeout
        self._database = _database(self.path)
        self._inputs: list[Input] = []  # applied since the state was loaded or saved
        self._reached: SessionState | None = None  # the state those inputs reached

    def fresh(self) -> RocksDBStorage:
        return RocksDBStorage(self.uid, self.path, self.timeout)

    def _load_state(self) -> tuple[SessionState | None, int]:
        cached = self._database.session(self.uid)
        self._inputs = []
        self._reached = None
        return cached.state, cached.version

    def apply(self, event: Input) -> list[Effect]:
        effects = super().apply(event)
        self._inputs.append(event)
        self._reached = self._state
        return effects

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        # Only inputs replay to this very state: direct edits (instances changed in
        # place, create_instance) leave another state, which is written whole.
        inputs = self._inputs if state is self._reached else None
        version = self._database.save(self.uid, state, expected_version, inputs, self.timeout)
        self._inputs = []
        self._reached = None
        return version

    def _session_lock(self) -> AbstractContextManager[Any]:
        return self._database.locks(self.uid)
