"""Restore: bring each newly owned partition's store up to its changelog partition's end.

The end is found by fetching to EOF (:func:`~stream_triggers.kafka.clients.read_to_end`),
not by ListOffsets: Tansu's high watermark can be wrong, a fetch's EOF is not.  Records
are read from the store's checkpoint on and written in one RocksDB batch per fetched
batch, with the new checkpoint, so an interrupted restore resumes where it stopped.

The rules are the :class:`~stream_triggers.events.changelog_reader.ChangelogReader`'s
(docs/fencing.md, docs/state-format.md): a record stamped with an epoch below one
already seen in its partition is stale and skipped; a header or whole-session record
replaces the session only if it is newer (owner epoch, then applied offset); an
instance part counts once a header at least as new was read (until then it waits under
``q:``); a tombstone removes its part, a header's the whole session.  So no restore ever
takes a session back.  A purge's tombstone (marked with the purging owner's epoch and the
applied offset it ends, :mod:`~stream_triggers.events.tombstones`) removes the whole
session, on whichever of its keys it is, unless it is stale (a lower epoch than one
seen) or a newer state of the session was read: a purged session never comes back.
The store's ages (last input, finalization: what retention counts from) are rebuilt
from the header and whole-session records.

It is strict, never a quiet skip that would leave an older state in place: a record it
cannot read **quarantines** its session (``x:`` + uid in the store, with the reason;
counted in ``RestoreResult.quarantined``): from then on every input of that session is
dead-lettered (``corrupt_state``) instead of being applied to a state that may be
missing something, while the partition's other sessions flow.  A record whose key names
no session stops the restore of the partition with :class:`CorruptChangelog` (what was
read before it is kept).  docs/state-format.md, "Unreadable records".

Before a store is trusted at all, :func:`stores_of_another_changelog` checks that its
checkpoint belongs to *this* changelog: every write of a checkpoint also writes the
identity of the last changelog record the store reflects (its offset and a digest of
its key and value, ``m:changelog-record``), and the record at that offset must be that
record.  A recreated changelog, a broker that lost its data or another cluster fails
that check however far the new changelog has grown (docs/faults.md, "Which changelog
a store reflects").
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.state_format import (
    KIND_HEADER,
    KIND_INSTANCE,
    StateFormatError,
    decode_state,
    state_epoch,
    state_kind,
)
from stream_triggers.events.state_parts import header_key, instance_prefix, part_version, read_header, split_key
from stream_triggers.events.tombstones import finalized_at, tombstone_ends, tombstone_marks
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka.clients import read_to_end
from stream_triggers.stream.changelog_identity import CHANGELOG_RECORD, changelog_record_row
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.store import OWED, PART, PENDING, QUARANTINE, PartitionStore, SessionAges
from stream_triggers.types import SESSION_FINALIZED

__all__ = ["CorruptChangelog", "RestoreResult", "restore"]

log = logging.getLogger(__name__)

_OFFSET = struct.Struct(">q")
_NONE = (-1, -1)


class CorruptChangelog(StreamTriggersError):
    """A changelog record restore cannot read: the partition's restore stops there."""


@dataclass
class RestoreResult:
    records: int = 0
    stale: int = 0
    """Records skipped: stamped with an epoch below one seen before them, or older than the store's."""
    quarantined: int = 0
    """Sessions quarantined because one of their records could not be read."""
    seconds: float = 0.0
    complete: bool = True
    """False when ``should_stop`` ended the read early (the stores hold a consistent prefix)."""


