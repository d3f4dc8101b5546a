"""Helpers for the stream worker's acceptance tests, against the real (Tansu) broker.

Workers run as subprocesses of the real CLI (``stream-triggers worker``), each with a
state dir of its own; they are stopped by PID only (SIGTERM, or SIGKILL for crash
tests).  Output topics are read with ``assign()`` from the beginning (no group), and
decoded with :func:`stream_triggers.events.codec.decode`.  The application side
publishes through ``TriggerManager(KafkaStorage(...))``, as a user would.

Every wait polls for a condition until a deadline: a Tansu group join takes about
half of ``session.timeout.ms`` (the CLI's default 6 s), and other jobs share the CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream_triggers.engine import Input, StatusReported
from stream_triggers.events import jsonx
from stream_triggers.events.codec import CodecError, decode, encode
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import decode_state
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.storages.base import utc_now
from stream_triggers.storages.kafka import KafkaStorage
from stream_triggers.task import Failed, Finished, outcome_input, running_input
from stream_triggers.types import TaskInstance

JOIN_TIMEOUT = 45.0
"""Seconds for a worker to get partitions (process start + group join / rebalance)."""
OUTPUT_TIMEOUT = 45.0
"""Seconds for expected outputs to show up."""


# -- worker processes ----------------------------------------------------------------------


def _worker_command() -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    if script.exists():
        return [str(script)]
    found = shutil.which("stream-triggers")
    return [found] if found else [sys.executable, "-m", "stream_triggers.cli"]


_PARTITIONS_LINE = re.compile(r"\b(assigned|revoked) partitions \[([0-9, ]*)\]")
_RESTORED_LINE = re.compile(r"\brestored partitions \[[0-9, ]*\]: (\d+) changelog records")


class WorkerProcess:
    """One ``stream-triggers worker`` subprocess; its log (stderr) goes to a file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.state_dir = args[args.index("--state-dir") + 1]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def owned(self) -> set[int] | None:
        """Partitions owned according to the log (None: never assigned yet)."""
        owned: set[int] | None = None
        for kind, numbers in _PARTITIONS_LINE.findall(self.log()):
            parts = {int(n) for n in numbers.replace(" ", "").split(",") if n}
            if kind == "assigned":
                owned = (owned or set()) | parts
            elif owned is not None:
                owned -= parts
        return owned

    def restored(self) -> int:
        """Changelog records restored so far, by the worker's log."""
        return sum(int(n) for n in _RESTORED_LINE.findall(self.log()))

    def assignments(self) -> int:
        """How many times the worker was assigned partitions so far."""
        return sum(1 for kind, _ in _PARTITIONS_LINE.findall(self.log()) if kind == "assigned")

    def wait_assigned(self, timeout: float = JOIN_TIMEOUT, after: int = 0) -> set[int]:
        """Wait for assignment number ``after + 1`` (an empty one counts) and return the partitions owned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"worker {self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if self.assignments() > after:
                return self.owned() or set()
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} got no partitions within {timeout} s:\n{self.tail()}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM by PID and wait for a clean exit; returns the exit code."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.name} ignored SIGTERM for {timeout} s:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL by PID (a crash) and reap it."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Workers:
    """Starts workers of one test; whatever is still running at teardown is killed."""

    def __init__(self, bootstrap: str, topics: Topics, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.tmp_path = tmp_path
        self.group = f"workers-{uuid.uuid4().hex[:10]}"
        self.started: list[WorkerProcess] = []

    def state_dir(self, name: str) -> str:
        return str(self.tmp_path / f"state-{name}")

    def start(
        self,
        name: str | None = None,
        *,
        state_dir: str | None = None,
        group: str | None = None,
        manager: str | None = None,
        extra: Iterable[str] = (),
    ) -> WorkerProcess:
        name = name or f"w{len(self.started)}"
        args = [
            *_worker_command(),
            "worker",
            "--bootstrap",
            self.bootstrap,
            "--topic-prefix",
            self.topics.prefix,
            "--group",
            group or self.group,
            "--state-dir",
            state_dir or self.state_dir(name),
        ]
        if manager is not None:
            args += ["--manager", manager]
        args += list(extra)
        worker = WorkerProcess(name, args, self.tmp_path / f"{name}-{len(self.started)}.log")
        self.started.append(worker)
        return worker

    def cleanup(self) -> None:
        for worker in self.started:
            worker.kill()

    def report(self) -> str:
        return "\n".join(f"--- {w.name} (pid {w.pid}) ---\n{w.tail(60)}" for w in self.started)


@pytest.fixture
def workers(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(broker.bootstrap, topics, tmp_path)
    try:
        yield started
    finally:
        started.cleanup()
        print(started.report())  # shown by pytest when the test failed


# -- reading topics ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One decoded record of a topic (``type`` is None when it would not decode)."""

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

    def wait_for(
        self, condition: Callable[[list[Record]], bool], what: str, timeout: float = OUTPUT_TIMEOUT
    ) -> list[Record]:
        """Poll until ``condition(records)`` holds; AssertionError naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition(self.records):
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {what} not within {timeout} s; got {len(self.records)} records")

    def wait_count(self, n: int, timeout: float = OUTPUT_TIMEOUT) -> list[Record]:
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


@pytest.fixture
def readers(broker: EmbeddedBroker, topics: Topics) -> Iterator[Readers]:
    opened = Readers(broker.bootstrap, topics)
    try:
        yield opened
    finally:
        opened.close()


def drain(bootstrap: str, topic: str, n: int, timeout: float = OUTPUT_TIMEOUT) -> list[Record]:
    """Read ``topic`` from the beginning until it has ``n`` records (AssertionError at the deadline)."""
    reader = TopicReader(bootstrap, topic)
    try:
        return list(reader.wait_count(n, timeout))
    finally:
        reader.close()


def latest_snapshots(bootstrap: str, topics: Topics, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The newest changelog snapshot of every session: ``state`` decoded, ``state_bytes`` as stored."""
    reader = TopicReader(bootstrap, topics.changelog, contiguous=False)  # compaction may leave holes
    try:
        records = reader.read_to_end(timeout)
    finally:
        reader.close()
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        assert record.type == "SessionSnapshot", record
        assert record.key == record["session_uid"].encode()
        latest[record["session_uid"]] = {
            **record.value,
            "state": decode_state(record["state"]),
            "state_bytes": record["state"],
            "changelog_offset": (record.partition, record.offset),
        }
    return latest


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offsets ``group`` committed on ``topic`` (negative: none), read without joining the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def end_offsets(records: Iterable[Record]) -> dict[int, int]:
    """Per partition, the offset after the last of ``records`` (what a consumer that read them all commits)."""
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


