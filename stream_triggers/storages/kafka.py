"""The application side of the stream: manager calls become events on ``triggers.events``.

``TriggerManager(storage_backends.get('kafka', uid=..., bootstrap=...))`` publishes
each operation (configure, fire, replay, skip, status and metadata updates) as an
event keyed by the session UID, through an idempotent producer, and waits until the
broker acknowledged it.  The stream workers apply it; hooks run there, not here.

Reads (tasks, instances, unresolved tasks...) return the state the workers last
committed for the session.  They ask the worker that owns the session's partition
(storages/owner_reads.py: a read costs one session, not a partition); when no owner
answers within ``owner_wait_s``, they scan the session's changelog partition (bounded
by ``timeout_s``); when that fails too, the error says what each path answered.  A
session no worker has committed yet is a clear :class:`SessionNotFound`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from stream_triggers.engine import Effect, Input, SessionState
from stream_triggers.events.codec import encode
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import ChangelogReader, decode_state
from stream_triggers.kafka import clients
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.storages.owner_reads import OwnerUnavailable, read_from_owner

__all__ = ["KafkaStorage", "SessionNotFound", "SessionUnreadable", "BOOTSTRAP_ENV", "shared_producer"]

BOOTSTRAP_ENV = "STREAM_TRIGGERS_BOOTSTRAP"

_producers: dict[str, Producer] = {}
_partition_counts: dict[tuple[str, str], int] = {}
_producers_guard = threading.Lock()


READ_FROM = ("auto", "owner", "changelog")


class SessionNotFound(LookupError):
    """No worker has committed state for this session (yet)."""


class SessionUnreadable(KafkaException):
    """Neither the session's owner nor its changelog partition answered in time."""


def shared_producer(bootstrap: str) -> Producer:
    """One idempotent producer per bootstrap address for the whole process."""
    with _producers_guard:
        producer = _producers.get(bootstrap)
        if producer is None:
            producer = _producers[bootstrap] = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "partitioner": "murmur2_random",
                    "allow.auto.create.topics": False,
                    "client.id": f"stream-triggers-app-{os.getpid()}",
                }
            )
        return producer


