"""Applying one ``events`` input to its session: outputs, or a dead letter with the reason.

An input is decoded, checked against its key, skipped if its session already reflects
it (effectively-once state), then submitted to a trigger manager built for this input
over the session's entry.  The manager's observer is the output sink, so the outputs
are exactly the effects of the transitions it ran; an input that fails half-way leaves
the state as it was and emits only its dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime

from stream_triggers.engine import EngineError
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.records import input_from_record, uid_of_key
from stream_triggers.events.state_format import StateFormatError, encode_state
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.manager import TriggerManager
from stream_triggers.stream.outputs import Output, OutputSink
from stream_triggers.stream.partition import Partition, SessionEntry, changelog_rows
from stream_triggers.stream.session import WorkerRunners, WorkerSessionStorage
from stream_triggers.stream.settings import WorkerSettings, WorkerStats

__all__ = ["InputApplier", "Rejected"]

log = logging.getLogger(__name__)


class Rejected(StreamTriggersError):
    """An input that cannot be applied, with its dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InputApplier:
    """Applies inputs for one worker; one manager per input (nothing to keep or break up)."""

    def __init__(
        self, manager_class: type[TriggerManager], sink: OutputSink, stats: WorkerStats, settings: WorkerSettings
    ) -> None:
        self.manager_class = manager_class
        self.max_payload = settings.max_payload_bytes
        self.max_session = settings.max_session_bytes
        self.max_part = settings.max_part_bytes
        self.max_record = settings.max_record_bytes
        self.purging = bool(settings.session_retention_s or settings.session_ttl_s)
        """Sessions end (retention, TTL): an input for an instance of a stateless session says so."""
        self.sink = sink
        self.stats = stats
        self.runners = WorkerRunners(sink)
        self.produced_at: list[int] = []
        """``produced_at`` (µs) of the inputs applied in this batch (for the latency histogram)."""
        self._event_at = datetime(1970, 1, 1)

    def _clock(self) -> datetime:
        """Inputs are stamped with their event's ``produced_at``: replays stay deterministic."""
        return self._event_at

    engine = "python"

    def apply_batch(self, partition: Partition, records: list[tuple[int, bytes | None, bytes | None]]) -> list[Output]:
        """Apply one partition's ``(offset, key, value)`` records in order (the engines' common seam)."""
        outputs: list[Output] = []
        for offset, key, value in records:
            outputs.extend(self.apply(partition, offset, key, value))
        return outputs

    def encode(self, partitions: Iterable[Partition]) -> None:
        """Before a checkpoint (nothing to do: the checkpoint encodes Python sessions itself)."""

    def settle(self, partitions: list[Partition]) -> None:
        """After a checkpoint (nothing to do: the Python engine's sessions live in the partitions)."""

    def apply(self, partition: Partition, offset: int, key: bytes | None, value: bytes | None) -> list[Output]:
        """Apply one input; return its output records (or its dead letter)."""
        stats = self.stats
        try:
            if key is None:
                raise Rejected("missing_key", "events records must be keyed by session UID")
            if value is not None and len(value) > self.max_payload:
                raise Rejected(
                    "payload_too_large", f"the record has {len(value)} bytes; the limit is {self.max_payload}"
                )
            uid = key.decode()
            type_name, record = decode(value or b"")
            if record.get("session_uid") != uid:
                raise Rejected(
                    "key_mismatch", f"record session_uid {record.get('session_uid')!r} differs from key {uid!r}"
                )
            entry = partition.session(uid)
            if offset <= entry.applied_offset:
                stats.events_skipped_applied += 1
                skipped = stats.skipped_by_type
                skipped[type_name] = skipped.get(type_name, 0) + 1
                return []
            event = input_from_record(type_name, record)
        except (Rejected, CodecError, EngineError, StateFormatError, UnicodeDecodeError) as exc:
            return [self.dead_letter(partition, offset, key, value, reason_of(exc), str(exc))]
        sink = self.sink
        sink.begin(uid, key, record["event_id"], record["produced_at"], f"{partition.number}:{offset}", now_us())
        before = entry.state
        self._event_at = event.at
        manager = self.manager_class(
            WorkerSessionStorage(uid, entry), runners=self.runners, clock=self._clock, observer=sink.effects
        )
        before_bound, before_encoded = entry.size_bound, entry.encoded
        try:
            manager.submit(event)
            self._check_sizes(partition, key, len(value or b""), entry, offset)
        except Exception as exc:
            entry.state, entry.size_bound, entry.encoded = before, before_bound, before_encoded
            sink.discard()
            if not isinstance(exc, (EngineError, Rejected)):
                log.exception("applying %s at %d:%d failed", type_name, partition.number, offset)
            return [self.dead_letter(partition, offset, key, value, reason_of(exc), str(exc))]
        entry.applied_offset = offset
        partition.dirty[uid] = entry
        stats.events_applied += 1
        stats.outputs += len(sink.outputs)
        applied = stats.applied_by_type
        applied[type_name] = applied.get(type_name, 0) + 1
        self.produced_at.append(record["produced_at"])
        return sink.outputs

    def _check_sizes(self, partition: Partition, key: bytes, input_size: int, entry: SessionEntry, offset: int) -> None:
        """Refuse the input (before anything is produced) if a part, the session or an output would not fit.

        The exact check encodes the parts the batch would write (what the checkpoint does
        anyway, reused through ``entry.encoded``).  It runs only once the session may hold a
        part near its limit: the entry keeps an upper bound of the session's size, grown by
        each input by a generous bound of what one input can add - its own bytes plus 2 KiB,
        once per task it may reach and twice more (result and latest kwargs) - and no part
        can be larger than its session, so ordinary sessions never pay for it.
        """
        for topic, _key, value in self.sink.outputs:
            if len(value) + len(key) > self.max_record:
                raise Rejected(
                    "output_too_large",
                    f"an output record for {topic} would have {len(value)} bytes; the limit is {self.max_record}",
                )
        bound = entry.size_bound + (input_size + 2048) * (len(entry.state.tasks) + 2)
        entry.size_bound = bound
        entry.encoded = None
        if bound > self.max_session:
            size = len(encode_state(entry.state, partition.epoch))
            if size > self.max_session:
                raise Rejected(
                    "session_too_large",
                    f"the session's state would grow to {size} bytes; the limit is {self.max_session}",
                )
            entry.size_bound = size
        if entry.size_bound <= self.max_part:
            return
        uid = key.decode()
        saved, entry.applied_offset = entry.applied_offset, offset
        try:
            rows = changelog_rows(uid, entry, partition.epoch)
        finally:
            entry.applied_offset = saved
        for part_key, part in rows:
            if part is not None and len(part) > self.max_part:
                raise Rejected(
                    "session_too_large",
                    f"the session's part {part_key[len(uid) + 1 :].decode(errors='replace')!r} would grow to "
                    f"{len(part)} bytes; the limit per part (header or instance) is {self.max_part}",
                )
        entry.encoded = (entry.state, offset, rows[:-1])

    def dead_letter(
        self, partition: Partition, offset: int, key: bytes | None, value: bytes | None, reason: str, error: str
    ) -> Output:
        """Count, log and build the dead letter of the input at ``partition:offset``.

        On a worker that purges sessions, an input naming an instance of a session that has
        no state (purged, or never configured) gets its own reason, ``session_purged``.
        """
        uid = uid_of_key(key)
        if reason == "unknown_instance" and self.purging and _stateless(partition, uid):
            reason = "session_purged"
            error = f"session {uid!r} has no state (purged by retention or TTL, or never configured): {error}"
        type_name, instance = _describe(value)
        stats = self.stats
        stats.dead_letters[reason] = stats.dead_letters.get(reason, 0) + 1
        stats.dead_letters_by_type[type_name] = stats.dead_letters_by_type.get(type_name, 0) + 1
        log.warning(
            "dead letter %s at %d:%d: %s",
            reason,
            partition.number,
            offset,
            error,
            extra={
                "session_uid": uid,
                "instance": instance,
                "reason": reason,
                "record_type": type_name,
                "partition": partition.number,
                "offset": offset,
            },
        )
        record = self.sink.dead_letter(partition.number, offset, key, value, reason, error, now_us())
        if len(record[2]) + len(key or b"") > self.max_record:
            # The original stays in the events topic at partition:offset; the dead letter points there.
            error = f"{error} (the original record is too large to copy here: read it at {partition.number}:{offset})"
            record = self.sink.dead_letter(partition.number, offset, key, None, reason, error, now_us())
        return record


def _stateless(partition: Partition, uid: str | None) -> bool:
    """Whether the cached session ``uid`` holds nothing: no input applied, no task configured."""
    entry = None if uid is None else partition.sessions.get(uid)
    return entry is not None and entry.applied_offset < 0 and not entry.state.tasks


def reason_of(exc: BaseException) -> str:
    """The dead-letter reason of an exception raised while applying an input."""
    if isinstance(exc, UnicodeDecodeError):  # its own ``reason`` is prose ("invalid start byte"), not a code
        return "undecodable"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(exc, StateFormatError):
        return "corrupt_state"
    return "apply_failed"


def _describe(value: bytes | None) -> tuple[str, str | None]:
    """Record type and instance of a rejected input, for counting and logging (error path only)."""
    try:
        type_name, record = decode(value or b"")
    except CodecError:
        return "unknown", None
    instance = record.get("instance")
    return type_name, instance if isinstance(instance, str) else None


def now_us() -> int:
    return time.time_ns() // 1000
