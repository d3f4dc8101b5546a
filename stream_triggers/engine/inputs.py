"""Everything that can happen to a session, as plain records.

Every input carries its own timestamp ``at`` (naive UTC, as the original framework
stored them): the engine never reads a clock.  Inputs are never changed once built
(not frozen dataclasses only because those cost three times as much to construct).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "Input",
    "ConfigurationUpdated",
    "TriggerFired",
    "StatusUpdated",
    "StatusReported",
    "RetryRequested",
    "ReplayRequested",
    "SkipRequested",
    "MetadataUpdated",
    "LogsResolved",
]

Kwargs = Mapping[str, Any]


@dataclass(slots=True)
class ConfigurationUpdated:
    """Add or replace task configurations (``TriggerManager.update_configuration``)."""

    configuration: Mapping[str, Mapping[str, Any]]
    at: datetime


@dataclass(slots=True)
class TriggerFired:
    """A trigger fired, by the application or as a cascade of a finished task."""

    trigger: str
    kwargs: Kwargs
    at: datetime


@dataclass(slots=True)
class StatusUpdated:
    """An administrative status change: applied whatever the current status."""

    instance: str
    status: str
    metadata: Kwargs | None
    cascade: bool
    cascade_kwargs: Kwargs | None
    at: datetime


@dataclass(slots=True)
class StatusReported:
    """A task runner's report (running / finished / failed / skipped).

    Unlike :class:`StatusUpdated` it is guarded: a duplicate or late report (e.g. a
    second "finished" after an executor re-ran the task) changes nothing.
    A ``finished`` report cascades with its result.
    """

    instance: str
    status: str
    metadata: Kwargs | None
    at: datetime
    result: Kwargs | None = None


@dataclass(slots=True)
class RetryRequested:
    """A running task asked to be retried: failed, then replayed after ``cooldown`` s."""

    instance: str
    metadata: Kwargs | None
    replacement_kwargs: Kwargs | None
    cooldown: float | None
    at: datetime


@dataclass(slots=True)
class ReplayRequested:
    """Replay a failed instance (optionally with replacement trigger kwargs)."""

    instance: str
    replacement_kwargs: Kwargs | None
    at: datetime


@dataclass(slots=True)
class SkipRequested:
    """Mark a failed instance skipped, optionally cascading a fake result."""

    instance: str
    cascade: bool
    result: Kwargs | None
    at: datetime


@dataclass(slots=True)
class MetadataUpdated:
    """Merge keys into an instance's metadata without changing its status."""

    instance: str
    metadata: Kwargs
    at: datetime


@dataclass(slots=True)
class LogsResolved:
    """Mark an instance's logged warnings/errors as dealt with."""

    instance: str
    at: datetime


Input = (
    ConfigurationUpdated
    | TriggerFired
    | StatusUpdated
    | StatusReported
    | RetryRequested
    | ReplayRequested
    | SkipRequested
    | MetadataUpdated
    | LogsResolved
)
