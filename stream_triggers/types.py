"""Task configurations and task instances: the nouns of the Triggers framework.

``TaskConfig`` is immutable once built.  ``TaskInstance`` keeps the original
framework's mutable API (tests and admin code assign ``instance.status``), but the
engine never mutates one: it builds a new instance with :meth:`TaskInstance.evolve`,
so a session state can share unchanged instances between versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from logging import ERROR, NOTSET, getLevelName
from typing import Any

__all__ = [
    "FAILURE_STATUSES",
    "PUBLISHED_STATUSES",
    "RESOLVED_STATUSES",
    "SESSION_FINALIZED",
    "TERMINAL_STATUSES",
    "Status",
    "TaskConfig",
    "TaskInstance",
]


class Status(StrEnum):
    """Lifecycle of a task instance (values are the original framework's strings)."""

    UNSTARTED = "unstarted"  # created; waiting for the rest of its ``after`` triggers
    SCHEDULED = "scheduled"  # handed to a task runner, not picked up yet
    RUNNING = "running"  # a runner is executing it
    FINISHED = "finished"  # ran successfully; its name fired as a trigger (cascade)
    FAILED = "failed"  # raised; waits to be replayed or skipped
    REPLAYED = "replayed"  # failed, then cloned into a new instance that runs again
    SKIPPED = "skipped"  # failed, then marked resolved without running again
    ABANDONED = "abandoned"  # its ``unless`` condition was met before it could run


# The status sets, defined here only (Status is a StrEnum: plain strings match them too).

RESOLVED_STATUSES = frozenset({Status.ABANDONED, Status.FINISHED, Status.SKIPPED, Status.REPLAYED})
"""Nothing more will happen to an instance in one of these (``TaskInstance.is_resolved``)."""

TERMINAL_STATUSES = RESOLVED_STATUSES | {Status.FAILED}
"""Nothing more happens without an operator: resolved, or failed (waiting to be replayed or skipped)."""

PUBLISHED_STATUSES = TERMINAL_STATUSES
"""Statuses the stream worker announces on ``task-results`` (scheduling goes to ``task-runs``)."""

FAILURE_STATUSES = frozenset({Status.FAILED, Status.REPLAYED, Status.SKIPPED})
"""Statuses only a failed instance reaches: its metadata may describe the exception."""

SESSION_FINALIZED = "sessionFinalized"
"""The trigger ``FinalizingTriggerManager`` fires once every task is resolved; the worker
announces it as a ``SessionFinalized`` record."""

_LOGS_IRRELEVANT = frozenset({Status.ABANDONED, Status.REPLAYED, Status.SKIPPED})

_NO_TRIGGERS: frozenset[str] = frozenset()

KNOWN_DIRECTIVES = frozenset({"after", "run", "unless", "using", "withParams", "andEvery"})


class TaskConfig:
    """What a trigger task waits for (``after``, ``andEvery``, ``unless``) and what it runs."""

    __slots__ = ("name", "run", "with_params", "using", "after", "and_every", "unless", "extras")

    def __init__(
        self,
        name: str,
        after: Iterable[str],
        run: str,
        unless: Iterable[str] | None = None,
        using: str | None = None,
        withParams: Mapping[str, Mapping[str, Any]] | None = None,  # noqa: N803 - directive name
        andEvery: str | None = None,  # noqa: N803 - directive name
        **extras: Any,
    ) -> None:
        self.name = name
        self.run = run
        self.with_params: Mapping[str, Mapping[str, Any]] = dict(withParams or {})
        self.using = using
        # ``andEvery`` is also required for the task to run, so it joins ``after``.
        self.after = frozenset(after) | ({andEvery} if andEvery else frozenset())
        self.and_every = andEvery
        self.unless = frozenset(unless or ())
        self.extras: Mapping[str, Any] = dict(extras)

    @property
    def extra(self) -> Mapping[str, Any]:
        """The original framework's name for :attr:`extras`."""
        return self.extras

    @property
    def after_sorted(self) -> list[str]:
        return sorted(self.after)

    @property
    def unless_sorted(self) -> list[str]:
        return sorted(self.unless)

    def uses_trigger(self, trigger_name: str) -> bool:
        """Whether firing ``trigger_name`` can affect this task."""
        return trigger_name in self.after or trigger_name in self.unless

    def serialize(self) -> dict[str, Any]:
        """The directives this config was built from (``after`` without ``andEvery``)."""
        after = self.after - {self.and_every} if self.and_every else self.after
        return {
            **self.extras,
            "after": sorted(after),
            "unless": sorted(self.unless),
            "andEvery": self.and_every,
            "run": self.run,
            "using": self.using,
            "withParams": {k: dict(v) for k, v in self.with_params.items()},
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskConfig) and ((self.name, self.serialize()) == (other.name, other.serialize()))

    def __hash__(self) -> int:
        return hash((self.name, self.run, self.after))

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class TaskInstance:
    """One run (or pending run) of a trigger task, named ``<task>#<n>``."""

    __slots__ = ("name", "config", "status", "metadata", "kwargs", "abandon_state")

    LOG_LEVEL_THRESHOLD = ERROR
    """Log level at or above which an instance's logs must be marked resolved."""

    STATUS_ABANDONED = Status.ABANDONED
    STATUS_FAILED = Status.FAILED
    STATUS_FINISHED = Status.FINISHED
    STATUS_REPLAYED = Status.REPLAYED
    STATUS_RUNNING = Status.RUNNING
    STATUS_SCHEDULED = Status.SCHEDULED
    STATUS_SKIPPED = Status.SKIPPED
    STATUS_UNSTARTED = Status.UNSTARTED

    META_ACTUAL_KWARGS = "actualKwargs"
    META_ACTUAL_SHARD = "actualShard"
    META_COOLDOWN = "cooldown"
    META_DEPTH = "depth"
    META_EXCEPTION_CONTEXT = "exceptionContext"
    META_EXCEPTION_INFO = "exceptionInfo"
    META_EXCEPTION_TYPE = "exceptionType"
    META_LOG_LEVEL = "logLevel"
    META_LOGS_RESOLVED = "logsResolved"
    META_PARENT = "parent"
    META_RESULT = "result"
    META_TIMESTAMPS = "timestamps"

    TIMESTAMP_CREATED = "created"
    TIMESTAMP_LAST_MODIFIED = "lastModified"

    def __init__(
        self,
        name: str,
        config: TaskConfig,
        status: str | None = None,
        metadata: dict[str, Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        abandonState: Iterable[str] | None = None,  # noqa: N803 - original keyword
    ) -> None:
        self.name = name
        self.config = config
        # (The engine creates instances on the hot path: skip the Enum lookup for a
        # Status and share one empty abandon state.)
        self.status = status if type(status) is Status else Status(status) if status else Status.UNSTARTED
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}
        self.kwargs: dict[str, Any] = kwargs if kwargs is not None else {}
        self.abandon_state: frozenset[str] | set[str] = frozenset(abandonState) if abandonState else _NO_TRIGGERS

    # -- the engine's copy-on-write constructor ---------------------------------------

    def evolve(self, **changes: Any) -> TaskInstance:
        """A new instance with ``changes`` applied; ``self`` is left untouched."""
        new = object.__new__(TaskInstance)
        new.name = changes.get("name", self.name)
        new.config = changes.get("config", self.config)
        new.status = changes.get("status", self.status)
        new.metadata = changes.get("metadata", self.metadata)
        new.kwargs = changes.get("kwargs", self.kwargs)
        new.abandon_state = changes.get("abandon_state", self.abandon_state)
        return new

    def copy(self) -> TaskInstance:
        """A copy safe to mutate (nested metadata timestamps included)."""
        metadata = dict(self.metadata)
        timestamps = metadata.get(self.META_TIMESTAMPS)
        if isinstance(timestamps, dict):
            metadata[self.META_TIMESTAMPS] = dict(timestamps)
        return self.evolve(
            metadata=metadata,
            kwargs={k: dict(v) if isinstance(v, dict) else v for k, v in self.kwargs.items()},
            abandon_state=set(self.abandon_state),
        )

    def same_as(self, other: TaskInstance) -> bool:
        """Whether both hold the same values (used to spot user edits before a save)."""
        return (
            self.status == other.status
            and self.metadata == other.metadata
            and self.kwargs == other.kwargs
            and set(self.abandon_state) == set(other.abandon_state)
            and self.config is other.config
        )

    # -- meta-statuses ---------------------------------------------------------------

    @property
    def can_schedule(self) -> bool:
        """Whether triggers still apply to it (it has not been handed to a runner)."""
        return self.status == Status.UNSTARTED

    @property
    def can_skip(self) -> bool:
        return self.status == Status.FAILED

    @property
    def can_replay(self) -> bool:
        return self.status == Status.FAILED

    @property
    def can_abandon(self) -> bool:
        """Whether its ``unless`` condition is met (and it has not run or been abandoned)."""
        unless = self.config.unless
        return bool(self.can_schedule and unless and unless.issubset(self.abandon_state))

    @property
    def can_run(self) -> bool:
        """Whether every ``after`` trigger has fired for it and it is not to be abandoned."""
        return self.can_schedule and self.config.after.issubset(self.kwargs.keys()) and not self.can_abandon

    @property
    def is_resolved(self) -> bool:
        """Whether nothing more will happen to it (finished, abandoned, skipped, replayed)."""
        return self.status in RESOLVED_STATUSES

    @property
    def cooldown(self) -> float:
        """Seconds to wait before running it (set when a task retries itself)."""
        return self.metadata.get(self.META_COOLDOWN) or 0

    @property
    def depth(self) -> int:
        """How many replays lie behind it (0 for an original instance)."""
        return self.metadata.get(self.META_DEPTH, 0)

    @property
    def last_modified(self) -> datetime | None:
        return (self.metadata.get(self.META_TIMESTAMPS) or {}).get(self.TIMESTAMP_LAST_MODIFIED)

    @property
    def log_level(self) -> int:
        """Highest level logged while it ran (``NOTSET`` before it has run)."""
        return self.metadata.get(self.META_LOG_LEVEL, NOTSET)

    @property
    def log_level_name(self) -> str:
        return getLevelName(self.log_level)

    @property
    def logs_relevant(self) -> bool:
        return self.status not in _LOGS_IRRELEVANT

    @property
    def logs_resolved(self) -> bool:
        return (
            not self.logs_relevant
            or self.log_level < self.LOG_LEVEL_THRESHOLD
            or bool(self.metadata.get(self.META_LOGS_RESOLVED, False))
        )

    def apply_trigger(self, trigger_name: str, kwargs: Mapping[str, Any]) -> bool:
        """Record a fired trigger on this (mutable) instance; returns whether it applied.

        The engine never mutates an instance (it records triggers in its own state);
        this method is kept for code written against the original framework.
        """
        if not self.can_schedule:
            return False
        applied = False
        if trigger_name in self.config.after and trigger_name not in self.kwargs:
            self.kwargs[trigger_name] = kwargs
            applied = True
        if trigger_name in self.config.unless and trigger_name not in self.abandon_state:
            self.abandon_state = set(self.abandon_state) | {trigger_name}
            applied = True
        return applied

    def serialize(self) -> dict[str, Any]:
        return {
            "abandonState": sorted(self.abandon_state),
            "kwargs": self.kwargs,
            "metadata": self.metadata,
            "status": str(self.status),
            "task": self.config.name,
        }

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
