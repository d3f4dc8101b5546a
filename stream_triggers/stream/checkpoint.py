"""The commit order of a batch: what becomes durable, in which order, and why.

After the batch's inputs were applied (their outputs and dead letters produced):

1. flush: every output and dead letter is acknowledged by the broker;
   then make sure the worker still owns its partitions (a membership probe when the
   batch took long enough for the group to have moved on: a frozen process); if not,
   the batch is dropped here, before any state is published (docs/fencing.md);
2. produce, per session the batch changed, the parts it changed (new or changed
   instances, a tombstone per instance removed) and then its header (the applied
   offset of the last input, configurations, latest kwargs), every one stamped with the
   owner epoch and that applied offset (docs/state-format.md) - or, for a small
   session never written in parts, one whole-session record - and flush again - so a
   state never becomes durable before the outputs it caused;
3. write those parts (a session stored in one whole-session value loses it: it is in
   parts now) and the changelog checkpoint to RocksDB in one write batch;
4. commit the input offsets.

The worker's loop does not wait for any of it: :meth:`Checkpoint.begin` encodes the state
records of the batches in hand and leaves the steps pending; the loop goes on applying
the next batches (their outputs may leave, their states are the next checkpoint's) and
:meth:`Checkpoint.complete` takes steps 1-2 once the broker has acknowledged the outputs
the checkpoint covers, and steps 3-4 once it has acknowledged its state records.  One
checkpoint is in flight at a time; a revoke, a stop or the next checkpoint completes it
first (waiting); partitions lost while it is in flight discard it (nothing of it reaches
the store or the offsets, the next owner restores from the changelog).  Until it is
complete its sessions stay cached: the store does not hold their states yet.

A crash between any two steps loses nothing: the inputs after the committed offsets
are consumed again, and those at or below a session's applied offset (durable in the
changelog with the state) are skipped, so no input changes a state twice; outputs are
at least once, each with a deterministic ``event_id``.  A record that cannot be
delivered stops the worker before step 4 (nothing committed): a restart re-applies
the batch.

Step 3 also keeps each changed session's ages (its last input's time, and when it was
finalized: the header record's ``produced_at`` and ``finalized-at`` header), from which
retention counts.  Purging sessions (retention, TTL: :mod:`~stream_triggers.stream.retention`)
follows the same order, between batches: ``SessionPurged`` records, flush; the
membership check; a tombstone for every changelog key of each session, flush; then one
RocksDB batch deleting them.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream_triggers.events.codec import encode
from stream_triggers.events.state_format import encode_state
from stream_triggers.events.tombstones import finalized_headers
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics
from stream_triggers.stream import faults
from stream_triggers.stream.changelog_identity import changelog_record_row
from stream_triggers.stream.partition import Partition, SessionEntry, changelog_rows
from stream_triggers.stream.store import PART, PartitionStore, SessionAges
from stream_triggers.types import SESSION_FINALIZED

__all__ = [
    "WHOLE_SESSION_BYTES",
    "Checkpoint",
    "DeliveryFailed",
    "OutputAcks",
    "PartitionsLost",
    "PendingCheckpoint",
    "membership_check",
]

log = logging.getLogger(__name__)

_OFFSET = struct.Struct(">q")

WHOLE_SESSION_BYTES = 16384
"""A session whose whole state is at most this, and that was never written in parts, is
written as one whole-session record: for small sessions, one record costs less than a
header and parts (each with its envelope and key).  Past it, the session goes to parts for good."""

FLUSH_WAIT_S = 30.0
"""One flush wait; a slow broker is waited for in rounds of this (librdkafka keeps retrying)."""


class DeliveryFailed(StreamTriggersError, KafkaException):
    """A record the broker refused for good: the batch is not committed."""


class PartitionsLost(StreamTriggersError):
    """The group moved the partitions away while the batch was in hand: it must not be published."""


class OutputAcks:
    """The outputs (and dead letters) produced between two checkpoints: how many the broker
    has not acknowledged yet, and its refusals."""

    __slots__ = ("unacked", "errors")

    def __init__(self) -> None:
        self.unacked = 0
        self.errors: list[str] = []

    def delivered(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of one output (the producer's ``on_delivery``)."""
        self.unacked -= 1
        if error is not None:
            self.errors.append(str(error))


