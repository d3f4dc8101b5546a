"""Finishes every instance at once with an empty result, in the caller's process.

For benchmarks and dry runs: in a stream worker the task "runs" inside the worker,
so a chain of tasks resolves on the very input event that started it.
"""

from __future__ import annotations

from stream_triggers.engine import StatusReported
from stream_triggers.runners.base import BaseTaskRunner, RunnerHost
from stream_triggers.types import Status, TaskInstance

__all__ = ["NoopTaskRunner"]

_FINISHED_METADATA = {TaskInstance.META_RESULT: {}, TaskInstance.META_LOG_LEVEL: 0}


class NoopTaskRunner(BaseTaskRunner):
    name = "noop"

    def run(self, manager: RunnerHost, task_instance: TaskInstance) -> None:
        manager.run_inline(StatusReported(task_instance.name, Status.FINISHED, _FINISHED_METADATA, manager.clock(), {}))
