"""What the executor counts for its metrics (read by :mod:`stream_triggers.ops.metrics`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from stream_triggers.ops.stats import TASK_SECONDS_BUCKETS, Buckets

__all__ = ["ExecutorStats", "TaskCounters"]


@dataclass
class ExecutorStats:
    """Per-task counters the metrics endpoint reads; pool threads update them under a lock.

    ``outcomes``: TriggerTask name -> outcome (``finished``, ``failed``, ``retried``,
    ``status_changed``, ``unknown_task``, ``outcome_not_published``) -> count; ``durations``:
    TriggerTask name -> seconds its ``_run`` took.
    """

    running: int = 0  # tasks inside _run right now
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    durations: dict[str, Buckets] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    report_errors: int = 0  # report attempts that failed (the request stays uncommitted)


class TaskCounters:
    """The executor's counters and the lock its pool threads share to update them."""

    def __init__(self) -> None:
        self.stats: dict[str, int] = {"started": 0, "finished": 0, "failed": 0, "retried": 0, "other": 0}
        """Totals by coarse outcome (``tasks_started`` and the legacy summary)."""
        self.task_stats = ExecutorStats()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.stats["started"] += 1
            self.task_stats.running += 1

    def ran(self) -> None:
        with self._lock:
            self.task_stats.running -= 1

    def outcome(self, task: str, outcome: str, seconds: float | None) -> None:
        legacy = outcome if outcome in ("finished", "failed", "retried") else "other"
        if outcome in ("unknown_task", "outcome_not_published"):
            legacy = "failed"
        with self._lock:
            stats = self.task_stats
            self.stats[legacy] += 1
            by_outcome = stats.outcomes.setdefault(task, {})
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
            if seconds is not None:
                durations = stats.durations.get(task)
                if durations is None:
                    durations = stats.durations[task] = Buckets(TASK_SECONDS_BUCKETS)
                durations.observe(seconds)

    def dead_letter(self, reason: str) -> None:
        with self._lock:
            self.task_stats.dead_letters[reason] = self.task_stats.dead_letters.get(reason, 0) + 1

    def report_error(self) -> None:
        with self._lock:
            self.task_stats.report_errors += 1
