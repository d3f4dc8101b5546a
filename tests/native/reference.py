"""The Python side of the differential tests: what the worker does with one ``events`` record.

``PythonSide.apply`` follows ``StreamWorker._apply`` step for step (key, decode, key match,
already-applied offset, input, manager, sink), without Kafka, and answers in the native
core's terms (``("applied", type, outputs)``, ``("skipped", type)``, ``("dead", reason,
message)``), so both engines can be fed the same records and compared input by input.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from stream_triggers.engine import EngineError, SessionState, validation
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.records import input_from_record, us_from_datetime
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import trigger_managers
from stream_triggers.stream.inputs import Rejected, reason_of
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import SessionEntry
from stream_triggers.stream.session import WorkerRunners, WorkerSessionStorage

TOPICS = Topics(prefix="triggers")


class PythonSide:
    """Session entries and the configured manager, as one worker partition holds them."""

    def __init__(self, manager: str = "default") -> None:
        self.manager_class = trigger_managers.get_class(manager)
        self.sessions: dict[str, SessionEntry] = {}
        self.sink = OutputSink(TOPICS)
        self.runners = WorkerRunners(self.sink)
        self._event_at: datetime | None = None

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None, now_us: int) -> tuple:
        # A configuration equal (keys sorted) to one built before comes back from a process-wide
        # cache in that earlier payload's task order, and task order decides the order a fire
        # settles tasks in.  The reference runs cold, so the order is this payload's own.
        validation._shared.clear()
        try:
            if key is None:
                raise Rejected("missing_key", "events records must be keyed by session UID")
            uid = key.decode()
            type_name, record = decode(value or b"")
            if record.get("session_uid") != uid:
                raise Rejected(
                    "key_mismatch", f"record session_uid {record.get('session_uid')!r} differs from key {uid!r}"
                )
            entry = self.sessions.get(uid) or SessionEntry()
            if offset <= entry.applied_offset:
                return ("skipped", type_name)
            try:
                event = input_from_record(type_name, record)
            except OverflowError as exc:
                # A produced_at beyond the years 1-9999 escapes the worker's handler today (a bug
                # in records.datetime_from_us, reported); the native core dead-letters it.
                at = record["produced_at"]
                raise Rejected("invalid_payload", f"produced_at {at} is outside the years 1-9999") from exc
        except Rejected as exc:
            return ("dead", exc.reason, str(exc))
        except (CodecError, EngineError, StateFormatError, UnicodeDecodeError) as exc:
            return ("dead", reason_of(exc), str(exc))
        sink = self.sink
        sink.begin(uid, key, record["event_id"], record["produced_at"], f"{partition}:{offset}", now_us)
        before = entry.state
        self._event_at = event.at
        manager = self.manager_class(
            WorkerSessionStorage(uid, entry), runners=self.runners, clock=lambda: self._event_at, observer=sink.effects
        )
        try:
            manager.submit(event)
        except Exception as exc:
            entry.state = before
            sink.discard()
            return ("dead", reason_of(exc), str(exc))
        entry.applied_offset = offset
        self.sessions[uid] = entry
        return ("applied", type_name, [(topic, value) for topic, _key, value in sink.outputs])

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
