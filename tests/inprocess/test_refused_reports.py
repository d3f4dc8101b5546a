"""A task whose outcome the payload rules refuse ends ``failed``, never stuck ``running``.

The engine refuses a report whose result or metadata breaks the payload rules
(``stream_triggers.engine.payloads``).  The in-process runner must then report the
instance ``failed`` with that refusal as its exception, so the session's other
instances and a finalizing manager carry on as they would after any failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from stream_triggers.engine import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, InvalidPayload
from stream_triggers.manager import FinalizingTriggerManager
from stream_triggers.task import TaskContext, TriggerTask
from stream_triggers.testing import DevNullTask
from stream_triggers.types import Status, TaskInstance
from tests.support import Session, SessionFactory

FINALIZED = FinalizingTriggerManager.TRIGGER_SESSION_FINALIZED
OVERSIZED = "x" * (MAX_PAYLOAD_BYTES + 1024)


def nested(depth: int) -> dict[str, Any]:
    """A dict nesting ``depth`` levels (built without recursion)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


class OversizedResultTask(TriggerTask):
    name = "refused.oversized_result"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"blob": OVERSIZED}


class HugeSetResultTask(TriggerTask):
    """Returns a set of 200,000 ids: too heavy to report (the refusal names its weight, never its value)."""

    name = "refused.huge_set_result"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"ids": set(range(200_000))}


class HugeMessageTask(TriggerTask):
    """Fails with a message quoting a value so big that its traceback breaks the size limit."""

    name = "refused.huge_message"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise ValueError(f"bad ids: {set(range(200_000))}")


class HugeIntResultTask(TriggerTask):
    """Returns an int JSON may hold but no storage carries (beyond 64 bits)."""

    name = "refused.huge_int_result"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"count": 2**80}


class DeepResultTask(TriggerTask):
    name = "refused.deep_result"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return nested(5000)


class LimitDepthResultTask(TriggerTask):
    """A result one level deeper than a payload may be (the levels its report adds do not count)."""

    name = "refused.limit_depth_result"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return nested(MAX_PAYLOAD_DEPTH + 1)


class OversizedRetryTask(TriggerTask):
    name = "refused.oversized_retry"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise self.retry(replacement_kwargs={"blob": OVERSIZED})


class DeepSkipMetadataTask(TriggerTask):
    name = "refused.deep_skip_metadata"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise self.skip(metadata={"detail": nested(5000)})


REFUSED_TASKS = [
    OversizedResultTask,
    HugeSetResultTask,
    HugeIntResultTask,
    DeepResultTask,
    LimitDepthResultTask,
    OversizedRetryTask,
    DeepSkipMetadataTask,
]


def _configure(session: Session, task: type[TriggerTask]) -> None:
    session.manager.update_configuration(
        {
            "t_refused": {"after": ["start"], "run": task.name},
            "t_sibling": {"after": ["start"], "run": DevNullTask.name},
            "t_after_sibling": {"after": ["t_sibling"], "run": DevNullTask.name},
        }
    )


def _assert_failed_with_invalid_payload(session: Session, instance_name: str) -> TaskInstance:
    session.assertInstanceFailed(instance_name, InvalidPayload)
    instance = session.storage[instance_name]
    info = instance.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "InvalidPayload" in info and "Traceback" in info
    return instance


@pytest.mark.parametrize("task", REFUSED_TASKS, ids=lambda task: task.name.split(".")[-1])
def test_a_refused_outcome_fails_the_instance_and_the_rest_of_the_session_carries_on(
    make_session: SessionFactory, task: type[TriggerTask]
) -> None:
    session = make_session(manager_cls=FinalizingTriggerManager)
    _configure(session, task)
    session.fire("start")

    _assert_failed_with_invalid_payload(session, "t_refused#0")
    session.assertInstanceFinished("t_sibling#0")
    session.assertInstanceFinished("t_after_sibling#0")
    assert not [i.name for i in session.storage if i.status in (Status.SCHEDULED, Status.RUNNING)]
    # The failure is a failure like any other: it can be skipped, and then the session finalizes.
    assert FINALIZED not in session.storage.latest_kwargs
    session.manager.skip_failed_instance("t_refused#0")
    assert FINALIZED in session.storage.latest_kwargs


def test_the_failure_names_the_refused_report_and_the_limit(session: Session) -> None:
    _configure(session, OversizedResultTask)
    session.fire("start")

    instance = _assert_failed_with_invalid_payload(session, "t_refused#0")
    info = instance.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "MAX_PAYLOAD_BYTES" in info
    assert instance.metadata[TaskInstance.META_EXCEPTION_CONTEXT]["refused_report"] == Status.FINISHED
    assert len(info) < MAX_PAYLOAD_BYTES


def test_a_refused_retry_fails_without_a_replay(session: Session) -> None:
    _configure(session, OversizedRetryTask)
    session.fire("start")

    instance = _assert_failed_with_invalid_payload(session, "t_refused#0")
    assert "replacement_kwargs of this RetryRequested" in instance.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert instance.metadata[TaskInstance.META_EXCEPTION_CONTEXT]["refused_report"] == "retry"
    assert list(session.storage.instances_of_task("t_refused")) == ["t_refused#0"]


def test_a_failure_whose_description_breaks_the_limits_is_reported_clipped(session: Session) -> None:
    # The set's repr makes the message (and so the traceback) weigh more than
    # an input may carry: the failure is still reported, its text clipped.
    _configure(session, HugeMessageTask)
    session.fire("start")

    session.assertInstanceFailed("t_refused#0", ValueError)
    info = session.storage["t_refused#0"].metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "bad ids" in info
    assert "clipped" in info
