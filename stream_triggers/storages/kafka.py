"""The application side of the stream: manager calls become events on ``triggers.events``.

``TriggerManager(storage_backends.get('kafka', uid=..., bootstrap=...))`` publishes
each operation (configure, fire, replay, skip, status and metadata updates) as an
event keyed by the session UID, through an idempotent producer, and waits until the
broker acknowledged it.  The stream workers apply it; hooks run there, not here.

Reads (tasks, instances, unresolved tasks...) return the state the workers last
committed for the session, read from the changelog; a session no worker has
committed yet is a clear :class:`SessionNotFound`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream_triggers.engine import Effect, Input, SessionState
from stream_triggers.events.codec import decode, encode
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import decode_state
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.storages.base import BaseTriggerStorage

__all__ = ["KafkaStorage", "SessionNotFound", "BOOTSTRAP_ENV", "shared_producer"]

BOOTSTRAP_ENV = "STREAM_TRIGGERS_BOOTSTRAP"

_producers: dict[str, Producer] = {}
_partition_counts: dict[tuple[str, str], int] = {}
_producers_guard = threading.Lock()


class SessionNotFound(StreamTriggersError, LookupError):
    """No worker has committed state for this session (yet)."""


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
        self._producer = producer or shared_producer(bootstrap)
        self._key = uid.encode()

    def fresh(self) -> KafkaStorage:
        return KafkaStorage(self.uid, self.bootstrap, self.topics.prefix, producer=self._producer)

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

    # -- reads: the changelog --------------------------------------------------------------

    def _load_state(self) -> tuple[SessionState | None, int]:
        snapshot = self.read_snapshot()
        if snapshot is None:
            raise SessionNotFound(
                f"No committed state for session {self.uid!r} in {self.topics.changelog!r} on "
                f"{self.bootstrap}: no worker has applied an event for it yet (or the bootstrap "
                f"address / topic prefix is wrong)."
            )
        return decode_state(snapshot["state"]), snapshot["applied_offset"]

    def read_snapshot(self) -> dict[str, Any] | None:
        """The newest changelog record for this session, or None."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"stream-triggers-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            metadata = consumer.list_topics(self.topics.changelog, timeout=self.timeout_s)
            topic = metadata.topics.get(self.topics.changelog)
            if topic is None or topic.error is not None or not topic.partitions:
                raise SessionNotFound(
                    f"Topic {self.topics.changelog!r} does not exist on {self.bootstrap} "
                    f"(run `stream-triggers topics create`)."
                )
            partition = partition_for(self._key, len(topic.partitions))
            consumer.assign([TopicPartition(self.topics.changelog, partition, 0)])
            latest = None
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for message in consumer.consume(10_000, 0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return latest
                        raise KafkaException(error)
                    if message.key() == self._key:
                        latest = decode(message.value())[1]
            raise KafkaException(f"reading {self.topics.changelog}[{partition}] timed out")
        finally:
            consumer.close()
