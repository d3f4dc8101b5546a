"""Worker paths that real faults reach rarely, driven with stand-in clients (no broker).

The stand-ins record what the worker asks of Kafka, so each test checks the decision the
worker takes: re-fetch from a gap, refuse to commit after a failed delivery, stop a
restore on SIGTERM, give up a restore at its deadline, say "not ready" when it owns
nothing.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from stream_triggers.engine import ConfigurationUpdated
from stream_triggers.events.codec import encode
from stream_triggers.events.records import record_from_input
from stream_triggers.kafka.clients import ReadTimeout
from stream_triggers.storages.base import utc_now
from stream_triggers.stream.checkpoint import Checkpoint, DeliveryFailed
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.restore import restore
from stream_triggers.stream.store import PartitionStore
from stream_triggers.stream.worker import StreamWorker, WorkerSettings


class Message:
    def __init__(self, partition: int, offset: int, key: bytes | None = None, value: bytes | None = None, error=None):
        self._partition, self._offset, self._key, self._value, self._error = partition, offset, key, value, error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error


class FakeConsumer:
    def __init__(self, batches: list[list[Message]] | None = None) -> None:
        self.batches = list(batches or [])
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[list[TopicPartition]] = []
        self.assigned: list[TopicPartition] = []

    def consume(self, n: int, timeout: float) -> list[Message]:
        return self.batches.pop(0) if self.batches else []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append(offsets)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    def unassign(self) -> None:
        self.assigned = []

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in tps]

    def consumer_group_metadata(self) -> bytes:
        return b"CGMDv2:" + struct.pack("=i", 4) + b"g\x00m\x00\x00"

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return -1, -1


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.pending: list[tuple[Any, Any]] = []
        self.produced: list[tuple[str, bytes | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1, on_delivery=None):
        self.produced.append((topic, key))
        self.pending.append((on_delivery, Message(max(partition, 0), len(self.produced))))

    def poll(self, timeout: float = 0) -> int:
        return 0  # deliveries are reported by flush() (or deliver())

    def flush(self, timeout: float = 0) -> int:
        self.deliver()
        return 0

    def deliver(self) -> None:
        """The broker acknowledges everything produced so far."""
        for callback, message in self.pending:
            if callback is not None:
                callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if self.fail else None, message)
        self.pending = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        """The cluster's metadata: ``t.events`` with two partitions, no ``owners`` topic."""
        events = SimpleNamespace(error=None, partitions={0: None, 1: None})
        return SimpleNamespace(topics={"t.events": events})


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[StreamWorker]:
    made = StreamWorker(WorkerSettings(bootstrap="127.0.0.1:9", state_dir=str(tmp_path), topic_prefix="t"))
    real = (made._consumer, made._restorer, made._producer)
    made._consumer = made._checkpoint.consumer = FakeConsumer()
    # The owner advertiser too: the real producer would wait its 30 s metadata timeout
    # for the unreachable broker on every assignment.
    made._producer = made._checkpoint.producer = made._advertiser.producer = FakeProducer()
    try:
        yield made
    finally:
        for partition in made._partitions.values():
            partition.store.close()
        real[0].close()
        real[1].close()
        del real


def configure(uid: str) -> bytes:
    type_name, fields = record_from_input(ConfigurationUpdated({"t": {"after": ["go"], "run": "x"}}, utc_now()))
    return encode(type_name, {"event_id": "e", "session_uid": uid, "produced_at": 0, **fields})


def apply(worker: StreamWorker, messages: list[Message], began: float) -> None:
    """Apply ``messages`` as one batch, then checkpoint it (stream/pace.py would, within its interval)."""
    worker._process(messages, began)
    worker._checkpoint_now()


def own(worker: StreamWorker, *numbers: int, restorer: FakeConsumer | None = None) -> None:
    """Assign ``numbers``; the changelog is empty unless ``restorer`` says otherwise."""
    worker._restorer = restorer or FakeConsumer([[Message(n, 0, error=_Eof(n)) for n in numbers]])
    worker._on_assign(worker._consumer, [TopicPartition("t.events", n) for n in numbers])


