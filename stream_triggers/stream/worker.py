"""The stream worker: ``triggers.events`` -> session state -> output topics.

One consumer group; each worker owns some ``events`` partitions and, for each, a
RocksDB store restored from the co-partitioned changelog before any of the
partition's events are applied.  Per batch (the commit order, step by step):

1. apply each input to its session (in partition order) through the configured
   trigger manager; produce the outputs of every input that applied completely,
   dead-letter the inputs that could not be decoded or applied;
2. flush: every output is acknowledged;
3. produce one changelog record per touched session (state + the offset of the
   last input applied to it) and flush again - so a state never becomes durable
   before the outputs it caused;
4. write the sessions and the changelog checkpoint to RocksDB in one write batch;
5. commit the input offsets.

Effectively-once state: an input whose offset is at or below its session's applied
offset is already reflected in the state and is skipped, so a crash between any two
steps re-applies nothing twice; outputs are at least once, each with a deterministic
``event_id`` (``<partition>:<offset>:<n>``) for subscribers to drop duplicates.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream_triggers.engine import EngineError
from stream_triggers.events.codec import CodecError, decode, encode
from stream_triggers.events.records import dead_letter_record, input_from_record, uid_of_key
from stream_triggers.events.state_format import StateFormatError, decode_state, encode_state
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager, trigger_managers
from stream_triggers.ops.stats import BATCH_SECONDS_BUCKETS, BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, Buckets, OutputCounts
from stream_triggers.stream.session import OutputSink, SessionEntry, WorkerRunners, WorkerSessionStorage
from stream_triggers.stream.store import PartitionStore

__all__ = ["StreamWorker", "WorkerSettings", "WorkerStats"]

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0
"""How often the loop refreshes ``WorkerStats.consumer_lag`` (a local lookup per owned partition)."""


@dataclass
class WorkerSettings:
    bootstrap: str
    state_dir: str
    group: str = "stream-triggers"
    topic_prefix: str = "triggers"
    manager: str = "finalizing"
    batch_size: int = 10_000
    batch_timeout_s: float = 0.01
    fetch_wait_ms: int = 10
    session_timeout_ms: int = 6_000
    session_cache_size: int = 5_000
    restore_timeout_s: float = 120.0
    kafka_config: dict[str, Any] = field(default_factory=dict)
    """The user's librdkafka settings (security, timeouts...), for every client the worker builds."""
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerStats:
    """Counters the metrics endpoint and the benchmarks read."""

    events_applied: int = 0
    events_skipped_applied: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    outputs: int = 0
    batches: int = 0
    offset_gaps: int = 0
    restored_records: int = 0
    restore_seconds: float = 0.0
    first_event_at: float | None = None
    last_event_at: float | None = None
    cpu_first: float | None = None  # time.process_time() at first_event_at (benchmarks)
    cpu_last: float | None = None  # time.process_time() at last_event_at
    # For the metrics endpoint (stream_triggers.ops.metrics reads these when scraped).
    applied_by_type: dict[str, int] = field(default_factory=dict)  # events record type -> count
    skipped_by_type: dict[str, int] = field(default_factory=dict)
    dead_letters_by_type: dict[str, int] = field(default_factory=dict)  # "unknown" if undecodable
    batch_size: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))
    batch_seconds: Buckets = field(default_factory=lambda: Buckets(BATCH_SECONDS_BUCKETS))
    event_latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))  # produced_at -> commit
    restores: int = 0
    rebalances: int = 0
    owned_partitions: int = 0
    consumer_lag: dict[int, int] = field(default_factory=dict)  # owned partition -> records behind, ~1 s old
    produced: OutputCounts = field(default_factory=OutputCounts)  # task runs, statuses, finalized sessions


class _Partition:
    """What the worker keeps per owned ``events`` partition."""

    __slots__ = ("number", "store", "sessions", "dirty", "next_offset", "commit_offset", "skip_rest")

    def __init__(self, number: int, store: PartitionStore) -> None:
        self.number = number
        self.store = store
        self.sessions: OrderedDict[str, SessionEntry] = OrderedDict()
        self.dirty: dict[str, SessionEntry] = {}
        self.next_offset: int | None = None
        self.commit_offset: int | None = None
        self.skip_rest = False

    def session(self, uid: str) -> SessionEntry:
        entry = self.sessions.get(uid)
        if entry is None:
            stored = self.store.get(uid)
            entry = SessionEntry() if stored is None else SessionEntry(decode_state(stored[1]), stored[0])
            self.sessions[uid] = entry
        return entry


