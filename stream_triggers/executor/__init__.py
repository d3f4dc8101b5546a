"""The task executor: consumes task-run requests, runs the user's tasks, reports back.

``executor.py`` the consumer loop and the group; ``run.py`` one request; ``reports.py``
publishing outcomes and dead letters; ``offsets.py`` what may be committed;
``shutdown.py`` bounded blocking calls; ``settings.py`` and ``stats.py`` the rest.
"""

from stream_triggers.executor.executor import TaskExecutor
from stream_triggers.executor.reports import OutcomeNotPublishable, OutcomeTooLarge
from stream_triggers.executor.settings import ExecutorSettings, import_task_modules
from stream_triggers.executor.stats import ExecutorStats

__all__ = [
    "ExecutorSettings",
    "ExecutorStats",
    "OutcomeNotPublishable",
    "OutcomeTooLarge",
    "TaskExecutor",
    "import_task_modules",
]
