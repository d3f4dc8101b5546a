"""One RocksDB store per owned ``events`` partition: a cache of the changelog.

A session is kept as the changelog has it (docs/state-format.md): in parts (format
4: ``p:`` + the part's changelog key -> the part, committed parts only; ``q:`` + key
-> an instance part restore read before its batch's header), or, until its next
change, as one whole-session value (``s:`` + uid -> applied offset + state).  Every
batch write also records the changelog offset the store now reflects (the checkpoint).
Both land in one atomic write batch, so after any
crash the store is a consistent, possibly older, point of the changelog; restore
replays the changelog from the checkpoint.  That is also why the write-ahead log is
off: losing unflushed writes only means a longer restore.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager, WriteOptions

from stream_triggers.engine.state import SessionState
from stream_triggers.events.state_format import decode_state, encode_state, state_epoch
from stream_triggers.events.state_parts import assemble, header_key, instance_prefix, read_header

__all__ = ["PART", "PENDING", "QUARANTINE", "PartitionStore", "SessionRecord", "StoredSession"]

_OFFSET = struct.Struct(">q")
_SESSION = b"s:"
PART = b"p:"
PENDING = b"q:"
QUARANTINE = b"x:"
_CHECKPOINT = b"m:changelog-offset"
_MAX_EPOCH = b"m:max-epoch"
_MEMTABLE_BYTES = 2 * 1024 * 1024
_MEMTABLES_TOTAL_BYTES = 8 * 1024 * 1024
_BLOCK_CACHE_BYTES = 8 * 1024 * 1024
_shared: tuple[Cache, WriteBufferManager] | None = None

SessionRecord = tuple[int, bytes]
"""(applied input offset, encoded whole session state)."""


def _options() -> Options:
    """RocksDB options of every partition store: one memory budget for all of a worker's stores.

    A worker opens one store per partition; per-store memtables and block caches made its
    memory grow with the partitions it owns.  The stores share one block cache and one
    write-buffer manager (memtables of all stores together stay under
    ``_MEMTABLES_TOTAL_BYTES``: past it the largest is flushed).  Without a WAL a memtable
    only protects restore time, which the changelog bounds anyway, and the worker reads
    sessions it does not cache rarely (its session cache holds the live ones), so small
    budgets cost little.
    """
    global _shared
    if _shared is None:
        _shared = Cache(_BLOCK_CACHE_BYTES), WriteBufferManager(_MEMTABLES_TOTAL_BYTES, False)
    cache, write_buffers = _shared
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(_MEMTABLE_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_write_buffer_manager(write_buffers)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    options.set_block_based_table_factory(table)
    return options


class StoredSession(NamedTuple):
    """One session's committed state, assembled."""

    state: SessionState
    applied_offset: int
    epoch: int
    in_parts: bool
    """False: stored as one whole-session value (written before format 4), rewritten in parts on its next change."""
    size: int
    """Bytes of its stored values (an estimate of the encoded session's size)."""


