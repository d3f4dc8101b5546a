"""A session's state as an immutable value, plus the draft that builds the next one.

``SessionState`` is never mutated once built: a transition copies only the top-level
maps it changes (one copy per transition, not per instance) and shares every
untouched ``TaskInstance``.  Two indexes keep ``fire`` cheap however many instances a
session accumulates: instance names per task, and per task the names of instances
that are not resolved yet (the only ones a trigger can still change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream_triggers.types import TaskConfig, TaskInstance

__all__ = ["SessionState", "Draft", "EMPTY"]


@dataclass(frozen=True, slots=True)
class SessionState:
    """Task configs, instances, the latest kwargs of each fired trigger, session metadata."""

    tasks: Mapping[str, TaskConfig] = field(default_factory=dict)
    instances: Mapping[str, TaskInstance] = field(default_factory=dict)
    latest_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Derived indexes (rebuilt by ``build``; never serialised).
    by_task: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    unresolved: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def build(
        cls,
        tasks: Mapping[str, TaskConfig],
        instances: Mapping[str, TaskInstance],
        latest_kwargs: Mapping[str, Mapping[str, Any]],
        metadata: Mapping[str, Any],
    ) -> SessionState:
        """A state from its serialisable parts, with the indexes computed."""
        by_task: dict[str, tuple[str, ...]] = {}
        unresolved: dict[str, tuple[str, ...]] = {}
        for name, instance in instances.items():
            task = instance.config.name
            by_task[task] = by_task.get(task, ()) + (name,)
            if not instance.is_resolved:
                unresolved[task] = unresolved.get(task, ()) + (name,)
        return cls(dict(tasks), dict(instances), dict(latest_kwargs), dict(metadata), by_task, unresolved)

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

    def edit(self) -> Draft:
        return Draft(self)


EMPTY = SessionState()


class Draft:
    """Accumulates one transition's changes over a base state; ``finish`` seals them."""

    __slots__ = ("base", "tasks", "instances", "latest_kwargs", "metadata", "by_task", "unresolved")

    def __init__(self, base: SessionState) -> None:
        self.base = base
        self.tasks: dict[str, TaskConfig] | None = None
        self.instances: dict[str, TaskInstance] | None = None
        self.latest_kwargs: dict[str, Mapping[str, Any]] | None = None
        self.metadata: dict[str, Any] | None = None
        self.by_task: dict[str, tuple[str, ...]] | None = None
        self.unresolved: dict[str, tuple[str, ...]] | None = None

    # -- reads see the draft's own writes ---------------------------------------------

    def get(self, name: str) -> TaskInstance | None:
        return (self.instances if self.instances is not None else self.base.instances).get(name)

    def task_configs(self) -> Mapping[str, TaskConfig]:
        return self.tasks if self.tasks is not None else self.base.tasks

    def latest(self) -> Mapping[str, Mapping[str, Any]]:
        return self.latest_kwargs if self.latest_kwargs is not None else self.base.latest_kwargs

    def names_of(self, task: str) -> tuple[str, ...]:
        return (self.by_task if self.by_task is not None else self.base.by_task).get(task, ())

    def unresolved_of(self, task: str) -> tuple[str, ...]:
        return (self.unresolved if self.unresolved is not None else self.base.unresolved).get(task, ())

    # -- writes -----------------------------------------------------------------------

    def put(self, instance: TaskInstance) -> None:
        """Insert or replace an instance, keeping both indexes right."""
        if self.instances is None:
            self.instances = dict(self.base.instances)
        previous = self.instances.get(instance.name)
        self.instances[instance.name] = instance
        task = instance.config.name
        if previous is None:
            if self.by_task is None:
                self.by_task = dict(self.base.by_task)
            self.by_task[task] = self.by_task.get(task, ()) + (instance.name,)
        was_open = previous is not None and not previous.is_resolved
        is_open = not instance.is_resolved
        if was_open != is_open:
            if self.unresolved is None:
                self.unresolved = dict(self.base.unresolved)
            names = self.unresolved.get(task, ())
            if is_open:
                self.unresolved[task] = names + (instance.name,)
            else:
                remaining = tuple(n for n in names if n != instance.name)
                if remaining:
                    self.unresolved[task] = remaining
                else:
                    self.unresolved.pop(task, None)

    def set_latest(self, trigger: str, kwargs: Mapping[str, Any]) -> None:
        if self.latest_kwargs is None:
            self.latest_kwargs = dict(self.base.latest_kwargs)
        self.latest_kwargs[trigger] = kwargs

    def set_tasks(self, configs: Mapping[str, TaskConfig]) -> None:
        if self.tasks is None:
            self.tasks = dict(self.base.tasks)
        self.tasks.update(configs)

    def set_metadata(self, key: str, value: Any) -> None:
        if self.metadata is None:
            self.metadata = dict(self.base.metadata)
        self.metadata[key] = value

    def finish(self) -> SessionState:
        base = self.base
        return SessionState(
            tasks=base.tasks if self.tasks is None else self.tasks,
            instances=base.instances if self.instances is None else self.instances,
            latest_kwargs=base.latest_kwargs if self.latest_kwargs is None else self.latest_kwargs,
            metadata=base.metadata if self.metadata is None else self.metadata,
            by_task=base.by_task if self.by_task is None else self.by_task,
            unresolved=base.unresolved if self.unresolved is None else self.unresolved,
        )