class KafkaStorage(BaseTriggerStorage):
    """Publishes a session's operations as events; reads its committed state."""

    default_task_runner_name = "kafka"

    def __init__(
        self,
        uid: str,
        bootstrap: str | None = None,
        topic_prefix: str = "triggers",
        *,
        producer: Producer | None = None,
        timeout_s: float = 30.0,
        kafka_config: Mapping[str, Any] | None = None,
        owner_wait_s: float = 3.0,
        read_from: str = "auto",
    ) -> None:
        super().__init__(uid)
        bootstrap = bootstrap or os.environ.get(BOOTSTRAP_ENV)
        if not bootstrap:
            raise ValueError(f"The kafka storage needs the broker address: pass bootstrap=... or set ${BOOTSTRAP_ENV}.")
        self.bootstrap = bootstrap
        self.topics = Topics(topic_prefix)
        self.timeout_s = timeout_s
        self.kafka_config = dict(kafka_config or {})
        """The user's librdkafka settings (security, timeouts...), for every client this storage builds."""
        self.owner_wait_s = owner_wait_s
        """How long a read tries the session's owner (re-reading who it is) before the changelog."""
        if read_from not in READ_FROM:
            raise ValueError(f"read_from must be one of {', '.join(READ_FROM)}, not {read_from!r}")
        self.read_from = read_from
        """``auto``: the owner, else the changelog; ``owner``: only the owner; ``changelog``: only the changelog."""
        self.read_source = ""
        """Where the last read came from: ``owner HOST:PORT (...)`` or ``changelog (...)``."""
        self._producer = producer or shared_producer(bootstrap)
        self._key = uid.encode()

    def fresh(self) -> KafkaStorage:
        return KafkaStorage(
            self.uid,
            self.bootstrap,
            self.topics.prefix,
            producer=self._producer,
            timeout_s=self.timeout_s,
            kafka_config=self.kafka_config,
            owner_wait_s=self.owner_wait_s,
            read_from=self.read_from,
        )

    # -- writes: publish -----------------------------------------------------------------

    def apply(self, event: Input) -> list[Effect]:
        """Publish ``event``; the worker that owns the session applies it."""
        type_name, fields = record_from_input(event)
        record = {
            "event_id": uuid.uuid4().hex,
            "session_uid": self.uid,
            "produced_at": time.time_ns() // 1000,
            **fields,
        }
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                errors.append(error)

        self._producer.produce(
            self.topics.events,
            encode(type_name, record),
            self._key,
            self._events_partition(),
            on_delivery=delivered,
        )
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            raise KafkaException(
                errors[0] if errors else f"event for session {self.uid!r} not acknowledged in {self.timeout_s} s"
            )
        self._state = None  # the committed state will change
        return []

    def _events_partition(self) -> int:
        """The session's partition, computed here so any producer (whatever its partitioner)
        puts the session's events where the worker, the executors and the changelog expect."""
        count = _partition_counts.get((self.bootstrap, self.topics.events))
        if count is None:
            metadata = self._producer.list_topics(self.topics.events, timeout=self.timeout_s)
            topic = metadata.topics.get(self.topics.events)
            if topic is None or topic.error is not None or not topic.partitions:
                raise SessionNotFound(
                    f"Topic {self.topics.events!r} does not exist on {self.bootstrap} "
                    f"(run `stream-triggers topics create`)."
                )
            count = _partition_counts[(self.bootstrap, self.topics.events)] = len(topic.partitions)
        return partition_for(self._key, count)

    def save(self) -> None:
        """Nothing to save: every operation was published (and acknowledged) by ``apply``."""

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        raise NotImplementedError("the kafka storage publishes events; it never writes state itself")

    def _session_lock(self) -> nullcontext[None]:
        return nullcontext()  # the worker owning the partition serialises the session

    # -- reads: the owner, else the changelog -----------------------------------------------

    def _load_state(self) -> tuple[SessionState | None, int]:
        snapshot = self.read_snapshot()
        if snapshot is None:
            raise SessionNotFound(
                f"No committed state for session {self.uid!r} in {self.topics.changelog!r} on "
                f"{self.bootstrap}: no worker has applied an event for it yet (or the bootstrap "
                f"address / topic prefix is wrong); read from {self.read_source}."
            )
        return decode_state(snapshot["state"]), snapshot["applied_offset"]

    def read_snapshot(self) -> dict[str, Any] | None:
        """The session's committed ``SessionSnapshot`` (its state still encoded), or None.

        From the owner of its partition first, else from the changelog partition (as
        ``read_from`` allows); :class:`SessionUnreadable` when neither answered.
        """
        consumer = clients.consumer(self.bootstrap, "reader", kafka_config=self.kafka_config, enable_partition_eof=True)
        try:
            count = self._changelog_partitions(consumer)
            partition = partition_for(self._key, count)
            latest = ChangelogReader(self.uid)  # the one reader of session records (docs/fencing.md)
            unavailable = "not asked (read_from='changelog')"
            if self.read_from != "changelog":
                try:
                    answer = read_from_owner(
                        consumer, self.topics.owners, self.uid, partition, count, self.owner_wait_s, self.timeout_s
                    )
                except OwnerUnavailable as exc:
                    unavailable = str(exc)
                else:
                    owner = answer.owner
                    self.read_source = f"owner {owner.endpoint} (partition {partition}, epoch {owner.epoch})"
                    if answer.snapshot is not None:
                        latest.offer(answer.snapshot, partition)
                    return latest.snapshot()
                if self.read_from == "owner":
                    raise SessionUnreadable(f"session {self.uid!r}: no owner answered: {unavailable}")
            try:
                self._scan_changelog(consumer, partition, latest)
            except KafkaException as exc:
                raise SessionUnreadable(
                    f"cannot read session {self.uid!r}: no owner of partition {partition} answered "
                    f"({unavailable}), and reading {self.topics.changelog}[{partition}] failed: {exc}"
                ) from exc
            self.read_source = f"changelog {self.topics.changelog}[{partition}] (owner: {unavailable})"
            return latest.snapshot()
        finally:
            consumer.close()

    def _changelog_partitions(self, consumer: Consumer) -> int:
        metadata = consumer.list_topics(self.topics.changelog, timeout=self.timeout_s)
        topic = metadata.topics.get(self.topics.changelog)
        if topic is None or topic.error is not None or not topic.partitions:
            raise SessionNotFound(
                f"Topic {self.topics.changelog!r} does not exist on {self.bootstrap} "
                f"(run `stream-triggers topics create`)."
            )
        return len(topic.partitions)

    def _scan_changelog(self, consumer: Consumer, partition: int, latest: ChangelogReader) -> None:
        """Every record of the session's changelog partition, from offset 0 (the slow path)."""
        for batch in clients.read_to_end(consumer, self.topics.changelog, {partition: 0}, self.timeout_s):
            for message in batch:
                latest.add(message.key(), message.value(), partition)