class PartitionStore:
    """Sessions of one input partition, in ``<state_dir>/<topic>-<partition>``."""

    def __init__(self, state_dir: str, topic: str, partition: int) -> None:
        self.partition = partition
        self.path = os.path.join(state_dir, f"{topic}-{partition}")
        os.makedirs(self.path, exist_ok=True)
        self._db = Rdict(self.path, _options())
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True

    def read_session(self, uid: str) -> StoredSession | None:
        """The session's committed state and applied offset, assembled from its parts (or its whole value).

        Raises ``StateFormatError`` when what is stored cannot be read.
        """
        header = self._db.get(PART + header_key(uid))
        if header is not None:
            head = read_header(header)
            instances = [value for _key, value in self.scan(PART + instance_prefix(uid))]
            size = len(header) + sum(map(len, instances))
            return StoredSession(assemble(header, instances), head.applied_offset, head.epoch, True, size)
        whole = self.get_whole(uid)
        if whole is None:
            return None
        return StoredSession(decode_state(whole[1]), whole[0], state_epoch(whole[1]), False, len(whole[1]))

    def version(self, uid: str) -> tuple[int, int] | None:
        """``(epoch, applied offset)`` of the session's committed state, without assembling it."""
        header = self._db.get(PART + header_key(uid))
        if header is not None:
            head = read_header(header)
            return head.epoch, head.applied_offset
        whole = self.get_whole(uid)
        return None if whole is None else (state_epoch(whole[1]), whole[0])

    def get(self, uid: str) -> SessionRecord | None:
        """``(applied offset, whole-session state bytes)`` (assembled and encoded when stored in parts)."""
        stored = self.read_session(uid)
        if stored is None:
            return None
        if not stored.in_parts:
            return self.get_whole(uid)
        return stored.applied_offset, encode_state(stored.state, stored.epoch)

    def get_whole(self, uid: str) -> SessionRecord | None:
        value = self._db.get(_SESSION + uid.encode())
        if value is None:
            return None
        return _OFFSET.unpack_from(value)[0], value[_OFFSET.size :]

    def changelog_keys(self, uid: str) -> list[bytes]:
        """Every changelog key the session may have, from what this store holds (what retention tombstones).

        Its whole-session key, its header key, and the key of every instance part stored
        (committed or pending); ``state_parts.changelog_keys`` gives the same from a state.
        """
        keys = {uid.encode(), header_key(uid)}
        for prefix in (PART, PENDING):
            keys.update(key[len(prefix) :] for key, _ in self.scan(prefix + instance_prefix(uid)))
        return sorted(keys)

    def quarantined(self, uid: str) -> str | None:
        """Why the session is quarantined (restore could not read one of its records), or None."""
        reason = self._db.get(QUARANTINE + uid.encode())
        return None if reason is None else reason.decode(errors="replace")

    def get_raw(self, key: bytes) -> bytes | None:
        """The value under a full store key (``p:``, ``q:``, ``s:`` ...)."""
        return self._db.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        for key, value in self._db.items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    @property
    def changelog_checkpoint(self) -> int:
        """Offset of the last changelog record reflected here (-1: none)."""
        value = self._db.get(_CHECKPOINT)
        return -1 if value is None else _OFFSET.unpack(value)[0]

    @property
    def max_epoch(self) -> int:
        """Highest owner epoch seen in the changelog up to the checkpoint (0: none)."""
        value = self._db.get(_MAX_EPOCH)
        return 0 if value is None else _OFFSET.unpack(value)[0]

    def write(
        self,
        sessions: Iterable[tuple[str, int, bytes]],
        changelog_checkpoint: int | None,
        max_epoch: int | None = None,
    ) -> None:
        """Atomically store ``(uid, applied_offset, state)`` rows, the checkpoint and the max epoch."""
        batch = WriteBatch(raw_mode=True)
        for uid, applied_offset, state in sessions:
            batch.put(_SESSION + uid.encode(), _OFFSET.pack(applied_offset) + state)
        if changelog_checkpoint is not None:
            batch.put(_CHECKPOINT, _OFFSET.pack(changelog_checkpoint))
        if max_epoch is not None:
            batch.put(_MAX_EPOCH, _OFFSET.pack(max_epoch))
        if not batch.is_empty():
            self._db.write(batch, self._write_options)

    def write_parts(
        self,
        rows: Iterable[tuple[bytes, bytes | None]],
        changelog_checkpoint: int | None,
        max_epoch: int | None = None,
        whole: Iterable[tuple[str, int, bytes]] = (),
    ) -> None:
        """Atomically apply ``(store key, value or None to delete)`` rows, whole-session rows, checkpoint, max epoch."""
        batch = WriteBatch(raw_mode=True)
        for key, value in rows:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for uid, applied_offset, state in whole:
            batch.put(_SESSION + uid.encode(), _OFFSET.pack(applied_offset) + state)
        if changelog_checkpoint is not None:
            batch.put(_CHECKPOINT, _OFFSET.pack(changelog_checkpoint))
        if max_epoch is not None:
            batch.put(_MAX_EPOCH, _OFFSET.pack(max_epoch))
        if not batch.is_empty():
            self._db.write(batch, self._write_options)

    @staticmethod
    def whole_key(uid: str) -> bytes:
        return _SESSION + uid.encode()

    def close(self) -> None:
        self._db.flush()
        self._db.close()

    @staticmethod
    def wipe(state_dir: str, topic: str, partition: int) -> None:
        """Delete a partition's store (it is rebuilt from the changelog)."""
        shutil.rmtree(os.path.join(state_dir, f"{topic}-{partition}"), ignore_errors=True)
