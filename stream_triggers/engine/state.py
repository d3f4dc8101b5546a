"""A session's state as an immutable value.

``SessionState`` is never mutated once built: a transition (a :class:`~stream_triggers.engine.draft.Draft`)
copies only the top-level maps it changes (one copy per transition, not per instance) and shares every
untouched ``TaskInstance``.  Derived indexes (:mod:`stream_triggers.engine.indexes`) keep ``fire`` cheap
however many instances a session accumulates.

Unstarted instances change with every fire that reaches them, and only in their
kwargs.  So that such a fire does not rebuild every one of them, a state keeps the
``TaskInstance`` objects in ``stored`` and, in ``fresh``, the current kwargs of the
unstarted instances whose kwargs moved on since their object was built;
``instances`` - what everything outside the engine reads - merges the two on first
read.  Any other change to an instance (status, metadata, abandon state, config)
stores a whole new object and drops its ``fresh`` entry.

A state may also carry a hint for the next fire (``alike``, see ``AlikeRun``): the
run of waiting instances the last fire left alike - same kwargs map, same ``after``, no
``unless`` - so that a fire at the same run updates them in one step.  It is not part
of the state's value: any other change to the instances drops it.

The engine never mutates what a state holds, so unstarted instances that received
the same triggers may share one kwargs map (a fire that creates several instances,
and every later fire that updates them, builds one map per group, not per
instance).  Anything handed out for mutation - storage views, hook arguments - is
a copy (``TaskInstance.copy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from stream_triggers.engine.indexes import (
    CHUNK,
    NOBODY,
    AlikeRun,
    Listeners,
    Names,
    accepted_triggers,
    add_name,
    is_ready,
    listeners_of,
)
from stream_triggers.types import TaskConfig, TaskInstance

__all__ = [
    "CHUNK",
    "EMPTY",
    "NOBODY",
    "Listeners",
    "Names",
    "SessionState",
    "accepted_triggers",
    "is_ready",
]

_NO_FRESH: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


class SessionState:
    """Task configs, instances, the latest kwargs of each fired trigger, session metadata.

    Immutable by contract (nothing in the engine or its shells assigns to one after
    it is built).  It is a plain slotted class rather than a frozen dataclass because
    every transition builds one, and a frozen dataclass costs ten times as much to
    construct.  Equality compares the serialisable parts (``stored`` with ``fresh``
    standing for ``instances``); the rest are indexes.
    """

    DERIVED = ("by_task", "unresolved", "accepting", "ready", "listeners")
    """The index attributes: derived from the serialisable parts, never serialised."""

    __slots__ = ("tasks", "stored", "latest_kwargs", "metadata", "fresh", "_instances", "alike", *DERIVED)

    def __init__(
        self,
        tasks: Mapping[str, TaskConfig],
        stored: Mapping[str, TaskInstance],
        latest_kwargs: Mapping[str, Mapping[str, Any]],
        metadata: Mapping[str, Any],
        by_task: Mapping[str, Sequence[str]],
        unresolved: Mapping[str, Sequence[str]],
        accepting: Mapping[str, Sequence[str]],
        ready: Mapping[str, Sequence[str]],
        listeners: Mapping[str, Listeners],
        fresh: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Use :meth:`build` (or a :class:`Draft`): the indexes must match the parts."""
        self.tasks = tasks
        self.stored = stored
        self.latest_kwargs = latest_kwargs
        self.metadata = metadata
        self.fresh = fresh if fresh is not None else _NO_FRESH
        self._instances: Mapping[str, TaskInstance] | None = None if self.fresh else stored
        self.by_task = by_task
        self.unresolved = unresolved
        self.accepting = accepting
        self.ready = ready
        self.listeners = listeners
        self.alike: AlikeRun | None = None

    @property
    def instances(self) -> Mapping[str, TaskInstance]:
        """Every instance by name, with its current kwargs."""
        instances = self._instances
        if instances is None:  # built once per state, on first read (see ``fresh``)
            instances = dict(self.stored)
            for name, kwargs in self.fresh.items():
                instances[name] = instances[name].evolve(kwargs=kwargs)
            self._instances = instances
        return instances

    @classmethod
    def build(
        cls,
        tasks: Mapping[str, TaskConfig],
        instances: Mapping[str, TaskInstance],
        latest_kwargs: Mapping[str, Mapping[str, Any]],
        metadata: Mapping[str, Any],
    ) -> SessionState:
        """A state from its serialisable parts, with the indexes computed."""
        by_task: dict[str, Sequence[str]] = {}
        unresolved: dict[str, Sequence[str]] = {}
        accepting: dict[str, Sequence[str]] = {}
        ready: dict[str, Sequence[str]] = {}
        for name, instance in instances.items():
            task = instance.config.name
            add_name(by_task, task, name)
            if not instance.is_resolved:
                add_name(unresolved, task, name)
            for trigger in accepted_triggers(instance):
                add_name(accepting, trigger, name)
            if is_ready(instance):
                add_name(ready, task, name)
        return cls(
            dict(tasks),
            dict(instances),
            dict(latest_kwargs),
            dict(metadata),
            by_task,
            unresolved,
            accepting,
            ready,
            listeners_of(tasks),
        )

    def instances_of(self, task: str) -> list[TaskInstance]:
        """Instances of ``task`` in creation order."""
        instances = self.instances
        return [instances[name] for name in self.by_task.get(task, ())]

    def unresolved_tasks(self) -> list[TaskConfig]:
        """Tasks with no instance yet, or with at least one unresolved instance."""
        return [
            config for name, config in self.tasks.items() if self.unresolved.get(name) or not self.by_task.get(name)
        ]

    def unresolved_instances(self) -> list[TaskInstance]:
        instances = self.instances
        return [instances[n] for names in self.unresolved.values() for n in names]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionState):
            return NotImplemented
        return (self.tasks, self.stored, self.fresh, self.latest_kwargs, self.metadata) == (
            other.tasks,
            other.stored,
            other.fresh,
            other.latest_kwargs,
            other.metadata,
        )

    __hash__ = None  # type: ignore[assignment]  # equal states may hold different dicts

    def __repr__(self) -> str:
        return f"<SessionState {len(self.tasks)} tasks, {len(self.stored)} instances>"


EMPTY = SessionState({}, {}, {}, {}, {}, {}, {}, {}, {})