class StreamWorker:
    """Applies trigger events to session state and publishes what happened."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        manager_class: type[TriggerManager] | None = None,
        on_batch: Callable[[StreamWorker], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.manager_class = manager_class or trigger_managers.get_class(settings.manager)
        self.stats = WorkerStats()
        self.on_batch = on_batch
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._partitions: dict[int, _Partition] = {}
        self._sink = OutputSink(self.topics, self.stats.produced)
        self._event_at = datetime(1970, 1, 1)
        self._runners = WorkerRunners(self._sink)
        self._delivery_errors: list[str] = []
        self._changelog_offsets: dict[int, int] = {}
        self._produced_at: list[int] = []  # produced_at (us) of the inputs applied in this batch
        self.loop_at: float | None = None  # time.monotonic() of the last loop turn; None unless running
        os.makedirs(settings.state_dir, exist_ok=True)
        common = {"bootstrap.servers": settings.bootstrap, "client.id": f"stream-triggers-worker-{os.getpid()}"}
        self._consumer = Consumer(
            {
                **common,
                "group.id": settings.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(300, settings.session_timeout_ms // 6),
                "fetch.wait.max.ms": settings.fetch_wait_ms,
                "queued.min.messages": 20_000,
                "enable.partition.eof": False,
                **settings.consumer_config,
            }
        )
        self._restorer = Consumer(
            {
                **common,
                "group.id": f"{settings.group}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.fetch_wait_ms,
            }
        )
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 2_000_000,
                "partitioner": "murmur2_random",
                "allow.auto.create.topics": False,
                "on_delivery": self._on_output_delivery,
                **settings.producer_config,
            }
        )

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and shut down cleanly."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> None:
        """Consume until :meth:`stop`; then commit, close the stores and leave the group."""
        settings = self.settings
        # Session states are acyclic, immutable values freed by reference counting; with
        # thousands cached, frequent cyclic-GC passes over them only cost time.
        gc.set_threshold(50_000, 50, 100)
        self._consumer.subscribe(
            [self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("worker started: group=%s topics=%s", settings.group, self.topics.events)
        lag_due = 0.0
        try:
            while not self._stop.is_set():
                self.loop_at = now = time.monotonic()
                if now >= lag_due:
                    self.stats.consumer_lag = self.consumer_lag()
                    lag_due = now + LAG_INTERVAL_S
                messages = self._consumer.consume(settings.batch_size, settings.batch_timeout_s)
                if messages:
                    self._process(messages)
        finally:
            self.loop_at = None
            self._close()

    def _close(self) -> None:
        self.ready.clear()
        try:
            self._producer.flush(30)
        finally:
            for partition in self._partitions.values():
                partition.store.close()
            self._partitions.clear()
            self.stats.owned_partitions = 0
            self.stats.consumer_lag = {}
            self._consumer.close()
            self._restorer.close()
            log.info("worker stopped")

    # -- rebalancing ---------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self.ready.clear()
        for tp in assigned:
            if tp.partition not in self._partitions:
                store = PartitionStore(self.settings.state_dir, self.topics.events, tp.partition)
                self._partitions[tp.partition] = _Partition(tp.partition, store)
        self._restore([self._partitions[tp.partition] for tp in assigned])
        if assigned:
            for tp in consumer.committed(assigned, timeout=30):
                partition = self._partitions[tp.partition]
                partition.next_offset = tp.offset if tp.offset >= 0 else None
        self.stats.rebalances += 1
        self.stats.owned_partitions = len(self._partitions)
        numbers = sorted(tp.partition for tp in assigned)
        log.info("assigned partitions %s", numbers, extra={"partitions": numbers})
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        # The batch in hand was checkpointed before consume() ran this callback.
        for tp in revoked:
            partition = self._partitions.pop(tp.partition, None)
            if partition is not None:
                partition.store.close()
                for entry in partition.sessions.values():
                    entry.manager = None  # break entry -> manager -> storage -> entry
        self.stats.owned_partitions = len(self._partitions)
        numbers = sorted(tp.partition for tp in revoked)
        log.info("revoked partitions %s", numbers, extra={"partitions": numbers})

    def _restore(self, partitions: list[_Partition]) -> None:
        """Bring each store up to its changelog partition's end (found by fetching to EOF).

        Not ListOffsets: Tansu's high watermark can be wrong, a fetch's EOF is not.
        """
        if not partitions:
            return
        started = time.monotonic()
        by_number = {p.number: p for p in partitions}
        last = {p.number: p.store.changelog_checkpoint for p in partitions}
        pending = set(by_number)
        self._restorer.assign([TopicPartition(self.topics.changelog, n, offset + 1) for n, offset in last.items()])
        restored = 0
        deadline = started + self.settings.restore_timeout_s
        try:
            while pending:
                self.loop_at = time.monotonic()  # restoring is progress too (liveness)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"restoring {self.topics.changelog} partitions {sorted(pending)} did not reach "
                        f"the end within {self.settings.restore_timeout_s} s"
                    )
                rows: dict[int, list[tuple[str, int, bytes]]] = {}
                for message in self._restorer.consume(10_000, 0.05):
                    number = message.partition()
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(number)
                            continue
                        raise KafkaException(error)
                    offset = message.offset()
                    if offset <= last[number]:
                        continue
                    last[number] = offset
                    try:
                        _, snapshot = decode(message.value())
                    except CodecError as exc:
                        log.error("skipping unreadable changelog record %d:%d: %s", number, offset, exc)
                        continue
                    uid = snapshot["session_uid"]
                    rows.setdefault(number, []).append((uid, snapshot["applied_offset"], snapshot["state"]))
                    by_number[number].sessions.pop(uid, None)
                for number, partition_rows in rows.items():
                    by_number[number].store.write(partition_rows, last[number])
                    restored += len(partition_rows)
        finally:
            self._restorer.unassign()
        elapsed = time.monotonic() - started
        self.stats.restores += 1
        self.stats.restored_records += restored
        self.stats.restore_seconds += elapsed
        numbers = sorted(by_number)
        log.info(
            "restored partitions %s: %d changelog records in %.3f s",
            numbers,
            restored,
            elapsed,
            extra={"partitions": numbers, "records": restored, "seconds": round(elapsed, 6)},
        )

    # -- one batch ---------------------------------------------------------------------

    def _process(self, messages: list[Any]) -> None:
        started = time.perf_counter()
        now = time.time()
        stats = self.stats
        if stats.first_event_at is None:
            stats.first_event_at = now
            stats.cpu_first = time.process_time()
        partitions = self._partitions
        produce = self._producer.produce
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            partition = partitions.get(message.partition())
            if partition is None or partition.skip_rest:
                continue
            offset = message.offset()
            expected = partition.next_offset
            if expected is not None and offset != expected:
                if offset < expected:
                    continue  # re-delivered after a seek: already handled
                # A fetch skipped records (seen on Tansu): read again from the gap.
                stats.offset_gaps += 1
                log.warning("offset gap on partition %d: expected %d, got %d", partition.number, expected, offset)
                self._consumer.seek(TopicPartition(self.topics.events, partition.number, expected))
                partition.skip_rest = True
                continue
            partition.next_offset = offset + 1
            partition.commit_offset = offset + 1
            for topic, key, value in self._apply(partition, offset, message.key(), message.value()):
                produce(topic, value, key, partition.number if topic == self.topics.changelog else -1)
        stats.last_event_at = time.time()
        stats.cpu_last = time.process_time()
        self._checkpoint()
        self._observe_batch(len(messages), started)
        if self.on_batch is not None:
            self.on_batch(self)

    def _observe_batch(self, size: int, started: float) -> None:
        """Per batch, after its commit: size, duration and each applied input's end-to-end latency."""
        stats = self.stats
        stats.batch_size.observe(size)
        stats.batch_seconds.observe(time.perf_counter() - started)
        produced = self._produced_at
        if produced:
            now = _now_us()
            observe = stats.event_latency.observe
            for at in produced:
                observe((now - at) * 1e-6)
            produced.clear()

    def _apply(self, partition: _Partition, offset: int, key: bytes | None, value: bytes | None) -> list:
        """Apply one input; return its output records (or a dead letter)."""
        try:
            if key is None:
                raise _Rejected("missing_key", "events records must be keyed by session UID")
            uid = key.decode()
            type_name, record = decode(value or b"")
            if record.get("session_uid") != uid:
                raise _Rejected(
                    "key_mismatch", f"record session_uid {record.get('session_uid')!r} differs from key {uid!r}"
                )
            entry = partition.session(uid)
            if offset <= entry.applied_offset:
                self.stats.events_skipped_applied += 1
                skipped = self.stats.skipped_by_type
                skipped[type_name] = skipped.get(type_name, 0) + 1
                return []
            event = input_from_record(type_name, record)
        except _Rejected as exc:
            return [self._dead_letter(partition, offset, key, value, exc.reason, str(exc))]
        except (CodecError, EngineError, StateFormatError, UnicodeDecodeError) as exc:
            return [self._dead_letter(partition, offset, key, value, _reason(exc), str(exc))]
        sink = self._sink
        sink.begin(uid, key, record["event_id"], record["produced_at"], f"{partition.number}:{offset}", _now_us())
        before = entry.state
        self._event_at = event.at
        manager = entry.manager
        if manager is None:  # one manager per cached session, reused by its later inputs
            manager = entry.manager = self.manager_class(
                WorkerSessionStorage(uid, entry, sink), runners=self._runners, clock=self._clock
            )
        try:
            manager.submit(event)
        except Exception as exc:
            entry.state = before
            entry.manager = None  # it may hold half-done follow-ups; the next input gets a fresh one
            sink.discard()
            if not isinstance(exc, EngineError):
                log.exception("applying %s at %d:%d failed", type_name, partition.number, offset)
            return [self._dead_letter(partition, offset, key, value, _reason(exc), str(exc))]
        entry.applied_offset = offset
        partition.dirty[uid] = entry
        stats = self.stats
        stats.events_applied += 1
        stats.outputs += len(sink.outputs)
        applied = stats.applied_by_type
        applied[type_name] = applied.get(type_name, 0) + 1
        self._produced_at.append(record["produced_at"])
        return sink.outputs

    def _clock(self) -> datetime:
        """Inputs are stamped with their event's ``produced_at``: replays stay deterministic."""
        return self._event_at

    def _dead_letter(
        self, partition: _Partition, offset: int, key: bytes | None, value: bytes | None, reason: str, error: str
    ) -> tuple[str, bytes | None, bytes]:
        uid = uid_of_key(key)
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
        record = dead_letter_record(
            f"{partition.number}:{offset}:dead-letter",
            reason,
            error,
            self.topics.events,
            partition.number,
            offset,
            key,
            value,
            _now_us(),
        )
        return self.topics.dead_letter, key, encode("DeadLetter", record)

    def _checkpoint(self) -> None:
        """Steps 2-5 of the batch: outputs acked, changelog acked, RocksDB, commit."""
        self._flush()
        changelog = self.topics.changelog
        produce = self._producer.produce
        now = _now_us()
        rows_by_partition: dict[int, list[tuple[str, int, bytes]]] = {}
        for partition in self._partitions.values():
            if not partition.dirty:
                continue
            rows = rows_by_partition[partition.number] = []
            for uid, entry in partition.dirty.items():
                state = encode_state(entry.state)
                rows.append((uid, entry.applied_offset, state))
                snapshot = {
                    "session_uid": uid,
                    "produced_at": now,
                    "state": state,
                    "input_partition": partition.number,
                    "applied_offset": entry.applied_offset,
                }
                produce(
                    changelog,
                    encode("SessionSnapshot", snapshot),
                    uid.encode(),
                    partition.number,
                    on_delivery=self._on_changelog_delivery,
                )
        if rows_by_partition:
            self._flush()
        offsets = []
        for partition in self._partitions.values():
            rows = rows_by_partition.get(partition.number)
            if rows:
                partition.store.write(rows, self._changelog_offsets.get(partition.number))
                partition.dirty.clear()
            if partition.commit_offset is not None:
                offsets.append(TopicPartition(self.topics.events, partition.number, partition.commit_offset))
            partition.skip_rest = False
            self._trim_cache(partition)
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        self.stats.batches += 1

    def _on_output_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))

    def _on_changelog_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))
        else:
            partition = message.partition()
            if message.offset() > self._changelog_offsets.get(partition, -1):
                self._changelog_offsets[partition] = message.offset()

    def _flush(self) -> None:
        """Wait until every record produced so far is acknowledged.

        A slow broker is waited for (librdkafka keeps retrying); a record that failed for
        good stops the worker before anything is committed, so a restart re-applies the
        batch from the changelog and the committed offsets - nothing is lost.
        """
        while True:
            remaining = self._producer.flush(30)
            if self._delivery_errors:
                errors = self._delivery_errors[:3]
                self._delivery_errors.clear()
                raise KafkaException(f"could not deliver records; errors: {errors}")
            if not remaining:
                return
            log.warning("still waiting for the broker to acknowledge %d records", remaining)

    def consumer_lag(self) -> dict[int, int]:
        """Owned ``events`` partition -> records not yet committed (high watermark - commit position).

        Reads librdkafka's cached watermarks (no broker round trip; fetches keep them
        current, and Tansu reports them right there).  Only the loop's thread may call
        it: ``get_watermark_offsets`` blocks while another thread is inside ``consume()``,
        so the loop refreshes ``stats.consumer_lag`` every ``LAG_INTERVAL_S`` and the
        metrics thread reads that.  A partition whose watermark is not known yet is left out.
        """
        lag = {}
        for number, partition in self._partitions.items():
            position = partition.commit_offset if partition.commit_offset is not None else partition.next_offset
            tp = TopicPartition(self.topics.events, number)
            try:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except (KafkaException, RuntimeError):
                continue
            if high < 0:
                continue
            lag[number] = max(0, high - (low if position is None or position < 0 else position))
        return lag

    def _trim_cache(self, partition: _Partition) -> None:
        limit = max(100, self.settings.session_cache_size // max(1, len(self._partitions)))
        sessions = partition.sessions
        while len(sessions) > limit:
            # entry -> manager -> storage -> entry is a cycle: break it so the evicted
            # session is freed now, not at some later cyclic-GC pass.
            sessions.popitem(last=False)[1].manager = None


class _Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(exc: BaseException) -> str:
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


def _now_us() -> int:
    return time.time_ns() // 1000
