"""One RocksDB store per owned ``events`` partition: a cache of the changelog.

A session is kept as the changelog has it (docs/state-format.md): in parts (format
4: ``p:`` + the part's changelog key -> the part, committed parts only; ``q:`` + key
-> an instance part restore read before its batch's header), or, until its next
change, as one whole-session value (``s:`` + uid -> applied offset + state).  Every
batch write also records the changelog offset the store now reflects (the checkpoint).
Both land in one atomic write batch, so after any crash the store is a consistent,
possibly older, point of the changelog; restore replays the changelog from the checkpoint.
That is also why the write-ahead log is off: losing unflushed writes only means a longer restore.

Beside each session the store keeps its **ages** (``a:`` + uid -> when its last input
was applied, when it was finalized; µs) and two indexes ordered by those times (``t:``
and ``f:`` + 8-byte big-endian time + uid), written in the same batch as its parts, so
the retention sweep (:mod:`~stream_triggers.stream.retention`) finds the sessions past
a deadline without reading the others.  The ages come from the changelog records (the
header's ``produced_at`` and ``finalized-at`` header), so a restore rebuilds them too.
``m:sessions`` counts the sessions that have ages (the live-session gauge).  A store
written before the ages existed (no ``m:layout``) is rebuilt from the changelog.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from stream_triggers.engine.state import SessionState
from stream_triggers.events.state_format import decode_state, encode_state, state_epoch
from stream_triggers.events.state_parts import assemble, header_key, instance_prefix, read_header

__all__ = ["OWED", "PART", "PENDING", "QUARANTINE", "PartitionStore", "SessionAges", "SessionRecord", "StoredSession"]

_OFFSET = struct.Struct(">q")
log = logging.getLogger(__name__)

_SESSION = b"s:"
PART = b"p:"
PENDING = b"q:"
QUARANTINE = b"x:"
OWED = b"d:"
"""``d:`` + changelog key -> the marks (epoch, applied offset) of a purge whose tombstone for that
key is still owed (a crash cut the purge's tombstones short; restore notes what is left)."""
_AGE = b"a:"
_BY_INPUT = b"t:"  # t:<last input at, 8 bytes big-endian><uid>
_BY_FINALIZED = b"f:"  # f:<finalized at><uid>
_AGES = struct.Struct(">qq")
_NO_TIME = bytes(8)  # a packed time of 0: not finalized (and where a negative time is indexed)
_CHECKPOINT = b"m:changelog-offset"
_MAX_EPOCH = b"m:max-epoch"
_LIVE = b"m:sessions"
_LAYOUT = b"m:layout"
_LAYOUT_VERSION = b"ages"  # the ages and their indexes are kept beside the sessions
_MEMTABLE_BYTES = 2 * 1024 * 1024
_MEMTABLES_TOTAL_BYTES = 8 * 1024 * 1024
_BLOCK_CACHE_BYTES = 16 * 1024 * 1024
_BLOOM_BITS_PER_KEY = 10  # about 1 % false positives
_MEMTABLE_BLOOM_RATIO = 0.05  # of the memtable's bytes
_shared: tuple[Cache, WriteBufferManager] | None = None

SessionRecord = tuple[int, bytes]
"""(applied input offset, encoded whole session state)."""


class SessionAges(NamedTuple):
    """When a session's last input was applied and when it was finalized (µs since the epoch; 0: not)."""

    input_at: int
    finalized_at: int = 0


def _options() -> Options:
    """RocksDB options of every partition store: one memory budget for all of a worker's stores.

    A worker opens one store per partition; per-store memtables and block caches made its
    memory grow with the partitions it owns.  The stores share one block cache, index and
    filter blocks inside it (outside it they grow with every compaction, and retention's
    deletes cause many: bench/retention.py), and one write-buffer manager (memtables of
    all stores together stay under ``_MEMTABLES_TOTAL_BYTES``: past it the largest is
    flushed).  Without a WAL a memtable only protects restore time, which the changelog
    bounds anyway, and the worker rarely reads sessions it does not cache, so small
    budgets cost little.  Whole-key bloom filters, in the tables and the memtables, answer
    lookups of keys that are not there (every new session's first input makes three)
    without reading a block.
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
    options.set_memtable_whole_key_filtering(True)
    options.set_memtable_prefix_bloom_ratio(_MEMTABLE_BLOOM_RATIO)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_bloom_filter(_BLOOM_BITS_PER_KEY, False)
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
        options = _options()
        self._db = Rdict(self.path, options)
        if self._db.get(_LAYOUT) != _LAYOUT_VERSION:
            if self._db.get(_CHECKPOINT) is not None:
                # Written before the ages existed: rebuilt from the changelog, which has them.
                self._db.close()
                shutil.rmtree(self.path, ignore_errors=True)
                os.makedirs(self.path, exist_ok=True)
                self._db = Rdict(self.path, options)
            self._db[_LAYOUT] = _LAYOUT_VERSION
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True
        self._cursor: dict[bytes, int] = {}
        """Index prefix -> a time no live entry of that index is below (see :meth:`_index`)."""

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

    def lookup(self, uid: str, header: bytes) -> tuple[str | None, bytes | None, SessionRecord | None]:
        """Why the session is quarantined, the value under its ``header`` key and its whole-session
        record, in one multi-get (a new session's three misses in one call)."""
        reason, header_value, whole = self._db.get([QUARANTINE + uid.encode(), header, _SESSION + uid.encode()])
        return (
            None if reason is None else reason.decode(errors="replace"),
            header_value,
            None if whole is None else (_OFFSET.unpack_from(whole)[0], whole[_OFFSET.size :]),
        )

    def quarantined(self, uid: str) -> str | None:
        """Why the session is quarantined (restore could not read one of its records), or None."""
        reason = self._db.get(QUARANTINE + uid.encode())
        return None if reason is None else reason.decode(errors="replace")

    def get_raw(self, key: bytes) -> bytes | None:
        """The value under a full store key (``p:``, ``q:``, ``s:`` ...)."""
        return self._db.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order.

        Bounded above, so a prefix with nothing under it costs one seek, not a walk over the
        RocksDB tombstones that follow it (purged sessions leave many).
        """
        bound = _bounded(prefix)  # (kept alive while the iterator reads: RocksDB holds its bytes)
        for key, value in self._db.items(from_key=prefix, read_opt=bound):
            if not key.startswith(prefix):
                return
            yield key, value

    def ages(self, uid: str) -> SessionAges | None:
        """When the session's last input was applied and when it was finalized (None: no ages stored)."""
        value = self._db.get(_AGE + uid.encode())
        return None if value is None else SessionAges(*_AGES.unpack(value))

    @property
    def live_sessions(self) -> int:
        """Sessions in the store (a counter kept with every write of ages)."""
        value = self._db.get(_LIVE)
        return 0 if value is None else _OFFSET.unpack(value)[0]

    def idle_since(self, before_us: int, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(uid, last input at)`` whose last input was applied before ``before_us``, oldest first."""
        return self._index(_BY_INPUT, before_us, limit)

    def finalized_since(self, before_us: int, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(uid, finalized at)`` finalized before ``before_us``, oldest first."""
        return self._index(_BY_FINALIZED, before_us, limit)

    def _index(self, prefix: bytes, before_us: int, limit: int) -> list[tuple[str, int]]:
        """Index entries older than ``before_us``, read from the cursor: every live entry is at or past it.

        Without the cursor, each sweep would step over the RocksDB tombstones of every entry
        purged before it (they sit at the old end of the index until a compaction), a cost
        that grows with every session purged.
        """
        found: list[tuple[str, int]] = []
        if limit <= 0:
            return found
        start = self._cursor.get(prefix, 0)
        end = prefix + _OFFSET.pack(max(0, before_us))
        bound = _bounded(end)  # (kept alive while the iterator reads)
        for key in self._db.keys(from_key=prefix + _OFFSET.pack(start), read_opt=bound):
            if key >= end or not key.startswith(prefix):
                break
            found.append((key[len(prefix) + 8 :].decode(), _OFFSET.unpack_from(key, len(prefix))[0]))
            if len(found) >= limit:
                break
        self._cursor[prefix] = found[0][1] if found else max(start, before_us)
        return found

    def purge_keys(self, uid: str) -> tuple[list[bytes], list[bytes]]:
        """What purging the session removes: ``(changelog keys, store keys)``.

        The changelog keys in the order retention tombstones them: the header first (if the
        session has one), its instance parts (committed or pending), its whole-session key
        last (always: a session once stored whole may still have that record).  The store
        keys: every key the session has (parts, pending parts, whole value, quarantine).
        """
        head = header_key(uid)
        store_keys = [PART + head, QUARANTINE + uid.encode(), self.whole_key(uid)]
        parts: set[bytes] = set()
        for prefix in (PART, PENDING):
            for key, _ in self.scan(prefix + instance_prefix(uid)):
                store_keys.append(key)
                parts.add(key[len(prefix) :])
        changelog = [head] if self._db.get(PART + head) is not None else []
        changelog += [*sorted(parts), uid.encode()]
        return changelog, store_keys

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
        ages: Mapping[str, SessionAges | None] | None = None,
    ) -> None:
        """Atomically apply ``(store key, value or None to delete)`` rows, whole-session rows, checkpoint, max epoch.

        ``ages``: uid -> its new ages (None: the session is gone), indexes and live count kept with them.
        """
        batch = WriteBatch(raw_mode=True)
        for key, value in rows:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if ages:
            self._write_ages(batch, ages)
        for uid, applied_offset, state in whole:
            batch.put(_SESSION + uid.encode(), _OFFSET.pack(applied_offset) + state)
        if changelog_checkpoint is not None:
            batch.put(_CHECKPOINT, _OFFSET.pack(changelog_checkpoint))
        if max_epoch is not None:
            batch.put(_MAX_EPOCH, _OFFSET.pack(max_epoch))
        if not batch.is_empty():
            self._db.write(batch, self._write_options)

    def _write_ages(self, batch: WriteBatch, ages: Mapping[str, SessionAges | None]) -> None:
        keys = [uid.encode() for uid in ages]
        previous = self._db.get([_AGE + key for key in keys])
        live = start = self.live_sessions
        put, delete, cursor = batch.put, batch.delete, self._cursor  # (once per session at every checkpoint)
        for key, new, old in zip(keys, ages.values(), previous, strict=True):
            packed = None if new is None else _AGES.pack(*new)
            if old == packed:
                continue
            if old is None:
                live += 1
            else:
                for index in _index_keys(key, old):
                    delete(index)
            if new is None:
                if old is not None:
                    live -= 1
                    delete(_AGE + key)
                continue
            put(_AGE + key, packed)
            for index in _index_keys(key, packed):
                put(index, b"")
            for prefix, at in ((_BY_INPUT, new.input_at), (_BY_FINALIZED, new.finalized_at)):
                if at and at < cursor.get(prefix, 0):
                    cursor[prefix] = at
        if live != start:
            batch.put(_LIVE, _OFFSET.pack(max(0, live)))

    @staticmethod
    def whole_key(uid: str) -> bytes:
        return _SESSION + uid.encode()

    def close(self) -> None:
        self._db.flush()
        self._db.close()

    def close_or_report(self) -> None:
        """Close; a failure (the directory vanished) is logged, not raised: the changelog rebuilds it."""
        try:
            self.close()
        except Exception as exc:
            log.error(
                "could not close the store of partition %d (%s): %s; it is rebuilt from the changelog next time",
                self.partition,
                self.path,
                exc,
            )

    @staticmethod
    def wipe(state_dir: str, topic: str, partition: int) -> None:
        """Delete a partition's store (it is rebuilt from the changelog)."""
        shutil.rmtree(os.path.join(state_dir, f"{topic}-{partition}"), ignore_errors=True)


def _bounded(end: bytes) -> ReadOptions:
    """Read options of an iterator that stops before ``end`` (or, for a prefix, past every key under it)."""
    options = ReadOptions()
    options.set_iterate_upper_bound(end[:-1] + bytes([end[-1] + 1]) if end[-1] < 0xFF else end + b"\xff" * 8)
    return options


def _index_keys(key: bytes, packed: bytes) -> tuple[bytes, ...]:
    """A session's index entries for its packed ages (a time before the epoch is indexed as 0)."""
    input_at, finalized_at = packed[:8], packed[8:]
    by_input = _BY_INPUT + (_NO_TIME if input_at[0] & 0x80 else input_at) + key
    if finalized_at == _NO_TIME:
        return (by_input,)
    return by_input, _BY_FINALIZED + (_NO_TIME if finalized_at[0] & 0x80 else finalized_at) + key
