"""Translation between Kafka records and engine inputs / effects.

Inputs: a decoded ``triggers.events`` record becomes one engine :data:`Input`.
Outputs: engine effects become ``task-results`` and ``sessions`` records; the
``kafka`` runner's requests become ``task-runs`` records.  Everything here is plain
data in, plain data out, so it is shared by the worker, the application-side
``kafka`` storage and the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from stream_triggers.engine import (
    ConfigurationUpdated,
    Input,
    InvalidPayload,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
    checked_input,
)
from stream_triggers.events import jsonx
from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.types import PUBLISHED_STATUSES, Status

__all__ = [
    "EPOCH",
    "PUBLISHED_STATUSES",
    "datetime_from_us",
    "dead_letter_record",
    "encoded_input",
    "input_record",
    "uid_of_key",
    "input_from_record",
    "record_from_input",
    "us_from_datetime",
]

EPOCH = datetime(1970, 1, 1)


def datetime_from_us(us: int) -> datetime:
    """Naive UTC datetime from microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


def us_from_datetime(at: datetime) -> int:
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _mapping(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    value = jsonx.loads(text)
    if not isinstance(value, Mapping):
        raise InvalidPayload(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _status(value: str) -> Status:
    """A record's status name; an unknown one is the sender's error (``invalid_payload``), not the worker's."""
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise InvalidPayload(f"unknown status {value!r}; expected one of {known}") from None


def _status_reported(r: dict[str, Any], at: datetime) -> Input:
    return StatusReported(
        r["instance"],
        _status(r["status"]),
        _mapping(r["metadata_json"], "metadata_json"),
        at,
        _mapping(r.get("result_json"), "result_json"),
    )


_TO_INPUT: dict[str, Callable[[dict[str, Any], datetime], Input]] = {
    "TriggerFired": lambda r, at: TriggerFired(r["trigger"], _mapping(r["kwargs_json"], "kwargs_json"), at),
    "ConfigurationUpdated": lambda r, at: ConfigurationUpdated(
        _mapping(r["configuration_json"], "configuration_json"), at
    ),
    "InstanceStatusReported": _status_reported,
    "RetryRequested": lambda r, at: RetryRequested(
        r["instance"],
        _mapping(r["metadata_json"], "metadata_json"),
        _mapping(r.get("replacement_kwargs_json"), "replacement_kwargs_json"),
        r.get("cooldown_s"),
        at,
    ),
    "ReplayRequested": lambda r, at: ReplayRequested(
        r["instance"], _mapping(r.get("replacement_kwargs_json"), "replacement_kwargs_json"), at
    ),
    "SkipRequested": lambda r, at: SkipRequested(
        r["instance"], bool(r.get("cascade")), _mapping(r.get("result_json"), "result_json"), at
    ),
    "InstanceStatusUpdateRequested": lambda r, at: StatusUpdated(
        r["instance"],
        _status(r["status"]),
        _mapping(r.get("metadata_json") or "{}", "metadata_json"),
        bool(r.get("cascade")),
        _mapping(r.get("cascade_kwargs_json"), "cascade_kwargs_json"),
        at,
    ),
    "InstanceMetadataUpdateRequested": lambda r, at: MetadataUpdated(
        r["instance"], _mapping(r["metadata_json"], "metadata_json") or {}, at
    ),
    "LogsResolved": lambda r, at: LogsResolved(r["instance"], at),
}


def input_from_record(type_name: str, record: dict[str, Any]) -> Input:
    """The engine input an ``events`` record asks for (its ``at`` = ``produced_at``)."""
    convert = _TO_INPUT.get(type_name)
    if convert is None:
        raise InvalidPayload(f"{type_name} records do not belong on the events topic")
    at = record["produced_at"]
    try:
        produced_at = datetime_from_us(at)
    except OverflowError:
        raise InvalidPayload(f"produced_at {at} is outside the years 1-9999") from None
    return convert(record, produced_at)


def _dump(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else jsonx.dumps(value)


def record_from_input(event: Input) -> tuple[str, dict[str, Any]]:
    """The ``events`` record (type name, fields without the envelope) for an input.

    Its payloads are checked first (:func:`~stream_triggers.engine.checked_input`): what a
    storage would refuse to store is refused before it is published.
    """
    event = checked_input(event)
    kind = type(event)
    if kind is TriggerFired:
        return "TriggerFired", {"trigger": event.trigger, "kwargs_json": jsonx.dumps(event.kwargs)}
    if kind is ConfigurationUpdated:
        return "ConfigurationUpdated", {"configuration_json": jsonx.dumps(event.configuration)}
    if kind is StatusReported:
        return "InstanceStatusReported", {
            "instance": event.instance,
            "status": str(event.status),
            "metadata_json": jsonx.dumps(event.metadata or {}),
            "result_json": _dump(event.result),
        }
    if kind is RetryRequested:
        return "RetryRequested", {
            "instance": event.instance,
            "metadata_json": jsonx.dumps(event.metadata or {}),
            "replacement_kwargs_json": _dump(event.replacement_kwargs),
            "cooldown_s": None if event.cooldown is None else float(event.cooldown),
        }
    if kind is ReplayRequested:
        return "ReplayRequested", {
            "instance": event.instance,
            "replacement_kwargs_json": _dump(event.replacement_kwargs),
        }
    if kind is SkipRequested:
        return "SkipRequested", {
            "instance": event.instance,
            "cascade": event.cascade,
            "result_json": _dump(event.result),
        }
    if kind is StatusUpdated:
        return "InstanceStatusUpdateRequested", {
            "instance": event.instance,
            "status": str(event.status),
            "metadata_json": jsonx.dumps(event.metadata or {}),
            "cascade": event.cascade,
            "cascade_kwargs_json": _dump(event.cascade_kwargs),
        }
    if kind is MetadataUpdated:
        return "InstanceMetadataUpdateRequested", {
            "instance": event.instance,
            "metadata_json": jsonx.dumps(event.metadata),
        }
    if kind is LogsResolved:
        return "LogsResolved", {"instance": event.instance}
    raise TypeError(f"no events record for {kind.__name__}")


def input_record(
    session_uid: str, event: Input, *, event_id: str | None = None, produced_at_us: int | None = None
) -> tuple[str, dict[str, Any]]:
    """The complete ``events`` record (type name, record with its envelope) asking for ``event``.

    What the application (``kafka`` storage, CLI) and the executor publish; ``event_id``
    defaults to a fresh uuid4 hex and ``produced_at_us`` to now.
    """
    type_name, fields = record_from_input(event)
    return type_name, event_record(type_name, session_uid, event_id, produced_at_us, **fields)


def encoded_input(session_uid: str, event: Input) -> bytes:
    """:func:`input_record`, encoded: the value to produce on the ``events`` topic."""
    return encode(*input_record(session_uid, event))


def uid_of_key(key: bytes | None) -> str | None:
    """The session UID a record key names, or None for a missing or non-UTF-8 key."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def dead_letter_record(
    event_id: str,
    reason: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    produced_at: int,
) -> dict[str, Any]:
    """A ``DeadLetter`` record: the reason, and the original record byte for byte."""
    return event_record(
        "DeadLetter",
        uid_of_key(key),
        event_id,
        produced_at,
        reason=reason,
        error=error,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
    )
