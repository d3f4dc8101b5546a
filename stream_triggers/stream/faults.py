"""Fault injection for the fault suite: freeze or kill the worker at a named point of a batch.

``STREAM_TRIGGERS_FAULTS="before-changelog=stop@3"`` sends SIGSTOP to the worker itself
the 3rd time it reaches ``before-changelog`` (``kill`` sends SIGKILL).  Unset in
production, each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "PURGE_POINTS", "reached"]

POINTS = ("before-changelog", "before-store", "before-commit", "after-commit")
"""Where a fault can be injected: the steps of the batch's commit order (checkpoint.py)."""
PURGE_POINTS = ("purge-before-tombstones", "purge-before-store", "purge-after-store")
"""The steps of a retention sweep (retention.py): after SessionPurged, after the tombstones, after RocksDB."""

_ACTIONS = {"stop": signal.SIGSTOP, "kill": signal.SIGKILL}


def _parse(spec: str) -> dict[str, tuple[int, int]]:
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, rest = item.partition("=")
        action, _, nth = rest.partition("@")
        if point not in (*POINTS, *PURGE_POINTS) or action not in _ACTIONS:
            points = POINTS + PURGE_POINTS
            raise ValueError(f"STREAM_TRIGGERS_FAULTS: cannot read {item!r} (points {points}, actions stop|kill)")
        faults[point] = (_ACTIONS[action], int(nth or 1))
    return faults


_faults = _parse(os.environ.get("STREAM_TRIGGERS_FAULTS", ""))
_hits: dict[str, int] = {}


def reached(point: str) -> None:
    """Called by the worker at ``point``; acts if a fault was set there for this hit."""
    fault = _faults.get(point)
    if fault is None:
        return
    _hits[point] = hits = _hits.get(point, 0) + 1
    if hits == fault[1]:
        os.kill(os.getpid(), fault[0])
