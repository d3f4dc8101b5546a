"""Build records with their envelope (event_id, session_uid, produced_at) filled in.

Why: every producer (application, executor, worker) must fill the same leading fields
the same way; a record built here has every schema field, so it encodes without
surprises and compares equal to what :func:`~stream_triggers.events.codec.decode`
gives back.  This is the one place records are put together: the builders of
:mod:`stream_triggers.events.records` (inputs, dead letters) and the worker's outputs
(:func:`output_record`) all come through :func:`event_record`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, NamedTuple

from stream_triggers.events.codec import NO_DEFAULT, field_defaults
from stream_triggers.events.errors import CodecError

__all__ = ["event_record", "new_event_id", "now_us", "output_record"]

_ENVELOPE = frozenset({"event_id", "session_uid", "produced_at"})


def now_us() -> int:
    """Microseconds since the Unix epoch, UTC (the ``produced_at`` unit)."""
    return time.time_ns() // 1_000


def new_event_id() -> str:
    """A random event id (uuid4 hex); worker outputs use deterministic ids instead."""
    return uuid.uuid4().hex


class _Template(NamedTuple):
    """What a type's records start from: every field in schema order, defaults filled in."""

    base: dict[str, Any]  # fields without a default hold None until set
    settable: frozenset[str]  # fields a caller may pass (not the envelope's own)
    required: frozenset[str]  # settable fields without a default
    has_event_id: bool


_templates: dict[str, _Template] = {}


def _template(type_name: str) -> _Template:
    template = _templates.get(type_name)
    if template is None:
        defaults = field_defaults(type_name)  # raises CodecError for an unknown type
        template = _templates[type_name] = _Template(
            {name: None if default is NO_DEFAULT else default for name, default in defaults.items()},
            frozenset(defaults) - _ENVELOPE,
            frozenset(name for name, default in defaults.items() if default is NO_DEFAULT) - _ENVELOPE,
            "event_id" in defaults,
        )
    return template


def event_record(
    type_name: str,
    session_uid: str | None,
    event_id: str | None = None,
    produced_at_us: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A complete ``type_name`` record: envelope + ``fields`` + schema defaults for the rest.

    ``event_id`` defaults to a fresh uuid4 hex and ``produced_at_us`` to now; a schema
    without ``event_id`` (SessionSnapshot) gets none.  Unknown or missing required fields
    raise :class:`CodecError` (``invalid_payload``) here rather than at encode time.
    """
    template = _template(type_name)
    if not template.settable.issuperset(fields):
        unknown = [name for name in fields if name not in template.settable]
        raise CodecError("invalid_payload", f"{type_name} has no field(s) {', '.join(map(repr, unknown))} to set")
    if not template.required.issubset(fields):
        missing = next(name for name in template.base if name in template.required and name not in fields)
        raise CodecError("invalid_payload", f"{type_name} needs field {missing!r}")
    record = template.base.copy()  # (schema order: the envelope first)
    if template.has_event_id:
        record["event_id"] = event_id if event_id is not None else new_event_id()
    elif event_id is not None:
        raise CodecError("invalid_payload", f"{type_name} records have no event_id")
    record["session_uid"] = session_uid
    record["produced_at"] = produced_at_us if produced_at_us is not None else now_us()
    record.update(fields)
    return record


def output_record(
    type_name: str,
    session_uid: str,
    event_id: str,
    produced_at_us: int,
    cause_event_id: str,
    cause_produced_at_us: int,
    **fields: Any,
) -> dict[str, Any]:
    """A record the worker produces because of an input (``InstanceStatusChanged``,
    ``TaskRunRequested``, ``SessionFinalized``): the envelope plus the cause's id and time."""
    return event_record(
        type_name,
        session_uid,
        event_id,
        produced_at_us,
        cause_event_id=cause_event_id,
        cause_produced_at=cause_produced_at_us,
        **fields,
    )
