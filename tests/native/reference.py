"""The Python side of the differential tests: what the worker does with one ``events`` record.

``PythonSide.apply`` runs the worker's own :class:`~stream_triggers.stream.inputs.InputApplier`
over a partition without a store (no Kafka, no RocksDB) and answers in the native core's
terms (``("applied", type, outputs)``, ``("skipped", type)``, ``("dead", reason, message)``),
so both engines can be fed the same records and compared input by input.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any
from unittest import mock

from stream_triggers.engine import SessionState
from stream_triggers.events.codec import decode
from stream_triggers.events.records import us_from_datetime
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import trigger_managers
from stream_triggers.stream import inputs
from stream_triggers.stream.inputs import InputApplier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import Partition, SessionEntry
from stream_triggers.stream.settings import WorkerSettings, WorkerStats

TOPICS = Topics(prefix="triggers")


class NoStore:
    """A partition store that never held anything (every session starts new)."""

    def get(self, uid: str) -> None:
        return None

    def read_session(self, uid: str) -> None:
        return None

    def quarantined(self, uid: str) -> None:
        return None


class PythonSide:
    """One worker partition on the Python engine, fed records one at a time."""

    def __init__(self, manager: str = "default") -> None:
        self.stats = WorkerStats()
        settings = WorkerSettings(bootstrap="", state_dir="", manager=manager)
        self.applier = InputApplier(trigger_managers.get_class(manager), OutputSink(TOPICS), self.stats, settings)
        self.partition = Partition(0, NoStore())  # type: ignore[arg-type]

    @property
    def sessions(self) -> dict[str, SessionEntry]:
        """Sessions an input was applied to (an entry a refused input made is not a session yet)."""
        return {uid: e for uid, e in self.partition.sessions.items() if e.applied_offset >= 0}

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None, now_us: int) -> tuple:
        self.partition.number = partition
        applied, skipped = self.stats.events_applied, self.stats.events_skipped_applied
        with mock.patch.object(inputs, "now_us", lambda: now_us):
            outputs = self.applier.apply(self.partition, offset, key, value)
        self.partition.dirty.clear()
        if self.stats.events_skipped_applied > skipped:
            return ("skipped", decode(value or b"")[0])
        if self.stats.events_applied > applied:
            return ("applied", decode(value or b"")[0], [(topic, value) for topic, _key, value in outputs])
        [(_topic, _key, dead)] = outputs
        record = decode(dead)[1]
        return ("dead", record["reason"], record["error"])

    def state(self, uid: str) -> Any:
        entry = self.sessions.get(uid)
        return None if entry is None else comparable(entry.state)


def _timeless(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$time": us_from_datetime(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$st": "float", "v": repr(value)}  # (as jsonx writes it, and nan == nan there)
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_timeless(v) for v in value]
    return value


def comparable(state: SessionState) -> Any:
    """The state in the form ``NativeCore.state_json`` gives (datetimes as ``{"$time": µs}``, other floats jsonx)."""
    return _timeless(
        {
            "tasks": [[name, config.serialize()] for name, config in state.tasks.items()],
            "instances": [
                [i.name, i.config.name, str(i.status), dict(i.kwargs), dict(i.metadata), sorted(i.abandon_state)]
                for i in state.instances.values()
            ],
            "latest_kwargs": dict(state.latest_kwargs),
            "metadata": dict(state.metadata),
        }
    )


def native_state(core: Any, uid: str) -> Any:
    text = core.state_json(uid)
    return None if text is None else json.loads(text)


JSON_FIELDS = ("metadata_json", "kwargs_json")


def decoded(value: bytes) -> tuple[str, dict[str, Any]]:
    """A record with its JSON fields parsed (dicts compare regardless of key order)."""
    type_name, record = decode(value)
    return type_name, {k: json.loads(v) if k in JSON_FIELDS else v for k, v in record.items()}
