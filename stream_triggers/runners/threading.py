"""Runs each task instance in its own thread of this process (tests, small apps)."""

from __future__ import annotations

import threading
import time

from stream_triggers.engine import Input
from stream_triggers.runners.base import BaseTaskRunner, RunnerHost, fail_instance, task_kwargs
from stream_triggers.task import TaskContext, execute, outcome_input, running_input
from stream_triggers.types import TaskInstance

__all__ = ["ThreadingTaskRunner"]

_threads: list[threading.Thread] = []
_threads_guard = threading.Lock()


class ThreadingTaskRunner(BaseTaskRunner):
    """One thread per instance; a cooldown sleeps in that thread only."""

    name = "threading"

    @classmethod
    def join_all(cls) -> None:
        """Wait for every task thread, including those started by cascades and retries."""
        if threading.current_thread() in _threads:
            raise ValueError(f"Cannot call `join_all` from task thread {threading.current_thread()!r}.")
        while True:
            with _threads_guard:
                if not _threads:
                    return
                thread = _threads.pop(0)
            thread.join()

    def run(self, manager: RunnerHost, task_instance: TaskInstance) -> None:
        task_cls = self.resolve(task_instance.config.run)
        kwargs = task_kwargs(task_instance)
        task_manager = manager.rebuild()
        context = TaskContext(task_instance.name, kwargs, lambda: task_manager, session_uid=manager.storage.uid)

        def work() -> None:
            report: Input | None = None
            try:
                if task_instance.cooldown:
                    time.sleep(float(task_instance.cooldown))
                task_manager.submit(running_input(task_instance.name, kwargs, task_manager.clock()))
                outcome = execute(task_cls, context, task_instance.depth)
                report = outcome_input(task_instance.name, outcome, task_manager.clock())
                task_manager.submit(report)
            except Exception as exc:  # e.g. the report refused by the payload rules: fail, never hang
                fail_instance(task_manager, task_instance.name, exc, report)

        thread = threading.Thread(target=work, name=f"task {task_instance.name}", daemon=True)
        with _threads_guard:
            _threads.append(thread)
        try:
            thread.start()
        except BaseException:  # (no thread: join_all must not wait for it; the manager fails the instance)
            with _threads_guard:
                _threads.remove(thread)
            raise