def test_an_offset_gap_is_fetched_again_from_the_expected_offset(worker: StreamWorker) -> None:
    own(worker, 0)
    worker._partitions[0].next_offset = 5
    messages = [Message(0, 5, b"s1", configure("s1")), Message(0, 7, b"s2", configure("s2")), Message(0, 8)]
    apply(worker, messages, time.monotonic())
    assert worker._consumer.seeks == [(0, 6)]
    assert worker.stats.offset_gaps == 1
    assert worker.stats.events_applied == 1, "nothing after the gap is applied before the re-fetch"
    assert worker._consumer.commits[-1][0].offset == 6


def test_a_failed_delivery_stops_the_batch_before_its_offsets_are_committed(worker: StreamWorker) -> None:
    own(worker, 0)
    worker._producer.fail = True
    with pytest.raises(DeliveryFailed):
        apply(worker, [Message(0, 0, b"s1", configure("s1"))], time.monotonic())
    assert worker._consumer.commits == []
    assert worker._partitions[0].store.get("s1") is None, "no state became durable"


def test_the_checkpoint_commits_only_after_changelog_and_store(tmp_path: Path) -> None:
    consumer, producer = FakeConsumer(), FakeProducer()
    checkpoint = Checkpoint(producer, consumer, _Topics())
    partition = Partition(0, PartitionStore(str(tmp_path), "t.events", 0), epoch=3)
    try:
        entry = partition.session("s1")
        entry.applied_offset = 4
        partition.dirty["s1"] = entry
        partition.commit_offset = 5
        checkpoint.commit([partition])
        assert producer.produced == [("t.changelog", b"s1")]  # small: one whole-session record
        assert partition.store.get("s1")[0] == 4
        assert [(tp.partition, tp.offset) for tp in consumer.commits[0]] == [(0, 5)]
    finally:
        partition.store.close()


def test_a_begun_checkpoint_writes_the_store_and_commits_once_its_state_records_are_acknowledged(
    tmp_path: Path,
) -> None:
    """The loop's pipelined checkpoint: the state records once the outputs are acknowledged,
    the store and the offsets once the state records are."""
    consumer, producer = FakeConsumer(), FakeProducer()
    checkpoint = Checkpoint(producer, consumer, _Topics())
    partition = Partition(0, PartitionStore(str(tmp_path), "t.events", 0), epoch=3)
    try:
        entry = partition.session("s1")
        entry.applied_offset, partition.commit_offset = 4, 5
        partition.dirty["s1"] = entry
        checkpoint.outputs.unacked = 1  # an output of the batch, not acknowledged yet
        checkpoint.begin([partition])
        assert not partition.dirty and checkpoint.outputs.unacked == 0, "later outputs count for the next one"
        later = partition.session("s2")  # a batch applied while the checkpoint is in flight
        later.applied_offset, partition.commit_offset = 5, 6
        partition.dirty["s2"] = later
        assert not checkpoint.complete(wait=False) and producer.produced == [], "no state before its outputs"
        checkpoint.pending.outputs.delivered(None, None)  # type: ignore[union-attr]
        assert not checkpoint.complete(wait=False), "state records not acknowledged yet"
        assert producer.produced == [("t.changelog", b"s1")]
        assert partition.store.get("s1") is None and consumer.commits == [] and partition.committed is None
        producer.deliver()
        assert checkpoint.complete(wait=False)
        assert partition.store.get("s1")[0] == 4 and partition.store.get("s2") is None
        assert [(tp.partition, tp.offset) for tp in consumer.commits[0]] == [(0, 5)], "the offset it covered"
        assert partition.committed == 5 and partition.dirty == {"s2": later}
    finally:
        partition.store.close()


def test_a_begun_checkpoint_is_discarded_when_the_partitions_are_lost(worker: StreamWorker) -> None:
    own(worker, 0)
    worker._process([Message(0, 0, b"s1", configure("s1"))], time.monotonic())
    worker._checkpoint_now(wait=False)
    assert worker._checkpoint.pending is not None, "its state records are not acknowledged yet"
    worker._on_lost(worker._consumer, [TopicPartition("t.events", 0)])
    assert worker._checkpoint.pending is None
    worker._producer.deliver()
    assert worker._consumer.commits == [], "nothing committed for the lost partitions"


