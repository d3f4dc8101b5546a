"""The executor's reports without a broker: what replaces an outcome that cannot travel, and retries."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_triggers.engine import MAX_PAYLOAD_BYTES, Input, InvalidPayload, StatusReported, checked_input
from stream_triggers.executor import ExecutorSettings
from stream_triggers.executor.reports import OutcomeNotPublishable, OutcomeTooLarge, Reporter
from stream_triggers.executor.stats import TaskCounters
from stream_triggers.failures import MAX_FAILURE_TEXT
from stream_triggers.storages.kafka import RecordTooLarge
from stream_triggers.types import Status, TaskInstance

AT = datetime(2026, 1, 1)


class Storage:
    """Stands in for the session's kafka storage: refuses what ``refuse`` says, records the rest."""

    uid = "s"

    def __init__(self, *refusals: Exception) -> None:
        self.refusals = list(refusals)
        self.published: list[Input] = []

    def publish(self, event: Input, **_: Any) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.published.append(event)


def reporter(stop: threading.Event | None = None) -> tuple[Reporter, TaskCounters]:
    counters = TaskCounters()
    stop = stop or threading.Event()
    settings = ExecutorSettings(bootstrap="unused:9092")
    return Reporter(
        settings, producer=None, counters=counters, wait_unless_stopping=stop.wait, now=lambda: AT
    ), counters


FINISHED = StatusReported("t#0", Status.FINISHED, {"result": {"blob": "..."}}, AT, {"blob": "..."})


@pytest.mark.parametrize(
    ("refusal", "kind"),
    [
        (RecordTooLarge("1,200,000 bytes, above the limit"), OutcomeTooLarge),
        (InvalidPayload("result weighs more than 512 KiB"), OutcomeNotPublishable),
    ],
)
def test_an_outcome_that_cannot_travel_is_reported_failed_with_the_reason(refusal: Exception, kind: type) -> None:
    report, _ = reporter()
    storage = Storage(refusal)
    assert report.report(storage, FINISHED) is False  # type: ignore[arg-type]
    [failed] = storage.published
    assert isinstance(failed, StatusReported) and failed.status == Status.FAILED and failed.instance == "t#0"
    assert failed.metadata[TaskInstance.META_EXCEPTION_TYPE] == f"{kind.__module__}.{kind.__name__}"
    assert str(refusal) in failed.metadata[TaskInstance.META_EXCEPTION_INFO]


def test_a_report_the_broker_did_not_take_is_retried_until_it_is() -> None:
    report, counters = reporter()
    timeout = KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
    storage = Storage(timeout, timeout)
    assert report.report(storage, FINISHED) is True  # type: ignore[arg-type]
    assert storage.published == [FINISHED]
    assert counters.task_stats.report_errors == 2


def test_a_stopping_executor_gives_up_a_report_after_one_more_try() -> None:
    stop = threading.Event()
    stop.set()
    report, counters = reporter(stop)
    timeout = KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT))
    with pytest.raises(KafkaException):
        report.report(Storage(timeout, timeout), FINISHED)  # type: ignore[arg-type]
    assert counters.task_stats.report_errors == 1


def test_a_refusal_too_long_to_quote_is_clipped_as_the_threading_runner_clips_failures() -> None:
    report, _ = reporter()
    huge = InvalidPayload("x" * MAX_PAYLOAD_BYTES)  # (a message quoting a huge value)
    storage = Storage(huge)
    assert report.report(storage, FINISHED) is False  # type: ignore[arg-type]
    [failed] = storage.published
    assert checked_input(failed) is failed  # the replacement report itself follows the payload rules
    assert "characters clipped" in failed.metadata[TaskInstance.META_EXCEPTION_INFO]  # type: ignore[union-attr]
    assert len(failed.metadata[TaskInstance.META_EXCEPTION_INFO]) < MAX_FAILURE_TEXT + 100  # type: ignore[union-attr]
    kind = failed.metadata[TaskInstance.META_EXCEPTION_TYPE]  # type: ignore[union-attr]
    assert kind == f"{OutcomeNotPublishable.__module__}.OutcomeNotPublishable"
