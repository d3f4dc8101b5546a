"""Build records with their envelope (event_id, session_uid, produced_at) filled in.

Why: every producer (application, executor, worker) must fill the same leading fields
the same way; a record built here has every schema field, so it encodes without
surprises and compares equal to what :func:`~stream_triggers.events.codec.decode`
gives back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from stream_triggers.events.codec import NO_DEFAULT, field_defaults
from stream_triggers.events.errors import CodecError

__all__ = ["event_record", "new_event_id", "now_us"]


def now_us() -> int:
    """Microseconds since the Unix epoch, UTC (the ``produced_at`` unit)."""
    return time.time_ns() // 1_000


def new_event_id() -> str:
    """A random event id (uuid4 hex); worker outputs use deterministic ids instead."""
    return uuid.uuid4().hex


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
    defaults = field_defaults(type_name)
    unknown = [name for name in fields if name not in defaults or name in ("event_id", "produced_at")]
    if unknown:
        raise CodecError("invalid_payload", f"{type_name} has no field(s) {', '.join(map(repr, unknown))} to set")
    record: dict[str, Any] = {}
    for name, default in defaults.items():
        if name == "event_id":
            record[name] = event_id if event_id is not None else new_event_id()
        elif name == "session_uid":
            record[name] = session_uid
        elif name == "produced_at":
            record[name] = produced_at_us if produced_at_us is not None else now_us()
        elif name in fields:
            record[name] = fields[name]
        elif default is not NO_DEFAULT:
            record[name] = default
        else:
            raise CodecError("invalid_payload", f"{type_name} needs field {name!r}")
    if event_id is not None and "event_id" not in defaults:
        raise CodecError("invalid_payload", f"{type_name} records have no event_id")
    return record