# -- the application side ----------------------------------------------------------------


class App:
    """What an application and a (fake) executor do: publish through the kafka storage."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._raw: Producer | None = None

    def manager(self, uid: str) -> TriggerManager:
        return TriggerManager(KafkaStorage(uid, self.bootstrap, self.topics.prefix))

    def configure(self, uid: str, configuration: Mapping[str, Mapping[str, Any]]) -> None:
        self.manager(uid).update_configuration(configuration)

    def fire(self, uid: str, trigger: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.manager(uid).fire(trigger, kwargs)

    def submit(self, uid: str, event: Input) -> None:
        self.manager(uid).submit(event)

    # A fake executor's reports, shaped as the real executor's (task.running_input / outcome_input).

    def running(self, uid: str, instance: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.submit(uid, running_input(instance, kwargs or {}, utc_now()))

    def finished(self, uid: str, instance: str, result: Mapping[str, Any] | None = None) -> None:
        self.submit(uid, outcome_input(instance, Finished(dict(result or {}), 20), utc_now()))

    def failed(self, uid: str, instance: str, error: str = "boom") -> None:
        metadata = {
            TaskInstance.META_EXCEPTION_TYPE: "builtins.ValueError",
            TaskInstance.META_EXCEPTION_INFO: f"ValueError: {error}",
            TaskInstance.META_EXCEPTION_CONTEXT: {},
        }
        self.submit(uid, outcome_input(instance, Failed(metadata), utc_now()))

    def reported(self, uid: str, instance: str, status: str, result: Mapping[str, Any] | None = None) -> None:
        """A bare ``InstanceStatusReported`` (e.g. a late or duplicate report)."""
        self.submit(uid, StatusReported(instance, status, {}, utc_now(), None if result is None else dict(result)))

    # Raw records, for poison input and bulk loads.

    @property
    def producer(self) -> Producer:
        if self._raw is None:
            self._raw = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "partitioner": "murmur2_random",
                }
            )
        return self._raw

    def produce_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> tuple[int, int]:
        """Produce one record as is; returns its (partition, offset) once acknowledged."""
        delivered: list[tuple[Any, Any]] = []
        self.producer.produce(
            topic or self.topics.events, value, key, on_delivery=lambda e, m: delivered.append((e, m))
        )
        assert self.producer.flush(30) == 0
        (error, message), *_ = delivered
        assert error is None, error
        return message.partition(), message.offset()

    def publish_many(self, events: Iterable[tuple[str, Input]]) -> int:
        """Publish ``(session, input)`` pairs in order through one producer, one flush at the end."""
        count = 0
        errors: list[Any] = []
        for uid, event in events:
            type_name, fields = record_from_input(event)
            record = {"event_id": uuid.uuid4().hex, "session_uid": uid, "produced_at": time.time_ns() // 1000}
            self.producer.produce(
                self.topics.events,
                encode(type_name, {**record, **fields}),
                uid.encode(),
                on_delivery=lambda e, _m: errors.append(e) if e else None,
            )
            count += 1
            self.producer.poll(0)
        assert self.producer.flush(60) == 0 and not errors, errors
        return count


@pytest.fixture
def app(broker: EmbeddedBroker, topics: Topics) -> Iterator[App]:
    application = App(broker.bootstrap, topics)
    yield application
    if application._raw is not None:
        application._raw.flush(10)


@pytest.fixture(scope="session", autouse=True)
def _drop_shared_producers(broker: EmbeddedBroker) -> Iterator[None]:
    """Close the kafka storage's process-wide producers before the broker stops (no reconnect noise)."""
    yield
    from stream_triggers.storages import kafka

    for producer in kafka._producers.values():
        producer.flush(10)
    kafka._producers.clear()


def kwargs_of(record: Record) -> dict[str, Any]:
    return jsonx.loads(record["kwargs_json"])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = OUTPUT_TIMEOUT, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(step)
