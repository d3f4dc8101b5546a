"""The application side of a pipeline: publish through the kafka storage, read sessions back.

What a user's application and a (fake) executor do: ``TriggerManager(KafkaStorage(...))``
on a producer of the test's own, and the state the workers committed read back the same
way.  Raw records (poison input, bulk loads) go through that producer too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Producer

from stream_triggers.engine import Input, SessionState, StatusReported
from stream_triggers.events.codec import encode
from stream_triggers.events.records import record_from_input
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.base import utc_now
from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound
from stream_triggers.task import Failed, Finished, outcome_input, running_input
from stream_triggers.types import TaskInstance

from .waits import WAIT_S, wait_until


class App:
    """Publishes and reads the sessions of one topic prefix, on a producer of its own."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        """The application's producer: murmur2_random, as every producer of the project."""
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "partitioner": "murmur2_random",
                }
            )
        return self._producer

    def close(self) -> None:
        """Flush and drop the producer (Tansu waits for connected clients when it stops)."""
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    def storage(self, uid: str, **options: Any) -> KafkaStorage:
        """The kafka storage of a session, on this application's producer."""
        return KafkaStorage(uid, self.bootstrap, self.topics.prefix, producer=self.producer, **options)

    def manager(self, uid: str) -> TriggerManager:
        return TriggerManager(self.storage(uid))

    def configure(self, uid: str, configuration: Mapping[str, Mapping[str, Any]]) -> None:
        self.manager(uid).update_configuration(configuration)

    def fire(self, uid: str, trigger: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.manager(uid).fire(trigger, kwargs)

    def submit(self, uid: str, event: Input) -> None:
        self.manager(uid).submit(event)

    # -- a fake executor's reports, shaped as the real executor's (task.running_input / outcome_input)

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

    # -- raw records, for poison input and bulk loads

    def produce_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> tuple[int, int]:
        """Produce one record as is (to the events topic by default); its (partition, offset) once acknowledged."""
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

    # -- the sessions as the workers committed them

    def state(self, uid: str) -> SessionState | None:
        """The session as the workers last committed it (None before any commit)."""
        try:
            return self.storage(uid, timeout_s=15).state
        except SessionNotFound:
            return None

    def wait_session(
        self, uid: str, condition: Callable[[SessionState], Any], what: str, timeout: float = WAIT_S
    ) -> SessionState:
        """Poll the committed state of ``uid`` until ``condition(state)`` holds; returns that state."""
        last: list[SessionState | None] = [None]

        def check() -> SessionState | None:
            state = last[0] = self.state(uid)
            return state if state is not None and condition(state) else None

        try:
            return wait_until(check, f"session {uid}: {what}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last state: {describe(last[0])}\n{self.report()}") from None

    def wait_status(self, uid: str, instance: str, status: str, timeout: float = WAIT_S) -> TaskInstance:
        state = self.wait_session(
            uid,
            lambda s: instance in s.instances and s.instances[instance].status == status,
            f"{instance} {status}",
            timeout,
        )
        return state.instances[instance]

    def wait_finalized(self, uid: str, timeout: float = WAIT_S) -> SessionState:
        return self.wait_session(uid, lambda s: "sessionFinalized" in s.latest_kwargs, "finalized", timeout)

    def report(self) -> str:
        """What to show when a wait failed (the processes' logs, where there are any)."""
        return ""


def describe(state: SessionState | None) -> str:
    if state is None:
        return "none committed"
    return ", ".join(f"{name}={instance.status}" for name, instance in state.instances.items()) or "no instances"


def uid_on_partition(prefix: str, partitions: int, wanted: Iterable[int]) -> str:
    """A fresh session UID whose records land on one of the ``wanted`` partitions."""
    wanted = set(wanted)
    while True:
        uid = f"{prefix}-{uuid.uuid4().hex[:8]}"
        if partition_for(uid.encode(), partitions) in wanted:
            return uid
