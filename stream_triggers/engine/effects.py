"""What a transition asks the outside world to do, or tells it happened."""

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


@dataclass(frozen=True, slots=True)
class RunInstance:
    """Hand this (now ``scheduled``) instance to its task runner."""

    instance: TaskInstance


@dataclass(frozen=True, slots=True)
class InstanceChanged:
    """An instance was created or changed status; ``previous`` is None for a new one."""

    instance: TaskInstance
    previous: str | None


@dataclass(frozen=True, slots=True)
class Cascade:
    """Fire ``trigger`` (a task's name) with ``kwargs`` (its result) next."""

    trigger: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Fired:
    """A trigger was applied; ``scheduled`` are the instances it made ready (``_post_fire``)."""

    trigger: str
    scheduled: tuple[TaskInstance, ...]


@dataclass(frozen=True, slots=True)
class Replayed:
    """A failed instance was replayed into ``replay`` (``_post_replay``)."""

    failed: TaskInstance
    replay: TaskInstance


@dataclass(frozen=True, slots=True)
class Skipped:
    """A failed instance was skipped (``_post_skip``, after any cascade)."""

    instance: TaskInstance
    cascade: bool


@dataclass(frozen=True, slots=True)
class Ignored:
    """A status report that changed nothing (duplicate or late), with the reason."""

    instance: str
    reason: str


Effect = RunInstance | InstanceChanged | Cascade | Fired | Replayed | Skipped | Ignored
