"""Where a worker input's outputs go: records built from its effects and task-run requests.

The :class:`OutputSink` is the one route by which the worker learns what an input
did: the manager calls :meth:`OutputSink.effects` as its ``observer`` after every
transition, and the ``kafka`` runner calls :meth:`OutputSink.task_run`.  Outputs of one
input are held until it has been applied completely, so an input that fails half-way
emits nothing (:meth:`OutputSink.discard`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stream_triggers.engine import Effect, Fired, InstanceChanged
from stream_triggers.events import jsonx
from stream_triggers.events.codec import decode, encode
from stream_triggers.events.records import dead_letter_record, us_from_datetime
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.stats import OutputCounts
from stream_triggers.runners.base import task_kwargs
from stream_triggers.types import PUBLISHED_STATUSES, SESSION_FINALIZED, TaskInstance

if TYPE_CHECKING:
    from stream_triggers.manager import TriggerManager

__all__ = ["Output", "OutputSink", "manager_key"]

Output = tuple[str, bytes | None, bytes]
"""(topic, key, value) ready to produce."""


class OutputSink:
    """Collects the output records of the input being applied."""

    def __init__(self, topics: Topics, counts: OutputCounts | None = None) -> None:
        self.topics = topics
        self.counts = OutputCounts() if counts is None else counts
        self.outputs: list[Output] = []
        self._key = b""
        self._uid = ""
        self._cause_id = ""
        self._cause_at = 0
        self._id_prefix = ""
        self._now_us = 0

    def begin(self, uid: str, key: bytes, cause_id: str, cause_at: int, id_prefix: str, now_us: int) -> None:
        """Start collecting for one input; output ids are ``<id_prefix>:<n>``."""
        self.outputs = []
        self._uid, self._key = uid, key
        self._cause_id, self._cause_at = cause_id, cause_at
        self._id_prefix, self._now_us = id_prefix, now_us

    def _envelope(self) -> dict[str, Any]:
        return {
            "event_id": f"{self._id_prefix}:{len(self.outputs)}",
            "session_uid": self._uid,
            "produced_at": self._now_us,
            "cause_event_id": self._cause_id,
            "cause_produced_at": self._cause_at,
        }

    def effects(self, effects: list[Effect]) -> None:
        """The manager's observer: every transition's effects, as they happen."""
        for effect in effects:
            kind = type(effect)
            if kind is InstanceChanged:
                instance = effect.instance
                status = instance.status
                if status in PUBLISHED_STATUSES and status != effect.previous:
                    self._status_changed(instance, effect.previous)
            elif kind is Fired and effect.trigger == SESSION_FINALIZED:
                record = self._envelope()
                record["kwargs_json"] = "{}"
                self.outputs.append((self.topics.sessions, self._key, encode("SessionFinalized", record)))
                self.counts.sessions_finalized += 1

    def _status_changed(self, instance: TaskInstance, previous: str | None) -> None:
        record = self._envelope()
        metadata = {k: v for k, v in instance.metadata.items() if k != TaskInstance.META_TIMESTAMPS}
        record["instance"] = instance.name
        record["task"] = instance.config.name
        record["status"] = str(instance.status)
        record["previous_status"] = None if previous is None else str(previous)
        record["metadata_json"] = _metadata_json(metadata)
        self.outputs.append((self.topics.task_results, self._key, encode("InstanceStatusChanged", record)))
        statuses = self.counts.statuses
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1

    def task_run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        """The ``kafka`` runner's request: publish "run this instance" to task-runs."""
        record = self._envelope()
        config = task_instance.config
        cooldown = task_instance.cooldown
        record["instance"] = task_instance.name
        record["task"] = config.name
        record["run"] = config.run
        record["runner"] = config.using or manager.default_task_runner_name
        record["manager"] = manager_key(manager)
        record["kwargs_json"] = jsonx.dumps(task_kwargs(task_instance))
        record["depth"] = task_instance.depth
        record["not_before"] = us_from_datetime(manager.clock() + timedelta(seconds=float(cooldown))) if cooldown else 0
        self.outputs.append((self.topics.task_runs, self._key, encode("TaskRunRequested", record)))
        self.counts.task_runs += 1

    def discard(self) -> None:
        """Drop the outputs of an input that failed half-way, and take them off the counts."""
        counts = self.counts
        for topic, _key, value in self.outputs:
            if topic == self.topics.task_runs:
                counts.task_runs -= 1
            elif topic == self.topics.sessions:
                counts.sessions_finalized -= 1
            elif topic == self.topics.task_results:
                status = decode(value)[1]["status"]
                counts.statuses[status] -= 1
        self.outputs = []

    def dead_letter(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str, error: str, now_us: int
    ) -> Output:
        """The dead-letter record of the ``events`` input at ``partition:offset``."""
        record = dead_letter_record(
            f"{partition}:{offset}:dead-letter",
            reason,
            error,
            self.topics.events,
            partition,
            offset,
            key,
            value,
            now_us,
        )
        return self.topics.dead_letter, key, encode("DeadLetter", record)


def _metadata_json(metadata: dict[str, Any]) -> str:
    """Plain JSON when it can be (most metadata is), jsonx for datetimes and friends."""
    try:
        return _plain_dumps(metadata)
    except (TypeError, ValueError):
        return jsonx.dumps(metadata)


_plain_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def manager_key(manager: TriggerManager) -> str:
    """The registry key that rebuilds this manager's class (``default`` if unregistered)."""
    return getattr(type(manager), "triggers__registry_key", None) or manager.name or "default"
