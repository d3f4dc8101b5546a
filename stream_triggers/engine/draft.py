"""The draft that builds a session's next state: one transition's changes over a base state.

A draft copies each map of its base at most once (on its first write) and keeps every
index right as instances are added or replaced; ``finish`` seals the result into a new
``SessionState``.  See :mod:`stream_triggers.engine.state` for what a state holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream_triggers.engine.indexes import (
    CHUNK,
    AlikeRun,
    Listeners,
    accepted_triggers,
    add_name,
    discard_name,
    entry_of,
    extended,
    first_entry,
    is_ready,
    listeners_of,
)
from stream_triggers.engine.state import SessionState
from stream_triggers.types import RESOLVED_STATUSES, TaskConfig, TaskInstance

__all__ = ["Draft"]


_new_state = object.__new__


class Draft:
    """Accumulates one transition's changes over a base state; ``finish`` seals them.

    Its map attributes are the maps as they are now - the base's until the first
    write copies one (at most once per transition) - and are read directly; only the
    methods below write them.
    """

    __slots__ = (
        "base",
        "tasks",
        "stored",
        "fresh",
        "latest_kwargs",
        "by_task",
        "unresolved",
        "accepting",
        "ready",
        "listeners",
        "alike",
    )

    def __init__(self, base: SessionState) -> None:
        self.base = base
        # The maps as they are now: the base's until the first write copies one.
        self.tasks: Mapping[str, TaskConfig] = base.tasks
        self.stored: Mapping[str, TaskInstance] = base.stored
        self.fresh: Mapping[str, Mapping[str, Any]] = base.fresh
        self.latest_kwargs: Mapping[str, Mapping[str, Any]] = base.latest_kwargs
        self.by_task: Mapping[str, Sequence[str]] = base.by_task
        self.unresolved: Mapping[str, Sequence[str]] = base.unresolved
        self.accepting: Mapping[str, Sequence[str]] = base.accepting
        self.ready: Mapping[str, Sequence[str]] = base.ready
        self.listeners: Mapping[str, Listeners] = base.listeners
        self.alike: AlikeRun | None = base.alike

    # -- reads see the draft's own writes ---------------------------------------------

    def get(self, name: str) -> TaskInstance | None:
        """The instance as it is now (with its fresh kwargs, if any)."""
        instance = self.stored.get(name)
        if instance is None:
            return None
        fresh = self.fresh
        return instance if name not in fresh else instance.evolve(kwargs=fresh[name])

    def task_of(self, name: str) -> str:
        """The task an existing instance belongs to."""
        return self.stored[name].config.name

    def names_of(self, task: str) -> Sequence[str]:
        return self.by_task.get(task, ())

    def unresolved_of(self, task: str) -> Sequence[str]:
        return self.unresolved.get(task, ())

    # -- writes -----------------------------------------------------------------------

    def add(self, *new: TaskInstance) -> None:
        """Insert instances whose names are not taken yet (``put``'s cheaper half).

        A fire adds all the instances it creates at once: consecutive ones that accept
        the same triggers (tasks waiting for the same things) join the ``accepting``
        entries together, each entry growing once rather than once per instance.
        """
        instances = self._own_stored()
        by_task = self._own_by_task()
        unresolved = self._own_unresolved()
        joining: list[tuple[frozenset[str], list[str]]] = []  # runs of equal accepted sets
        previous: TaskInstance | None = None
        for instance in new:
            name = instance.name
            config = instance.config
            task = config.name
            instances[name] = instance
            # (``_add`` inlined for its usual case, a short tuple: every creating fire comes here.)
            names = by_task.get(task, ())
            if not names:
                entry = first_entry(name)
            elif type(names) is tuple and len(names) < CHUNK:
                entry = names + (name,)
            else:
                entry = extended(names, [name])
            by_task[task] = entry
            if instance.status in RESOLVED_STATUSES:
                continue
            open_names = unresolved.get(task, ())
            if open_names is names:  # (as long as none is resolved, both entries are one object)
                unresolved[task] = entry
            else:
                add_name(unresolved, task, name)
            if not (
                previous is not None  # waiting for the same triggers, with the same maps?
                and instance.kwargs is previous.kwargs
                and instance.abandon_state is previous.abandon_state
                and config.after is previous.config.after
                and config.unless is previous.config.unless
                and instance.status is previous.status
            ):
                accepted = accepted_triggers(instance)
                ready = is_ready(instance)
            previous = instance
            if accepted:
                if joining and joining[-1][0] is accepted:
                    joining[-1][1].append(name)
                else:
                    joining.append((accepted, [name]))
            if ready:
                add_name(self._own_ready(), task, name)
        if joining:
            accepting = self._own_accepting()
            for accepted, joiners in joining:
                more = tuple(joiners)
                for trigger in accepted:
                    names = accepting.get(trigger, ())
                    accepting[trigger] = (
                        names + more
                        if type(names) is tuple and len(names) + len(more) <= CHUNK
                        else extended(names, joiners)
                    )

    def put(self, instance: TaskInstance) -> None:
        """Insert or replace an instance, keeping every index right."""
        name = instance.name
        previous = self.get(name)
        if previous is None:
            self.add(instance)
            return
        self._own_stored()[name] = instance
        if name in self.fresh:
            del self._own_fresh()[name]  # ``instance`` carries its own kwargs now
        task = instance.config.name
        old_task = previous.config.name
        was_open = previous.status not in RESOLVED_STATUSES
        was_ready = is_ready(previous)
        accepted_before = accepted_triggers(previous)
        is_open = instance.status not in RESOLVED_STATUSES
        if was_open != is_open:
            if is_open:
                add_name(self._own_unresolved(), task, name)
            else:
                discard_name(self._own_unresolved(), task, name)
        accepted_now = accepted_triggers(instance)
        if accepted_before != accepted_now:
            accepting = self._own_accepting()
            for trigger in accepted_before - accepted_now:
                discard_name(accepting, trigger, name)
            for trigger in accepted_now - accepted_before:
                add_name(accepting, trigger, name)
        now_ready = is_ready(instance)
        if was_ready != now_ready or (now_ready and old_task != task):
            if was_ready:
                discard_name(self._own_ready(), old_task, name)
            if now_ready:
                add_name(self._own_ready(), task, name)

    def take(self, trigger: str, kwargs: Mapping[str, Any]) -> Sequence[str]:
        """Record ``trigger`` on every unstarted instance that accepts it; return their names.

        The hot path of ``fire``.  Only kwargs and/or abandon state change, so the
        index updates are known in advance: none of the instances stops being
        unstarted or open, each stops accepting ``trigger`` only, and those now due
        join ``ready``.
        """
        accepting = self.accepting
        names = accepting.get(trigger)
        if not names:
            return ()
        del self._own_accepting()[trigger]
        alike = self.alike
        fresh = self._own_fresh()
        if alike is not None and alike[0] is names:
            # The run the last fire left alike (``AlikeRun``): one new map for all of them.
            _, kwargs_before, after = alike
            kwargs_now = {**kwargs_before, trigger: kwargs}
            for name in names:
                fresh[name] = kwargs_now
            self.alike = (names, kwargs_now, after)
            if len(kwargs_now) >= len(after) and kwargs_now.keys() >= after:
                self._join_ready(self._by_task_of(names))
            return names
        stored = self.stored
        newly_ready: dict[str, list[str]] | None = None
        runs = 0  # runs of alike instances met; one (and no ``unless``) leaves a hint
        # Instances alike the one before - the same kwargs map (see ``SessionState``),
        # the same ``after`` set, no ``unless`` - get its answer: the same new map
        # (one per run of sharers, not one per instance) and the same readiness.
        alike_kwargs: Any = None
        alike_after: Any = None
        alike_new: dict[str, Any] | None = None
        alike_due = False
        for name in names:
            instance = stored[name]
            config = instance.config
            kwargs_now = fresh.get(name, instance.kwargs)
            after = config.after
            unless = config.unless
            if kwargs_now is alike_kwargs and after is alike_after and not unless:
                if alike_new is not None:
                    fresh[name] = alike_new
                due = alike_due
            elif not unless:
                runs += 1
                alike_kwargs, alike_after = kwargs_now, after
                if trigger in after and trigger not in kwargs_now:
                    kwargs_now = fresh[name] = alike_new = {**kwargs_now, trigger: kwargs}
                else:
                    alike_new = None
                # (Sizes first: a waiting instance then costs no keys view.)
                due = alike_due = len(kwargs_now) >= len(after) and kwargs_now.keys() >= after
            else:
                # Rare (an ``unless`` task): checked on its own, and the instance itself
                # is replaced if the trigger joins its abandon state.
                runs = 2
                if trigger in after and trigger not in kwargs_now:
                    kwargs_now = fresh[name] = {**kwargs_now, trigger: kwargs}
                abandon = instance.abandon_state
                if trigger in unless and trigger not in abandon:
                    abandon = frozenset(abandon) | {trigger}
                    self._own_stored()[name] = instance.evolve(kwargs=kwargs_now, abandon_state=abandon)
                    fresh.pop(name, None)
                due = unless.issubset(abandon) or kwargs_now.keys() >= after
            if due:
                if newly_ready is None:
                    newly_ready = {}
                newly_ready.setdefault(config.name, []).append(name)
        if newly_ready:
            self._join_ready(newly_ready)
        if runs == 1 and len(names) > 1:
            self.alike = (names, alike_new if alike_new is not None else alike_kwargs, alike_after)
        return names

    def _by_task_of(self, names: Sequence[str]) -> dict[str, list[str]]:
        by_task: dict[str, list[str]] = {}
        stored = self.stored
        for name in names:
            by_task.setdefault(stored[name].config.name, []).append(name)
        return by_task

    def _join_ready(self, newly_ready: Mapping[str, list[str]]) -> None:
        ready = self._own_ready()
        for task, names_ready in newly_ready.items():
            already = ready.get(task, ())
            ready[task] = entry_of([*already, *(n for n in names_ready if n not in already)])

    def pop_ready(self, task: str) -> Sequence[TaskInstance]:
        """Take the instances of ``task`` due to run or be abandoned off the ``ready`` index.

        They come in the order a scan of the task's unresolved instances would meet
        them.  The caller must then schedule or abandon every one (``put``), which is
        what makes them leave the index for good.
        """
        ready = self.ready
        if task not in ready:  # the usual case: one dict lookup
            return ()
        names = ready[task]
        del self._own_ready()[task]
        if len(names) > 1:
            wanted = set(names)
            names = tuple(n for n in self.unresolved_of(task) if n in wanted)
        return [self.get(name) for name in names]  # type: ignore[misc]

    def set_latest(self, trigger: str, kwargs: Mapping[str, Any]) -> None:
        latest = self.latest_kwargs
        if latest is self.base.latest_kwargs:
            latest = self.latest_kwargs = dict(latest)
        latest[trigger] = kwargs  # type: ignore[index]

    def set_tasks(self, configs: Mapping[str, TaskConfig]) -> None:
        self.tasks = {**self.tasks, **configs}
        self.listeners = listeners_of(self.tasks)

    def finish(self) -> SessionState:
        # (Slots set directly: ``finish`` runs once per transition.)
        state = _new_state(SessionState)
        state.tasks = self.tasks
        state.stored = self.stored
        state.latest_kwargs = self.latest_kwargs
        state.metadata = self.base.metadata
        state.fresh = fresh = self.fresh
        state._instances = None if fresh else self.stored
        state.by_task = self.by_task
        state.unresolved = self.unresolved
        state.accepting = self.accepting
        state.ready = self.ready
        state.listeners = self.listeners
        state.alike = self.alike
        return state

    # -- copy-on-write of the maps ------------------------------------------------------

    def _own_stored(self) -> dict[str, TaskInstance]:
        self.alike = None  # about to change instances: the hint may no longer hold
        if self.stored is self.base.stored:
            self.stored = dict(self.stored)
        return self.stored  # type: ignore[return-value]

    def _own_fresh(self) -> dict[str, Mapping[str, Any]]:
        self.alike = None  # about to change instances: the hint may no longer hold
        if self.fresh is self.base.fresh:
            self.fresh = dict(self.fresh)
        return self.fresh  # type: ignore[return-value]

    def _own_by_task(self) -> dict[str, Sequence[str]]:
        if self.by_task is self.base.by_task:
            self.by_task = dict(self.by_task)
        return self.by_task  # type: ignore[return-value]

    def _own_unresolved(self) -> dict[str, Sequence[str]]:
        if self.unresolved is self.base.unresolved:
            self.unresolved = dict(self.unresolved)
        return self.unresolved  # type: ignore[return-value]

    def _own_accepting(self) -> dict[str, Sequence[str]]:
        if self.accepting is self.base.accepting:
            self.accepting = dict(self.accepting)
        return self.accepting  # type: ignore[return-value]

    def _own_ready(self) -> dict[str, Sequence[str]]:
        if self.ready is self.base.ready:
            self.ready = dict(self.ready)
        return self.ready  # type: ignore[return-value]
