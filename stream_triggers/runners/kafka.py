"""Publishes "run this instance" to the task-runs topic for an executor to pick up.

Only meaningful inside a stream worker, which gives the runner its output sink; the
request carries the runner name (the task's ``using``), so executors started with
``--runner NAME`` only take the tasks routed to them.
"""

from __future__ import annotations

from typing import Protocol

from stream_triggers.runners.base import BaseTaskRunner, RunnerHost
from stream_triggers.types import TaskInstance

__all__ = ["KafkaTaskRunner", "TaskRunSink"]


class TaskRunSink(Protocol):
    def task_run(self, manager: RunnerHost, task_instance: TaskInstance) -> None: ...


class KafkaTaskRunner(BaseTaskRunner):
    name = "kafka"

    def __init__(self, sink: TaskRunSink | None = None) -> None:
        self.sink = sink

    def run(self, manager: RunnerHost, task_instance: TaskInstance) -> None:
        if self.sink is None:
            raise RuntimeError(
                "The 'kafka' task runner publishes to the task-runs topic and only works inside "
                "a stream worker (stream-triggers worker); in process, use 'threading'."
            )
        self.sink.task_run(manager, task_instance)