class _Writes:
    """One partition's writes of a fetched batch, over its store (reads see them)."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.rows: dict[bytes, bytes | None] = {}
        self.pending: dict[str, set[bytes]] = {}
        """uid -> ``q:`` keys written here (so a header finds its parts without scanning ``rows``)."""
        self.owing = next(store.scan(OWED), None) is not None
        """Whether any tombstone is owed (only then is each record's key looked up)."""
        self.ages: dict[str, SessionAges | None] = {}
        """uid -> the ages its kept record says (None: the session was removed)."""

    def get(self, key: bytes) -> bytes | None:
        rows = self.rows
        return rows[key] if key in rows else self.store.get_raw(key)

    def pending_of(self, uid: str) -> list[bytes]:
        """The ``q:`` keys of ``uid``'s instance parts waiting for a header."""
        keys = {key for key, _ in self.store.scan(PENDING + instance_prefix(uid))}
        keys.update(self.pending.get(uid, ()))
        return sorted(key for key in keys if self.get(key) is not None)

    def scan(self, prefix: bytes) -> Iterator[bytes]:
        """Keys starting with ``prefix`` that exist (stored or written here)."""
        rows = self.rows
        keys = {key for key, _ in self.store.scan(prefix)}
        keys.update(key for key in rows if key.startswith(prefix))
        return iter(sorted(key for key in keys if (rows[key] is not None if key in rows else True)))

    def put(self, key: bytes, value: bytes | None) -> None:
        self.rows[key] = value

    def version(self, uid: str) -> tuple[int, int]:
        """``(epoch, applied offset)`` of the session as restored so far."""
        header = self.get(PART + header_key(uid))
        version = _NONE if header is None else part_version(header)
        whole = self.get(PartitionStore.whole_key(uid))
        if whole is not None:
            version = max(version, (state_epoch(whole[_OFFSET.size :]), _OFFSET.unpack_from(whole)[0]))
        return version

    def owe(self, uid: str, marks: tuple[int, int]) -> None:
        """A purge began: note a tombstone owed for every changelog key the session has (its
        header, instance parts, whole key); each of the purge's own tombstones read later
        settles one, and the retention sweep writes what is still owed."""
        keys = {uid.encode()}
        if self.get(PART + header_key(uid)) is not None:
            keys.add(header_key(uid))
        for prefix in (PART, PENDING):
            keys.update(key[len(prefix) :] for key in self.scan(prefix + instance_prefix(uid)))
        packed = _OFFSET.pack(marks[0]) + _OFFSET.pack(marks[1])
        for key in keys:
            self.put(OWED + key, packed)
        self.owing = True

    def drop_session(self, uid: str) -> None:
        """The session was removed from the changelog: its parts, pending parts and quarantine go."""
        self.put(QUARANTINE + uid.encode(), None)
        self.put(PartitionStore.whole_key(uid), None)
        self.drop_parts(uid)
        self.ages[uid] = None

    def drop_parts(self, uid: str) -> None:
        self.pending.pop(uid, None)
        self.put(PART + header_key(uid), None)
        for prefix in (PART + instance_prefix(uid), PENDING + instance_prefix(uid)):
            for key in list(self.scan(prefix)):
                self.put(key, None)


def _take(
    writes: _Writes, key: bytes | None, value: bytes | None, max_epoch: int, headers: Callable[[], Any]
) -> tuple[str, int, bool]:
    """Apply one changelog record to ``writes``: ``(session uid, epoch seen, kept)``.

    ``headers`` gives the record's headers (read only where they matter).  Raises
    ``CodecError`` / ``StateFormatError`` for a record that is not readable.
    """
    if key is None:
        raise StateFormatError("a changelog record without a key")
    part = split_key(key)
    uid = part.uid
    if writes.owing and writes.get(OWED + key) is not None:
        writes.put(OWED + key, None)  # a later record of the key: nothing owed for it any more
    if value is None:  # a tombstone
        marks = tombstone_marks(headers())
        if marks is not None:  # a purge: the whole session, unless stale or older than what is kept
            try:
                version = writes.version(uid)
            except StateFormatError:
                version = _NONE  # an unreadable (quarantined) session: the purge ends it all the same
            if marks[0] < max_epoch or not tombstone_ends(marks, version):
                return uid, max_epoch, False
            writes.owe(uid, marks)
            writes.put(OWED + key, None)
            writes.drop_session(uid)
            return uid, marks[0], True
        if part.part == "instance":
            writes.put(PART + key, None)
            writes.put(PENDING + key, None)
        else:
            writes.drop_session(uid)
        return uid, max_epoch, True
    _, snapshot = decode(value)
    if snapshot["session_uid"] != uid:
        raise StateFormatError(f"a record of session {snapshot['session_uid']!r} under the key {key!r}")
    state = snapshot["state"]
    epoch = state_epoch(state)
    if epoch < max_epoch:
        log.warning(
            "skipping a stale changelog record of %s: owner epoch %d, its partition is at %d", uid, epoch, max_epoch
        )
        return uid, max_epoch, False
    kind = state_kind(state)
    if kind == KIND_INSTANCE:
        if part.part != "instance":
            raise StateFormatError(f"an instance part under the key {key!r}")
        version = part_version(state)
        header = writes.get(PART + header_key(uid))
        if header is not None and version <= part_version(header):
            writes.put(PART + key, state)
            writes.put(PENDING + key, None)
        else:
            writes.put(PENDING + key, state)
            writes.pending.setdefault(uid, set()).add(PENDING + key)
        return uid, epoch, True
    version = (epoch, snapshot["applied_offset"])
    if version <= writes.version(uid):
        return uid, epoch, False
    if kind == KIND_HEADER:
        if part.part != "header":
            raise StateFormatError(f"a session header under the key {key!r}")
        if part_version(state) != version:
            raise StateFormatError("a header whose applied offset differs from its record's")
        writes.put(PART + key, state)
        writes.put(PartitionStore.whole_key(uid), None)
        writes.ages[uid] = _ages(snapshot, headers, state, kind)
        for pending in writes.pending_of(uid):
            data = writes.get(pending)
            if data is not None and part_version(data) <= version:
                writes.put(PART + pending[len(PENDING) :], data)
                writes.put(pending, None)
    else:  # a whole session (formats 1-3, 4/S): it replaces the parts
        if part.part != "whole":
            raise StateFormatError(f"a whole session under the key {key!r}")
        if writes.get(PART + header_key(uid)) is not None:  # (a worker of an older version wrote it)
            writes.drop_parts(uid)
        writes.put(PartitionStore.whole_key(uid), _OFFSET.pack(snapshot["applied_offset"]) + state)
        writes.ages[uid] = _ages(snapshot, headers, state, kind)
    return uid, epoch, True


_FINALIZED_NAME = SESSION_FINALIZED.encode()
"""Found in the bytes of every finalized state (a key of its latest kwargs): a quick test
before decoding, for records without the ``finalized-at`` header."""


def _ages(snapshot: dict[str, Any], headers: Callable[[], Any], state: bytes, kind: int) -> SessionAges:
    """The session's ages from its newest header or whole record: its ``produced_at``, and when
    it was finalized, from the ``finalized-at`` header.

    A record written before that header existed (before retention) may hold a finalized
    session all the same: then its ``produced_at`` stands for the finalization - no earlier
    than it (a finalized session is written at its finalization or after), so retention
    never purges it early, rather than never (TTL only).
    """
    input_at = snapshot["produced_at"]
    at = finalized_at(headers())
    if not at and _FINALIZED_NAME in state and SESSION_FINALIZED in _latest_kwargs(state, kind):
        at = input_at
    return SessionAges(input_at, at)


def _latest_kwargs(state: bytes, kind: int) -> dict[str, Any]:
    """(A header's are read as they are: not a map, they finalize nothing - the session's own
    read, later, finds what is wrong with them.)"""
    latest = read_header(state).body[3] if kind == KIND_HEADER else decode_state(state).latest_kwargs
    return latest if isinstance(latest, dict) else {}


def _headers(message: Any) -> Callable[[], Any]:
    """The message's headers, read when asked (a record-like object without them has none)."""
    return getattr(message, "headers", _no_headers)


def _no_headers() -> None:
    return None


def _session_of(key: bytes | None) -> str | None:
    """The session a changelog key names, or None."""
    if key is None:
        return None
    try:
        return split_key(key).uid
    except StateFormatError:
        return None


def restore(
    client: Consumer,
    changelog: str,
    partitions: list[Partition],
    timeout_s: float,
    *,
    on_progress: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RestoreResult:
    """Replay ``changelog`` into each partition's store, from its checkpoint to the end.

    Raises :class:`~stream_triggers.kafka.clients.ReadTimeout` when a partition does
    not reach its end within ``timeout_s``, :class:`CorruptChangelog` at a record it
    cannot read (the records before it are kept, with the checkpoint just before it).
    """
    result = RestoreResult()
    if not partitions:
        return result
    started = time.monotonic()
    by_number = {p.number: p for p in partitions}
    last = {p.number: p.store.changelog_checkpoint for p in partitions}
    max_epoch = {p.number: p.store.max_epoch for p in partitions}
    start = {number: offset + 1 for number, offset in last.items()}
    for batch in read_to_end(client, changelog, start, timeout_s, on_progress=on_progress, should_stop=should_stop):
        writes: dict[int, _Writes] = {}
        try:
            for message in batch:
                number, offset = message.partition(), message.offset()
                if offset <= last[number]:
                    continue
                partition = by_number[number]
                pending = writes.get(number)
                if pending is None:
                    pending = writes[number] = _Writes(partition.store)
                key = message.key()
                try:
                    uid, epoch, kept = _take(pending, key, message.value(), max_epoch[number], _headers(message))
                except (CodecError, StateFormatError, KeyError, TypeError) as exc:
                    where = f"the changelog record {changelog}[{number}] at offset {offset} (key {key!r})"
                    uid = _session_of(key)
                    if uid is None:
                        raise CorruptChangelog(
                            f"cannot restore partition {number}: {where} is unreadable and names no session: "
                            f"{exc}; the restore stops here (docs/state-format.md, Unreadable records)"
                        ) from exc
                    reason = f"{where} is unreadable: {exc}"
                    log.error("quarantining session %s: %s", uid, reason, extra={"session_uid": uid})
                    pending.put(QUARANTINE + uid.encode(), reason.encode())
                    result.quarantined += 1
                    partition.forget(uid)
                    last[number] = offset
                    pending.put(*changelog_record_row(offset, key, message.value()))
                    continue
                last[number] = offset
                pending.put(*changelog_record_row(offset, key, message.value()))
                max_epoch[number] = epoch
                if kept:
                    partition.forget(uid)
                else:
                    result.stale += 1
        finally:
            for number, partition_writes in writes.items():
                partition_writes.store.write_parts(
                    partition_writes.rows.items(), last[number], max_epoch[number], ages=partition_writes.ages
                )
                result.records += len(partition_writes.rows) - (CHANGELOG_RECORD in partition_writes.rows)
    result.complete = not (should_stop is not None and should_stop())
    result.seconds = time.monotonic() - started
    return result
