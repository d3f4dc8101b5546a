"""A session as the worker's trigger manager sees it: storage over the batch's entry.

The worker runs the configured trigger manager over a :class:`WorkerSessionStorage`
whose "backend" is the batch's in-memory :class:`~stream_triggers.stream.partition.SessionEntry`,
so custom managers' hooks run exactly as in process.  Effects reach the outputs by one
route only: the manager's ``observer`` (see :mod:`stream_triggers.stream.outputs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from typing import Any

from stream_triggers.engine import SessionState
from stream_triggers.runners.base import BaseTaskRunner
from stream_triggers.runners.kafka import KafkaTaskRunner
from stream_triggers.runners.noop import NoopTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import SessionEntry

__all__ = ["OutputSink", "SessionEntry", "WorkerRunners", "WorkerSessionStorage"]


class WorkerRunners(Mapping[str, BaseTaskRunner]):
    """Every runner name routes to the task-runs topic, except ``noop`` (finishes inline)."""

    def __init__(self, sink: OutputSink) -> None:
        self._kafka = KafkaTaskRunner(sink)
        self._noop = NoopTaskRunner()

    def __getitem__(self, name: str) -> BaseTaskRunner:
        return self._noop if name == "noop" else self._kafka

    def get(self, name: str, default: Any = None) -> BaseTaskRunner:
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(("kafka", "noop"))

    def __len__(self) -> int:
        return 2


class WorkerSessionStorage(BaseTriggerStorage):
    """Storage over a batch's session entry: single-threaded, no reloads."""

    default_task_runner_name = "kafka"

    def __init__(self, uid: str, entry: SessionEntry) -> None:
        super().__init__(uid)
        self.entry = entry
        self._state = entry.state

    def fresh(self) -> WorkerSessionStorage:
        return WorkerSessionStorage(self.uid, self.entry)

    def _load_state(self) -> tuple[SessionState | None, int]:
        return self.entry.state, 0

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        self.entry.state = state
        return 0

    def _session_lock(self) -> nullcontext[None]:
        return nullcontext()

    def invalidate_cache(self) -> None:
        # Nothing to reload: the batch's entry is the only copy, kept current by save().
        self._state = self.entry.state
        self._views = {}
