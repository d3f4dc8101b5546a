"""Task runners: ``threading`` (in process) and ``kafka`` (via the task-runs topic)."""

from stream_triggers.runners.base import BaseTaskRunner, task_runners
from stream_triggers.runners.threading import ThreadingTaskRunner

__all__ = ["BaseTaskRunner", "ThreadingTaskRunner", "task_runners"]