def test_trimming_the_cache_keeps_the_sessions_changed_since_the_checkpoint(tmp_path: Path) -> None:
    partition = Partition(0, PartitionStore(str(tmp_path), "t.events", 0))
    try:
        for uid in ("a", "b", "c", "d"):
            partition.session(uid)
        partition.dirty["a"] = partition.sessions["a"]  # the oldest loaded, but changed: kept
        partition.trim(2)
        assert list(partition.sessions) == ["a", "d"]
    finally:
        partition.store.close()


class _Topics:
    events, changelog = "t.events", "t.changelog"


def test_a_restore_that_does_not_reach_the_end_in_time_raises(tmp_path: Path) -> None:
    partition = Partition(0, PartitionStore(str(tmp_path), "t.events", 0))
    try:
        with pytest.raises(ReadTimeout):
            restore(FakeConsumer(), "t.changelog", [partition], timeout_s=0.2)
    finally:
        partition.store.close()


def test_a_stop_during_a_restore_ends_it_and_the_worker_does_not_serve(worker: StreamWorker) -> None:
    worker.stop()
    own(worker, 0, 1, restorer=FakeConsumer())  # a changelog that never ends
    assert not worker.ready.is_set()
    assert not any(p.restored for p in worker._partitions.values())


def test_a_worker_that_owns_nothing_after_a_revoke_is_not_ready(worker: StreamWorker) -> None:
    own(worker, 0, 1)
    assert worker.ready.is_set()
    worker._on_revoke(worker._consumer, [TopicPartition("t.events", 0)])
    assert worker.ready.is_set(), "still owns partition 1"
    worker._on_revoke(worker._consumer, [TopicPartition("t.events", 1)])
    assert not worker.ready.is_set()


class _Eof:
    def __init__(self, partition: int) -> None:
        self.partition = partition

    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class RefusingConsumer(FakeConsumer):
    """A coordinator that no longer counts this member: synchronous commits are refused."""

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        if not asynchronous:
            from confluent_kafka import KafkaException

            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        super().commit(offsets, asynchronous)


def test_a_slow_batch_of_a_worker_the_group_dropped_publishes_no_state(worker: StreamWorker) -> None:
    worker._consumer = worker._checkpoint.consumer = RefusingConsumer()
    own(worker, 0)
    long_ago = -1e9  # the batch began "long ago": as after a freeze past the session timeout
    apply(worker, [Message(0, 7, b"s1", configure("s1")), Message(0, 8, b"s2", configure("s2"))], long_ago)
    assert worker.stats.batches_dropped == 1
    assert [topic for topic, _key in worker._producer.produced if topic.endswith("changelog")] == []
    assert worker._partitions[0].store.get("s1") is None
    assert worker._consumer.commits == [] and worker._consumer.seeks == [(0, 7)]
    assert worker._partitions[0].next_offset == 7 and not worker._partitions[0].sessions


def test_batches_applied_while_a_refused_checkpoint_was_in_flight_are_dropped_too(worker: StreamWorker) -> None:
    """The probe runs when the checkpoint's outputs are acknowledged: the batches the loop
    applied meanwhile are dropped with it (read again from the committed offsets), not kept in hand."""
    worker._consumer = worker._checkpoint.consumer = RefusingConsumer()
    own(worker, 0)
    worker._process([Message(0, 7, b"s1", configure("s1"))], -1e9)  # began "long ago": a freeze
    worker._checkpoint.outputs.unacked = 1  # (an output not acknowledged yet: the probe waits for it)
    worker._checkpoint_now(wait=False)
    worker._process([Message(0, 8, b"s2", configure("s2"))], time.monotonic())
    worker._checkpoint.pending.outputs.delivered(None, None)  # type: ignore[union-attr]
    worker._finish_checkpoint(wait=False)
    assert worker.stats.batches_dropped == 1 and worker._pace.since is None, "nothing left in hand"
    assert worker._consumer.commits == [] and worker._consumer.seeks == [(0, 7)]
    assert not worker._partitions[0].sessions and not worker._partitions[0].dirty


def test_a_quick_batch_publishes_without_asking_the_coordinator(worker: StreamWorker) -> None:
    worker._consumer = worker._checkpoint.consumer = RefusingConsumer()
    own(worker, 0)
    apply(worker, [Message(0, 7, b"s1", configure("s1"))], time.monotonic())
    assert worker.stats.batches_dropped == 0
    assert worker._partitions[0].store.get("s1")[0] == 7
