"""Reading topics and committed offsets the way a test checks them: no group, from the beginning.

Topics are read with ``assign()`` (nothing committed) and decoded with
:func:`stream_triggers.events.codec.decode`; committed offsets are read without joining
the group, so reading never triggers a rebalance of the processes under test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stream_triggers.events import jsonx
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.state_format import decode_state
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics

from .app import App
from .waits import WAIT_S


@dataclass(frozen=True)
class Record:
    """One record of a topic (``type`` is None when it would not decode)."""

    type: str | None
    value: dict[str, Any]
    key: bytes | None
    partition: int
    offset: int
    raw: bytes

    @property
    def session(self) -> str | None:
        return self.value.get("session_uid")

    def __getitem__(self, field: str) -> Any:
        return self.value[field]


def kwargs_of(record: Record) -> dict[str, Any]:
    """The kwargs a record carries (JSON text on the wire)."""
    return jsonx.loads(record["kwargs_json"])


class TopicReader:
    """Reads every partition of a topic from the beginning (``assign()``, no group commits).

    With ``contiguous`` (every topic but the compacted changelog), a jump in a partition's
    offsets is read again from the expected offset: Tansu once skipped a batch for a
    consumer while two producers wrote to the partition (DESIGN.md section 4), as two
    workers can during a rebalance.  A jump seen three times over is taken as real.
    """

    def __init__(self, bootstrap: str, topic: str, *, contiguous: bool = True) -> None:
        self.topic = topic
        self.records: list[Record] = []
        self.gaps = 0
        self._contiguous = contiguous
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 20,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions)
        assert partitions, f"topic {topic} has no partitions"
        self._at_end = dict.fromkeys(partitions, False)
        self._next = dict.fromkeys(partitions, 0)
        self._jumps: dict[tuple[int, int], int] = {}
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, timeout: float = 0.1) -> int:
        """Read what is there now; returns how many records arrived."""
        count = 0
        reread: set[int] = set()
        for message in self._consumer.consume(10_000, timeout):
            partition = message.partition()
            if partition in reread:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end[partition] = True
                    continue
                raise KafkaException(error)
            self._at_end[partition] = False
            offset, expected = message.offset(), self._next[partition]
            if self._contiguous and offset != expected:
                if offset < expected:
                    continue  # delivered again after a seek
                seen = self._jumps[(partition, expected)] = self._jumps.get((partition, expected), 0) + 1
                if seen < 3:
                    self.gaps += 1
                    self._consumer.seek(TopicPartition(self.topic, partition, expected))
                    reread.add(partition)
                    continue
            self._next[partition] = offset + 1
            raw = message.value() or b""
            try:
                type_name, value = decode(raw)
            except CodecError:
                type_name, value = None, {}
            self.records.append(Record(type_name, value, message.key(), partition, offset, raw))
            count += 1
        return count

    def wait_for(self, condition: Callable[[list[Record]], bool], what: str, timeout: float = WAIT_S) -> list[Record]:
        """Poll until ``condition(records)`` holds; AssertionError naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition(self.records):
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {what} not within {timeout} s; got {len(self.records)} records")

    def wait_count(self, n: int, timeout: float = WAIT_S) -> list[Record]:
        return self.wait_for(lambda records: len(records) >= n, f"{n} records", timeout)

    def read_to_end(self, timeout: float = 20.0) -> list[Record]:
        """Read until every partition reported its end (as far as the broker has it now)."""
        deadline = time.monotonic() + timeout
        self.poll(0.05)
        while not all(self._at_end.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: end of partitions not reached in {timeout} s")
            self.poll()
        return self.records

    def settle(self, quiet_s: float = 1.0, timeout: float = 30.0) -> list[Record]:
        """Read to the end, then until nothing new arrived for ``quiet_s`` (late duplicates, extras)."""
        deadline = time.monotonic() + timeout
        self.read_to_end(timeout)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            if self.poll(0.1):
                quiet_since = time.monotonic()
            if time.monotonic() > deadline:
                break
        return self.records

    def of(self, session: str) -> list[Record]:
        return [r for r in self.records if r.session == session]

    def close(self) -> None:
        self._consumer.close()


class Readers:
    """Lazily opened readers of a test's topics, closed at teardown."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._open: dict[str, TopicReader] = {}

    def __getitem__(self, short: str) -> TopicReader:
        """``readers["task-runs"]``: the reader of ``<prefix>.task-runs``."""
        topic = f"{self.topics.prefix}.{short}"
        assert topic in self.topics.all, short
        if topic not in self._open:
            self._open[topic] = TopicReader(self.bootstrap, topic)
        return self._open[topic]

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Record]:
    """Every record of ``topic`` as the broker has it now (read to each partition's end)."""
    reader = TopicReader(bootstrap, topic)
    try:
        return list(reader.read_to_end(timeout))
    finally:
        reader.close()


def drain(bootstrap: str, topic: str, n: int, timeout: float = WAIT_S) -> list[Record]:
    """Read ``topic`` from the beginning until it has ``n`` records (AssertionError at the deadline)."""
    reader = TopicReader(bootstrap, topic)
    try:
        return list(reader.wait_count(n, timeout))
    finally:
        reader.close()


def latest_snapshots(bootstrap: str, topics: Topics, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The newest changelog snapshot of every session, assembled from its parts: ``state`` decoded,
    ``state_bytes`` as a whole state, ``changelog_offset`` of its newest record."""
    reader = TopicReader(bootstrap, topics.changelog, contiguous=False)  # compaction may leave holes
    try:
        records = reader.read_to_end(timeout)
    finally:
        reader.close()
    changelog = ChangelogReader()
    newest: dict[str, tuple[int, int]] = {}
    for record in records:
        changelog.add(record.key, record.raw or None, record.partition)
        if record.type is not None:
            newest[record["session_uid"]] = (record.partition, record.offset)
    latest: dict[str, dict[str, Any]] = {}
    for uid, snapshot in changelog.snapshots.items():
        latest[uid] = {
            **snapshot,
            "state": decode_state(snapshot["state"]),
            "state_bytes": snapshot["state"],
            "changelog_offset": newest[uid],
        }
    return latest


def newest_snapshots(app: App) -> tuple[dict[str, dict[str, Any]], int]:
    """What any reader of the changelog takes as each session's state, and how many records it found stale."""
    reader = ChangelogReader()
    client = clients.consumer(app.bootstrap, "test-changelog-reader", enable_partition_eof=True)
    try:
        metadata = client.list_topics(app.topics.changelog, timeout=10)
        start = {number: 0 for number in metadata.topics[app.topics.changelog].partitions}
        for batch in clients.read_to_end(client, app.topics.changelog, start, 30):
            for message in batch:
                reader.add(message.key(), message.value(), message.partition())
    finally:
        client.close()
    snapshots = {uid: {**s, "state": decode_state(s["state"])} for uid, s in reader.snapshots.items()}
    return snapshots, reader.stale


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` (negative: none), read without joining the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def committed_offset(bootstrap: str, topic: str, group: str, partition: int) -> int:
    """The offset ``group`` committed on ``topic[partition]`` (negative: none)."""
    return committed_offsets(bootstrap, topic, group, [partition])[partition]


def end_offsets(records: Iterable[Record]) -> dict[int, int]:
    """Per partition, the offset after the last of ``records`` (what a consumer that read them all commits)."""
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends
