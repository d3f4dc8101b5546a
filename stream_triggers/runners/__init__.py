"""Task runners: ``threading`` (in process) and ``kafka`` (via the task-runs topic)."""

from stream_triggers.runners.base import BaseTaskRunner, RunnerHost, task_runners
from stream_triggers.runners.threading import ThreadingTaskRunner

__all__ = ["BaseTaskRunner", "DEFAULT_TASK_RUNNER", "RunnerHost", "ThreadingTaskRunner", "task_runners"]

DEFAULT_TASK_RUNNER: type[BaseTaskRunner] = ThreadingTaskRunner
"""Runner class for tasks without ``using`` on the in-process storages (memory, rocksdb).

Patch it, as the original's testing mixin did, to change that default; the ``kafka``
storage and the stream worker route tasks to executors whatever it says.
"""
