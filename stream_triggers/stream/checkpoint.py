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
from stream_triggers.kafka.topics import Topics
from stream_triggers.stream import faults
from stream_triggers.stream.changelog_identity import changelog_record_row
from stream_triggers.stream.partition import Partition, SessionEntry, changelog_rows
from stream_triggers.stream.store import PART, PartitionStore, SessionAges
from stream_triggers.types import SESSION_FINALIZED

__all__ = ["WHOLE_SESSION_BYTES", "Checkpoint", "DeliveryFailed", "PartitionsLost"]

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
        self._changelog_records: dict[int, tuple[int, bytes, bytes | None]] = {}
        """partition -> its newest changelog record ``(offset, key, value)``, which the store's
        identity row names (changelog_identity.py; its digest is made once, at the store write)."""

    def on_output_delivery(self, error: KafkaError | None, message: Any) -> None:
        """Delivery report of outputs and dead letters (only errors matter)."""
        if error is not None:
            self.delivery_errors.append(str(error))

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
        """Make the batch in hand durable, in the order of the module docstring.

        Raises :class:`PartitionsLost` (nothing published, nothing committed) when
        ``still_owner`` says the worker lost its partitions.
        """
        partitions = list(partitions)
        self.flush()  # 1
        if any(p.dirty for p in partitions):
            faults.reached("before-changelog")
            if still_owner is not None and not still_owner():
                raise PartitionsLost("the group moved this worker's partitions away during the batch")
        changelog = self.topics.changelog
        produce = self.producer.produce
        now = time.time_ns() // 1000
        rows_by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        ages_by_partition: dict[int, dict[str, SessionAges | None]] = {}
        for partition in partitions:  # 2
            if not partition.dirty:
                continue
            rows = rows_by_partition[partition.number] = []
            ages = ages_by_partition[partition.number] = {}
            number, epoch = partition.number, partition.epoch
            for uid, entry in partition.dirty.items():
                native = entry.native_rows
                if native is None:
                    finalized = _finalized_at(
                        partition.store, uid, entry, now, SESSION_FINALIZED in entry.state.latest_kwargs
                    )
                else:
                    finalized = _finalized_at(partition.store, uid, entry, now, native[2])
                ages[uid] = SessionAges(now, finalized)  # the ages retention counts from (stream/retention.py)
                headers = finalized_headers(finalized)
                if native is not None:  # encoded by the native core, envelopes included; the header last
                    store_rows, snapshots, _ = native
                    rows.extend(store_rows)
                    last = len(snapshots) - 1
                    on_delivery = self.on_changelog_delivery
                    for at, (key, snapshot) in enumerate(snapshots):
                        if at == last and headers is not None:
                            produce(changelog, snapshot, key, number, on_delivery=on_delivery, headers=headers)
                        else:
                            produce(changelog, snapshot, key, number, on_delivery=on_delivery)
                    continue
                whole = self._small_whole(entry, epoch)
                if whole is not None:  # one whole-session record
                    rows.append((PartitionStore.whole_key(uid), _OFFSET.pack(entry.applied_offset) + whole))
                    records: list[tuple[bytes, bytes | None]] = [(uid.encode(), whole)]
                else:
                    if entry.committed is None:  # stored whole (or new): in parts from now on
                        rows.append((PartitionStore.whole_key(uid), None))
                    records = changelog_rows(uid, entry, epoch)
                    rows.extend((PART + key, value) for key, value in records)
                last = len(records) - 1
                for at, (key, value) in enumerate(records):
                    if value is not None:
                        snapshot = {
                            "session_uid": uid,
                            "produced_at": now,  # the last input's time, from which --session-ttl counts
                            "state": value,
                            "input_partition": number,
                            "applied_offset": entry.applied_offset,
                        }
                        value = encode("SessionSnapshot", snapshot)
                    on_delivery = self.on_changelog_delivery
                    if at == last and headers is not None:  # the header (or whole record): finalized-at
                        produce(changelog, value, key, number, on_delivery=on_delivery, headers=headers)
                    else:
                        produce(changelog, value, key, number, on_delivery=on_delivery)
        if rows_by_partition:
            self.flush()
        if rows_by_partition:
            faults.reached("before-store")
        offsets = []
        for partition in partitions:
            rows = rows_by_partition.get(partition.number)
            if rows:  # 3
                self.write_store(partition, rows, ages_by_partition[partition.number])
                for entry in partition.dirty.values():
                    entry.encoded = entry.native_rows = None
                    if not entry.whole:
                        entry.committed = entry.state
                partition.dirty.clear()
            if partition.commit_offset is not None:
                offsets.append(TopicPartition(self.topics.events, partition.number, partition.commit_offset))
                partition.committed = partition.commit_offset
            partition.skip_rest = False
        if offsets:  # 4
            faults.reached("before-commit")
            self.consumer.commit(offsets=offsets, asynchronous=True)
            faults.reached("after-commit")

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
            if self.delivery_errors:
                errors = self.delivery_errors[:3]
                self.delivery_errors.clear()
                raise DeliveryFailed(f"could not deliver records; errors: {errors}")
            if not remaining:
                return
            log.warning("still waiting for the broker to acknowledge %d records", remaining)


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
