"""What a transition asks the outside world to do, or tells it happened.

Records are never changed once built.  They are not frozen dataclasses only because
those cost three times as much to construct, and every event builds several.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_triggers.types import TaskInstance

__all__ = [
    "Effect",
    "RunInstance",
    "InstanceChanged",
    "Cascade",
    "Fired",
    "Replayed",
    "Skipped",
    "Ignored",
]


@dataclass(slots=True)
class RunInstance:
    """Hand this (now ``scheduled``) instance to its task runner."""

    instance: TaskInstance


@dataclass(slots=True)
class InstanceChanged:
    """An instance was created or changed status; ``previous`` is None for a new one."""

    instance: TaskInstance
    previous: str | None


@dataclass(slots=True)
class Cascade:
    """Fire ``trigger`` (a task's name) with ``kwargs`` (its result) next."""

    trigger: str
    kwargs: Mapping[str, Any]


@dataclass(slots=True)
class Fired:
    """A trigger was applied; ``scheduled`` are the instances it made ready (``_post_fire``)."""

    trigger: str
    scheduled: tuple[TaskInstance, ...]


@dataclass(slots=True)
class Replayed:
    """A failed instance was replayed into ``replay`` (``_post_replay``)."""

    failed: TaskInstance
    replay: TaskInstance


@dataclass(slots=True)
class Skipped:
    """A failed instance was skipped (``_post_skip``, after any cascade)."""

    instance: TaskInstance
    cascade: bool


@dataclass(slots=True)
class Ignored:
    """A status report that changed nothing (duplicate or late), with the reason."""

    instance: str
    reason: str


Effect = RunInstance | InstanceChanged | Cascade | Fired | Replayed | Skipped | Ignored