class PendingCheckpoint:
    """A begun checkpoint: the outputs it waits for, its state records (None once produced),
    the membership check asked before producing them, per partition number the store rows
    and ages to write, and per partition the ``events`` offset to commit."""

    __slots__ = ("outputs", "records", "still_owner", "rows", "ages", "offsets")

    def __init__(
        self,
        outputs: OutputAcks,
        records: list[tuple[int, bytes, bytes | None, Any]] | None,
        still_owner: Callable[[], bool] | None,
        rows: dict[int, list[tuple[bytes, bytes | None]]],
        ages: dict[int, dict[str, SessionAges | None]],
        offsets: list[tuple[Partition, int | None]],
    ) -> None:
        self.outputs, self.records, self.still_owner = outputs, records, still_owner
        self.rows, self.ages, self.offsets = rows, ages, offsets


class Checkpoint:
    """Steps 1-4 above for one worker's producer and consumer."""

    def __init__(
        self, producer: Producer, consumer: Consumer, topics: Topics, whole_session_bytes: int = WHOLE_SESSION_BYTES
    ) -> None:
        self.producer = producer
        self.whole_session_bytes = whole_session_bytes
        self.consumer = consumer
        self.topics = topics
        self.delivery_errors: list[str] = []
        self._changelog_offsets: dict[int, int] = {}
        self.outputs = OutputAcks()
        """The outputs produced since the last checkpoint began (the worker counts them in)."""
        self._unacked = 0
        """State records produced and not yet acknowledged."""
        self.pending: PendingCheckpoint | None = None
        """The checkpoint whose state records were produced, its store write and commit to do."""
        self._changelog_records: dict[int, tuple[int, bytes, bytes | None]] = {}
        """partition -> its newest changelog record ``(offset, key, value)``, which the store's
        identity row names (changelog_identity.py; its digest is made once, at the store write)."""

    def on_output_delivery(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of outputs and dead letters (only errors matter)."""
        if error is not None:
            self.delivery_errors.append(str(error))

    def _on_state_delivery(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of a checkpoint's state record (counted: :meth:`complete` waits for them all)."""
        self._unacked -= 1
        self.on_changelog_delivery(error, message)

    def on_changelog_delivery(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of changelog records (states, tombstones): the last offset per partition."""
        if error is not None:
            self.delivery_errors.append(str(error))
        else:
            partition, offset = message.partition(), message.offset()
            if offset > self._changelog_offsets.get(partition, -1):
                self._changelog_offsets[partition] = offset
                self._changelog_records[partition] = (offset, message.key(), message.value())

    def write_store(
        self,
        partition: Partition,
        rows: list[tuple[bytes, bytes | None]],
        ages: dict[str, SessionAges | None] | None = None,
    ) -> None:
        """Write ``rows`` to the partition's store with the checkpoint: the changelog offset
        reached and the row naming that record (changelog_identity.py: restore checks it is
        still there), in one batch."""
        number = partition.number
        newest = self._changelog_records.get(number)
        if newest is not None:
            rows = [*rows, changelog_record_row(*newest)]
        partition.store.write_parts(rows, self._changelog_offsets.get(number), partition.epoch, ages=ages)

    def commit(self, partitions: Iterable[Partition], still_owner: Callable[[], bool] | None = None) -> None:
        """Make the batch in hand durable, steps 1-4 at once (revoke, stop; the loop pipelines them)."""
        self.begin(partitions, still_owner)
        self.complete(wait=True)

    def begin(self, partitions: Iterable[Partition], still_owner: Callable[[], bool] | None = None) -> None:
        """Encode the state records of the batches in hand; steps 1-4 follow in :meth:`complete`
        (a previous pending checkpoint is completed first).  The outputs produced from here on
        belong to the next checkpoint."""
        self.complete(wait=True)  # one in flight at a time: stores and offsets move in order
        partitions = list(partitions)
        outputs, self.outputs = self.outputs, OutputAcks()
        records: list[tuple[int, bytes, bytes | None, Any]] = []
        rows_by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        ages_by_partition: dict[int, dict[str, SessionAges | None]] = {}
        now = time.time_ns() // 1000
        for partition in partitions:
            if not partition.dirty:
                continue
            rows = rows_by_partition[partition.number] = []
            ages = ages_by_partition[partition.number] = {}
            number, epoch = partition.number, partition.epoch
            for uid, entry in partition.dirty.items():
                native = entry.native_rows
                finalized = _finalized_at(
                    partition.store,
                    uid,
                    entry,
                    now,
                    SESSION_FINALIZED in entry.state.latest_kwargs if native is None else native[2],
                )
                ages[uid] = SessionAges(now, finalized)  # the ages retention counts from (stream/retention.py)
                headers = finalized_headers(finalized)
                first = len(records)
                if native is not None:  # encoded by the native core, envelopes included; the header last
                    store_rows, snapshots, _ = native
                    rows.extend(store_rows)
                    records.extend((number, key, snapshot, None) for key, snapshot in snapshots)
                else:
                    whole = self._small_whole(entry, epoch)
                    if whole is not None:  # one whole-session record
                        rows.append((PartitionStore.whole_key(uid), _OFFSET.pack(entry.applied_offset) + whole))
                        parts: list[tuple[bytes, bytes | None]] = [(uid.encode(), whole)]
                    else:
                        if entry.committed is None:  # stored whole (or new): in parts from now on
                            rows.append((PartitionStore.whole_key(uid), None))
                        parts = changelog_rows(uid, entry, epoch)
                        rows.extend((PART + key, value) for key, value in parts)
                    for key, value in parts:
                        if value is not None:
                            snapshot = {
                                "session_uid": uid,
                                "produced_at": now,  # the last input's time, from which --session-ttl counts
                                "state": value,
                                "input_partition": number,
                                "applied_offset": entry.applied_offset,
                            }
                            value = encode("SessionSnapshot", snapshot)
                        records.append((number, key, value, None))
                if headers is not None and len(records) > first:  # the header (or whole record), last: finalized-at
                    records[-1] = (*records[-1][:3], headers)
            for entry in partition.dirty.values():  # (what the store will hold: later batches write their changes)
                entry.encoded = entry.native_rows = None
                if not entry.whole:
                    entry.committed = entry.state
            partition.dirty.clear()
        offsets = [(partition, partition.commit_offset) for partition in partitions]
        for partition in partitions:
            partition.skip_rest = False
        self.pending = PendingCheckpoint(outputs, records, still_owner, rows_by_partition, ages_by_partition, offsets)

    def complete(self, wait: bool) -> bool:
        """Move the pending checkpoint on: steps 1-2 once its outputs are acknowledged, steps
        3-4 once its state records are; waiting for them (``wait``), or only as far as the
        broker already acknowledged (False: not complete yet, the loop asks again).

        Raises :class:`PartitionsLost` (its state records not published, nothing committed)
        when ``still_owner`` says the worker lost its partitions.
        """
        pending = self.pending
        if pending is None:
            return True
        if pending.records is not None:
            if not self._acknowledged(wait, lambda: pending.outputs.unacked <= 0):  # 1
                return False
            self._raise_delivery_errors(pending.outputs.errors)
            records, pending.records = pending.records, None
            if records:
                faults.reached("before-changelog")
                if pending.still_owner is not None and not pending.still_owner():
                    self.pending = None
                    raise PartitionsLost("the group moved this worker's partitions away during the batch")
            self._produce_state(records)  # 2
        if not self._acknowledged(wait, lambda: self._unacked <= 0):
            return False
        self.pending = None
        if pending.rows:
            faults.reached("before-store")
        commits = []
        for partition, offset in pending.offsets:
            rows = pending.rows.get(partition.number)
            if rows:  # 3
                self.write_store(partition, rows, pending.ages[partition.number])
            if offset is not None:
                commits.append(TopicPartition(self.topics.events, partition.number, offset))
                partition.committed = offset
        if commits:  # 4
            faults.reached("before-commit")
            self.consumer.commit(offsets=commits, asynchronous=True)
            faults.reached("after-commit")
        return True

    def _acknowledged(self, wait: bool, done: Callable[[], bool]) -> bool:
        if wait:
            self.flush()
            self._unacked = 0  # (a flush serves every delivery report)
            return True
        self.producer.poll(0)  # (serves delivery reports)
        self._raise_delivery_errors(self.delivery_errors)
        return done()

    def _produce_state(self, records: list[tuple[int, bytes, bytes | None, Any]]) -> None:
        produce, changelog, on_delivery = self.producer.produce, self.topics.changelog, self._on_state_delivery
        for number, key, value, headers in records:
            if headers is None:
                produce(changelog, value, key, number, on_delivery=on_delivery)
            else:
                produce(changelog, value, key, number, on_delivery=on_delivery, headers=headers)
        self._unacked += len(records)

    def discard(self) -> None:
        """Forget the pending checkpoint (the partitions were lost): its records may be in the
        changelog, but no store and no offset moves; the next owner restores from the changelog."""
        self.pending = None

    def _small_whole(self, entry: SessionEntry, epoch: int) -> bytes | None:
        """The session's whole-state value if it is written whole this batch (small, never in parts)."""
        entry.whole = False
        if entry.committed is not None or entry.size_bound > self.whole_session_bytes * 64:
            return None
        whole = encode_state(entry.state, epoch)
        if len(whole) > self.whole_session_bytes:
            return None
        entry.whole = True
        return whole

    def flush(self) -> None:
        """Wait until every record produced so far is acknowledged; raise on a refused one."""
        while True:
            remaining = self.producer.flush(FLUSH_WAIT_S)
            self._raise_delivery_errors(self.delivery_errors)
            if not remaining:
                return
            log.warning("still waiting for the broker to acknowledge %d records", remaining)

    @staticmethod
    def _raise_delivery_errors(errors: list[str]) -> None:
        if errors:
            shown = errors[:3]
            errors.clear()
            raise DeliveryFailed(f"could not deliver records; errors: {shown}")


def membership_check(
    consumer: Consumer,
    generation: Callable[[], int],
    topic: str,
    owned: Iterable[Partition],
    batch_began: float,
    quick_s: float,
) -> Callable[[], bool]:
    """Whether the worker still owns the partitions ``owned`` of ``topic``, asked right
    before a checkpoint publishes state (docs/fencing.md).

    Cheap when the batch was quick (began less than ``quick_s``, half a session timeout,
    ago): the group cannot have moved on.  A slower batch (a freeze: SIGSTOP, a GC pause, a
    stalled VM) asks the coordinator: the last committed offsets are committed again,
    synchronously, which the broker refuses from a member it no longer counts.
    """

    def still_owner() -> bool:
        if time.monotonic() - batch_began < quick_s:
            return True
        offsets = [TopicPartition(topic, p.number, p.committed) for p in owned if p.committed is not None]
        if clients.group_generation(consumer) != generation():
            return False  # the consumer already knows it left the generation it owned them in
        if not offsets:
            return True
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("membership probe refused: %s", exc)
            return False
        return True

    return still_owner


def _finalized_at(store: PartitionStore, uid: str, entry: SessionEntry, now: int, finalized: bool) -> int:
    """When the session was finalized (µs; 0: not yet): kept on the entry, looked up once in the store."""
    at = entry.finalized_at
    if at:
        return at
    if not finalized:
        return 0
    if at is None:
        ages = store.ages(uid)
        at = 0 if ages is None else ages.finalized_at
    entry.finalized_at = at or now
    return entry.finalized_at
