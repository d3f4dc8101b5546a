"""One request, start to end: report ``running``, run the task, report its outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from stream_triggers.engine import StatusReported
from stream_triggers.failures import reportable_failure
from stream_triggers.manager import trigger_managers
from stream_triggers.registry import RegistryKeyError
from stream_triggers.storages.kafka import KafkaStorage
from stream_triggers.task import (
    Changed,
    Failed,
    Finished,
    Retried,
    TaskContext,
    UnknownTask,
    execute,
    outcome_input,
    resolve_task,
    running_input,
)
from stream_triggers.types import Status, TaskInstance

from .reports import Reporter
from .stats import TaskCounters

__all__ = ["run_request"]

log = logging.getLogger(__name__)

_OUTCOMES = {Finished: "finished", Failed: "failed", Retried: "retried", Changed: "status_changed"}
NOT_PUBLISHED = "outcome_not_published"
"""The outcome could not travel as an event and was reported as ``failed`` instead."""


def run_request(
    record: Mapping[str, Any],
    kwargs: dict[str, Any],
    storage: KafkaStorage,
    reporter: Reporter,
    counters: TaskCounters,
    import_errors: Mapping[str, str],
    now: Callable[[], Any],
) -> None:
    """Run the task a ``TaskRunRequested`` record names and report every step through ``reporter``.

    Raises only when a report could not be published (the request then runs again).
    """
    uid, instance, run = record["session_uid"], record["instance"], record["run"]
    extra = {"session_uid": uid, "instance": instance, "task": run}

    def manager_factory() -> Any:
        try:
            return trigger_managers.get(record["manager"], storage=storage)
        except RegistryKeyError:
            return trigger_managers.get("default", storage=storage)

    if not reporter.report(storage, running_input(instance, kwargs, now())):
        counters.outcome(run, NOT_PUBLISHED, None)
        return
    try:
        task_cls = resolve_task(run)
    except UnknownTask as exc:
        if import_errors:
            exc = UnknownTask(f"{exc} Task modules that failed to import: {dict(import_errors)}")
        log.error("task %s for %s failed: %s", run, instance, exc, extra=extra)
        reporter.report(storage, StatusReported(instance, Status.FAILED, reportable_failure(exc), now()))
        counters.outcome(run, "unknown_task", None)
        return
    counters.started()
    context = TaskContext(instance, kwargs, manager_factory, session_uid=uid)
    started = time.perf_counter()
    try:
        outcome = execute(task_cls, context, record["depth"])
    finally:
        elapsed = time.perf_counter() - started
        counters.ran()
    if isinstance(outcome, Failed):
        error = outcome.metadata.get(TaskInstance.META_EXCEPTION_TYPE)
        log.warning("task %s for %s failed: %s", run, instance, error, extra=extra)
    elif isinstance(outcome, Retried):
        log.info("task %s for %s asked to retry (cooldown %s s)", run, instance, outcome.cooldown, extra=extra)
    reported = reporter.report(storage, outcome_input(instance, outcome, now()))
    counters.outcome(run, _OUTCOMES.get(type(outcome), "other") if reported else NOT_PUBLISHED, elapsed)
