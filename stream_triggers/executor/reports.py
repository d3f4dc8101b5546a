"""Publishing what became of a request: status reports and dead letters.

A report is retried while the executor runs (the request stays uncommitted meanwhile,
so nothing is lost if the process dies), and tried once more while it stops.  An
outcome whose report would exceed the record limit (or break the payload rules) can
never be published: it is reported as ``failed`` with :class:`OutcomeTooLarge` (or
:class:`OutcomeNotPublishable`) instead, so the instance is resolved and the
partition's commits move on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Producer

from stream_triggers.engine import Input, InvalidPayload, StatusReported
from stream_triggers.events.codec import CodecError, encode
from stream_triggers.events.envelope import now_us
from stream_triggers.events.records import dead_letter_record
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.failures import reportable_failure
from stream_triggers.kafka.clients import publish_and_wait
from stream_triggers.storages.kafka import KafkaStorage, RecordTooLarge, max_record_bytes
from stream_triggers.types import Status

from .settings import ExecutorSettings
from .stats import TaskCounters

__all__ = ["OutcomeNotPublishable", "OutcomeTooLarge", "Reporter"]

log = logging.getLogger(__name__)

_RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class OutcomeNotPublishable(StreamTriggersError, ValueError):
    """A task's outcome (result, metadata) cannot travel as an event: its report is refused."""


class OutcomeTooLarge(OutcomeNotPublishable):
    """A task's outcome does not fit in one Kafka record."""


class Reporter:
    """Publishes status reports (through the session's kafka storage) and dead letters."""

    def __init__(
        self,
        settings: ExecutorSettings,
        producer: Producer,
        counters: TaskCounters,
        wait_unless_stopping: Callable[[float], bool],
        now: Callable[[], Any],
    ) -> None:
        """``wait_unless_stopping(s)`` sleeps up to ``s`` seconds and says whether a stop was asked."""
        self.settings = settings
        self.producer = producer
        self.counters = counters
        self.max_bytes = settings.max_report_bytes or max_record_bytes(settings.kafka_config)
        self._wait_unless_stopping = wait_unless_stopping
        self._now = now

    def report(self, storage: KafkaStorage, event: Input) -> bool:
        """Publish ``event``; False if it could not travel and a failure was reported instead.

        An event above the record limit, or with a payload the events refuse (the engine's
        payload rules, the codec), is replaced by a ``failed`` report naming the reason, so
        the instance is resolved and the request's offset can be committed.  Raises
        :class:`KafkaException` when the broker did not take it and the executor is
        stopping (the request then stays uncommitted and runs again elsewhere).
        """
        try:
            self._publish(storage, event)
            return True
        except (RecordTooLarge, InvalidPayload, CodecError) as exc:
            instance = getattr(event, "instance", "?")
            kind = OutcomeTooLarge if isinstance(exc, RecordTooLarge) else OutcomeNotPublishable
            reason = kind(
                f"The report of {instance} ({type(event).__name__}) cannot be published: {exc} "
                f"Return a smaller result (store large data elsewhere and return a reference)."
            )
            log.error("%s", reason, extra={"session_uid": storage.uid, "instance": instance})
            # (described as the threading runner describes failures: clipped if it would break the rules)
            self._publish(storage, StatusReported(instance, Status.FAILED, reportable_failure(reason), self._now()))
            return False

    def _publish(self, storage: KafkaStorage, event: Input) -> None:
        attempt = 0
        while True:
            try:
                storage.publish(event, timeout_s=self.settings.report_timeout_s, max_bytes=self.max_bytes)
                return
            except KafkaException as exc:
                self.counters.report_error()
                backoff = _RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)]
                log.warning(
                    "report for %s not acknowledged (attempt %d): %s",
                    storage.uid,
                    attempt + 1,
                    exc,
                    extra={"session_uid": storage.uid},
                )
                if self._wait_unless_stopping(backoff):
                    raise
                attempt += 1

    def dead_letter(self, message: Any, reason: str, error: str, topic: str) -> bool:
        """Send a task-runs record that cannot be run to the dead-letter topic; False if not acknowledged."""
        key = message.key()
        record = dead_letter_record(
            f"executor:{message.partition()}:{message.offset()}:dead-letter",
            reason,
            error,
            message.topic(),
            message.partition(),
            message.offset(),
            key,
            message.value(),
            now_us(),
        )
        self.counters.dead_letter(reason)
        log.warning(
            "dead letter %s at %s:%d: %s",
            reason,
            message.partition(),
            message.offset(),
            error,
            extra={
                "session_uid": record["session_uid"],
                "reason": reason,
                "partition": message.partition(),
                "offset": message.offset(),
            },
        )
        try:
            publish_and_wait(
                self.producer,
                [(topic, key, encode("DeadLetter", record), -1)],
                self.settings.report_timeout_s,
                "dead letter",
            )
        except KafkaException as exc:
            log.error("dead letter at %s:%d not acknowledged: %s", message.partition(), message.offset(), exc)
            return False
        return True
