"""The task executor: consumes task-run requests, runs the user's tasks, reports back."""

from stream_triggers.executor.executor import ExecutorSettings, ExecutorStats, TaskExecutor, import_task_modules

__all__ = ["ExecutorSettings", "ExecutorStats", "TaskExecutor", "import_task_modules"]
