"""Changelog record headers of sessions that end (docs/operating.md, "Sessions that end").

A purged session gets a **tombstone** (null value, so compaction removes the key) for
every changelog key it has - its header, every instance part, its whole-session key -
each with two headers: the owner epoch of the worker that purged it (a reader ignores a
tombstone from an owner that had been replaced, as it ignores that owner's states) and
the applied offset of the state it ends (a reader drops only that state or an older
one, never a newer state of the same session).  A tombstone carrying these marks ends
the whole session, whichever of its keys it is on: a reader that saw only some of a
purge's tombstones (a crash mid-purge) holds nothing of the session, not half of it.

A session's header (or whole-session) record carries ``finalized-at``: when the worker
saw it finalized, from which ``--session-retention`` counts; a restore on an empty state
dir rebuilds the store's ages from it (the record's ``produced_at`` is the last input's
time, from which ``--session-ttl`` counts).  Headers, not schema fields: the
``SessionSnapshot`` schema (and its fingerprint, which the native core knows) is unchanged.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = [
    "FINALIZED_AT",
    "TOMBSTONE_EPOCH",
    "TOMBSTONE_OFFSET",
    "finalized_at",
    "finalized_headers",
    "tombstone_ends",
    "tombstone_headers",
    "tombstone_marks",
]

TOMBSTONE_EPOCH = "owner-epoch"
TOMBSTONE_OFFSET = "applied-offset"
FINALIZED_AT = "finalized-at"
_LONG = struct.Struct(">q")


def tombstone_headers(epoch: int, applied_offset: int) -> list[tuple[str, bytes]]:
    """The headers of a tombstone written by owner ``epoch`` for the state at ``applied_offset``."""
    return [(TOMBSTONE_EPOCH, _LONG.pack(epoch)), (TOMBSTONE_OFFSET, _LONG.pack(applied_offset))]


def _longs(headers: Any) -> dict[str, int]:
    marks: dict[str, int] = {}
    for name, value in headers or ():
        if isinstance(value, bytes) and len(value) == 8:
            marks[name] = _LONG.unpack(value)[0]
    return marks


def tombstone_marks(headers: Any) -> tuple[int, int] | None:
    """``(epoch, applied offset)`` of a purge's tombstone; None for a tombstone without both (not a purge)."""
    marks = _longs(headers)
    if TOMBSTONE_EPOCH not in marks or TOMBSTONE_OFFSET not in marks:
        return None
    return marks[TOMBSTONE_EPOCH], marks[TOMBSTONE_OFFSET]


def tombstone_ends(marks: tuple[int, int], kept: tuple[int, int]) -> bool:
    """Whether a tombstone marked ``(epoch, applied offset)`` ends a kept state of that version: it
    is the state the purge ended, or an older one."""
    return kept <= marks


def finalized_headers(at_us: int) -> list[tuple[str, bytes]] | None:
    """The headers of a state record finalized at ``at_us`` (None: not finalized, no headers)."""
    return [(FINALIZED_AT, _LONG.pack(at_us))] if at_us else None


def finalized_at(headers: Any) -> int:
    """When a state record's session was finalized (µs since the epoch), 0: not (or not said)."""
    return _longs(headers).get(FINALIZED_AT, 0) if headers else 0
