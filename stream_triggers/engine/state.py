"""A session's state as an immutable value, plus the draft that builds the next one.

``SessionState`` is never mutated once built: a transition copies only the top-level
maps it changes (one copy per transition, not per instance) and shares every
untouched ``TaskInstance``.  Derived indexes keep ``fire`` cheap however many
instances a session accumulates:

* ``by_task`` - instance names per task;
* ``unresolved`` - per task, the names of instances not resolved yet;
* ``accepting`` - per (task, trigger), the unstarted instances that trigger would
  still change (it is missing from their kwargs or abandon state), so a fire touches
  only those instead of scanning every open instance of the task;
* ``ready`` - per task, unstarted instances that are already due to run or to be
  abandoned.  A fire settles such instances at once, so this is normally empty; only
  edits outside ``fire`` (a status set back to unstarted, a new configuration, an
  instance created by hand) leave some for the task's next fire to settle.

Each index lists names in the order they joined it (creation order, unless an
instance left and re-joined), like ``unresolved`` always has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_triggers.types import RESOLVED_STATUSES, Status, TaskConfig, TaskInstance

__all__ = ["SessionState", "Draft", "EMPTY", "accepted_triggers", "is_ready"]

_UNSTARTED = Status.UNSTARTED
_NOTHING: frozenset[str] = frozenset()


def accepted_triggers(instance: TaskInstance) -> frozenset[str]:
    """The triggers that would still change ``instance``: its missing after/unless triggers.

    Only an unstarted instance takes triggers, so for any other this is empty.
    """
    if instance.status != _UNSTARTED:
        return _NOTHING
    config = instance.config
    missing = config.after.difference(instance.kwargs)
    if config.unless:
        missing |= config.unless.difference(instance.abandon_state)
    return missing


def is_ready(instance: TaskInstance) -> bool:
    """Whether ``instance`` is unstarted and due to run or to be abandoned.

    The same as ``instance.can_run or instance.can_abandon``, in one pass.
    """
    if instance.status != _UNSTARTED:
        return False
    config = instance.config
    unless = config.unless
    return bool(unless and unless.issubset(instance.abandon_state)) or config.after.issubset(instance.kwargs)


@dataclass(frozen=True, slots=True)
class SessionState:
    """Task configs, instances, the latest kwargs of each fired trigger, session metadata."""

    tasks: Mapping[str, TaskConfig] = field(default_factory=dict)
    instances: Mapping[str, TaskInstance] = field(default_factory=dict)
    latest_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Derived indexes (rebuilt by ``build``; never serialised; see the module docstring).
    by_task: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    unresolved: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    accepting: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, compare=False)
    ready: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

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
        accepting: dict[tuple[str, str], tuple[str, ...]] = {}
        ready: dict[str, tuple[str, ...]] = {}
        for name, instance in instances.items():
            task = instance.config.name
            _add(by_task, task, name)
            if not instance.is_resolved:
                _add(unresolved, task, name)
            for trigger in accepted_triggers(instance):
                _add(accepting, (task, trigger), name)
            if is_ready(instance):
                _add(ready, task, name)
        return cls(
            dict(tasks), dict(instances), dict(latest_kwargs), dict(metadata), by_task, unresolved, accepting, ready
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

    def edit(self) -> Draft:
        return Draft(self)


EMPTY = SessionState()


class Draft:
    """Accumulates one transition's changes over a base state; ``finish`` seals them.

    Each map is copied from the base on its first write (at most once per
    transition); reads see the draft's own writes.
    """

    __slots__ = (
        "base",
        "tasks",
        "instances",
        "latest_kwargs",
        "metadata",
        "by_task",
        "unresolved",
        "accepting",
        "ready",
    )

    def __init__(self, base: SessionState) -> None:
        self.base = base
        self.tasks: dict[str, TaskConfig] | None = None
        self.instances: dict[str, TaskInstance] | None = None
        self.latest_kwargs: dict[str, Mapping[str, Any]] | None = None
        self.metadata: dict[str, Any] | None = None
        self.by_task: dict[str, tuple[str, ...]] | None = None
        self.unresolved: dict[str, tuple[str, ...]] | None = None
        self.accepting: dict[tuple[str, str], tuple[str, ...]] | None = None
        self.ready: dict[str, tuple[str, ...]] | None = None

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

    def accepting_of(self, task: str, trigger: str) -> tuple[str, ...]:
        """Unstarted instances of ``task`` that ``trigger`` would change."""
        return (self.accepting if self.accepting is not None else self.base.accepting).get((task, trigger), ())

    def ready_of(self, task: str) -> tuple[str, ...]:
        """Unstarted instances of ``task`` due to run or to be abandoned."""
        return (self.ready if self.ready is not None else self.base.ready).get(task, ())

    # -- writes -----------------------------------------------------------------------

    def put(self, instance: TaskInstance) -> None:
        """Insert or replace an instance, keeping every index right."""
        instances = self._own_instances()
        name = instance.name
        task = instance.config.name
        previous = instances.get(name)
        instances[name] = instance
        if previous is None:
            _add(self._own_by_task(), task, name)
            old_task = task
            was_open = was_ready = False
            accepted_before = _NOTHING
        else:
            old_task = previous.config.name
            was_open = previous.status not in RESOLVED_STATUSES
            was_ready = is_ready(previous)
            accepted_before = accepted_triggers(previous)
        is_open = instance.status not in RESOLVED_STATUSES
        if was_open != is_open:
            if is_open:
                _add(self._own_unresolved(), task, name)
            else:
                _discard(self._own_unresolved(), task, name)
        accepted_now = accepted_triggers(instance)
        if accepted_before != accepted_now or old_task != task:
            accepting = self._own_accepting()
            for trigger in accepted_before if old_task != task else accepted_before - accepted_now:
                _discard(accepting, (old_task, trigger), name)
            for trigger in accepted_now if old_task != task else accepted_now - accepted_before:
                key = (task, trigger)  # inlined ``_add``: a new instance joins several keys
                accepting[key] = accepting.get(key, ()) + (name,)
        now_ready = is_ready(instance)
        if was_ready != now_ready or (now_ready and old_task != task):
            if was_ready:
                _discard(self._own_ready(), old_task, name)
            if now_ready:
                _add(self._own_ready(), task, name)

    def take(self, task: str, trigger: str, apply: Callable[[TaskInstance], TaskInstance]) -> bool:
        """Replace each instance of ``task`` that accepts ``trigger`` by ``apply(instance)``.

        ``apply`` must return the instance with ``trigger`` recorded in its kwargs and/or
        abandon state and nothing else changed.  Then the index updates are known in
        advance - none of them stops being unstarted or open, each stops accepting
        ``trigger`` only, and some become ready - which makes this the cheap path of
        ``fire``.  Returns whether any instance took the trigger.
        """
        key = (task, trigger)
        accepting = self.accepting if self.accepting is not None else self.base.accepting
        names = accepting.get(key)
        if not names:
            return False
        del self._own_accepting()[key]
        instances = self.instances if self.instances is not None else self._own_instances()
        newly_ready = []
        for name in names:
            instance = instances[name] = apply(instances[name])
            if is_ready(instance):
                newly_ready.append(name)
        if newly_ready:
            ready = self._own_ready()
            already = ready.get(task, ())
            ready[task] = already + tuple(n for n in newly_ready if n not in already)
        return True

    def pop_ready(self, task: str) -> Sequence[TaskInstance]:
        """Take the instances of ``task`` due to run or be abandoned off the ``ready`` index.

        They come in the order a scan of the task's unresolved instances would meet
        them.  The caller must then schedule or abandon every one (``put``), which is
        what makes them leave the index for good.
        """
        ready = self.ready if self.ready is not None else self.base.ready
        if task not in ready:  # the usual case: one dict lookup
            return ()
        names = ready[task]
        del self._own_ready()[task]
        if len(names) > 1:
            wanted = set(names)
            names = tuple(n for n in self.unresolved_of(task) if n in wanted)
        instances = self._own_instances()
        return [instances[name] for name in names]

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
            base.tasks if self.tasks is None else self.tasks,
            base.instances if self.instances is None else self.instances,
            base.latest_kwargs if self.latest_kwargs is None else self.latest_kwargs,
            base.metadata if self.metadata is None else self.metadata,
            base.by_task if self.by_task is None else self.by_task,
            base.unresolved if self.unresolved is None else self.unresolved,
            base.accepting if self.accepting is None else self.accepting,
            base.ready if self.ready is None else self.ready,
        )

    # -- copy-on-write of the maps ------------------------------------------------------

    def _own_instances(self) -> dict[str, TaskInstance]:
        if self.instances is None:
            self.instances = dict(self.base.instances)
        return self.instances

    def _own_by_task(self) -> dict[str, tuple[str, ...]]:
        if self.by_task is None:
            self.by_task = dict(self.base.by_task)
        return self.by_task

    def _own_unresolved(self) -> dict[str, tuple[str, ...]]:
        if self.unresolved is None:
            self.unresolved = dict(self.base.unresolved)
        return self.unresolved

    def _own_accepting(self) -> dict[tuple[str, str], tuple[str, ...]]:
        if self.accepting is None:
            self.accepting = dict(self.base.accepting)
        return self.accepting

    def _own_ready(self) -> dict[str, tuple[str, ...]]:
        if self.ready is None:
            self.ready = dict(self.base.ready)
        return self.ready


def _add(index: dict[Any, tuple[str, ...]], key: Any, name: str) -> None:
    index[key] = index.get(key, ()) + (name,)


def _discard(index: dict[Any, tuple[str, ...]], key: Any, name: str) -> None:
    """Remove ``name`` from ``index[key]``, dropping the key once nothing is left."""
    names = index.get(key, ())
    if name not in names:
        return
    if len(names) == 1:
        del index[key]
    else:
        at = names.index(name)
        index[key] = names[:at] + names[at + 1 :]
