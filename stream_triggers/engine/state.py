"""A session's state as an immutable value, plus the draft that builds the next one.

``SessionState`` is never mutated once built: a transition copies only the top-level
maps it changes (one copy per transition, not per instance) and shares every
untouched ``TaskInstance``.  Derived indexes keep ``fire`` cheap however many
instances a session accumulates:

* ``by_task`` - instance names per task;
* ``unresolved`` - per task, the names of instances not resolved yet;
* ``accepting`` - per trigger, the unstarted instances (of any task) that trigger
  would still change (it is missing from their kwargs or abandon state), so a fire
  touches only those instead of scanning every open instance;
* ``ready`` - per task, unstarted instances that are already due to run or to be
  abandoned.  A fire settles such instances at once, so this is normally empty; only
  edits outside ``fire`` (a status set back to unstarted, a new configuration, an
  instance created by hand) leave some for the task's next fire to settle;
* ``listeners`` - per trigger, the task configs it can affect (``after`` or
  ``unless``), in configuration order.

Each index lists names in the order they joined it (creation order, unless an
instance left and re-joined), like ``unresolved`` always has: a tuple, or past
``CHUNK`` names a :class:`Names`, so that a growing entry is not copied whole on every
append (``andEvery`` sessions with thousands of instances).

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

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from types import MappingProxyType
from typing import Any, NamedTuple

from stream_triggers.types import RESOLVED_STATUSES, Status, TaskConfig, TaskInstance

__all__ = ["SessionState", "Draft", "EMPTY", "AlikeRun", "Names", "accepted_triggers", "is_ready"]

_UNSTARTED = Status.UNSTARTED
_NOTHING: frozenset[str] = frozenset()
_NO_FRESH: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


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
    kwargs, after = instance.kwargs, config.after  # sizes first: no keys view while waiting
    return bool(unless and unless.issubset(instance.abandon_state)) or (
        len(kwargs) >= len(after) and kwargs.keys() >= after
    )


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
            _add(by_task, task, name)
            if not instance.is_resolved:
                _add(unresolved, task, name)
            for trigger in accepted_triggers(instance):
                _add(accepting, trigger, name)
            if is_ready(instance):
                _add(ready, task, name)
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

    def edit(self) -> Draft:
        return Draft(self)

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


class Listeners(NamedTuple):
    """The task configs one trigger can affect (its ``after`` or ``unless`` names it)."""

    configs: tuple[TaskConfig, ...]  # in configuration order
    tasks: frozenset[str]  # their names
    every: bool  # whether it is some config's ``andEvery`` trigger


NOBODY = Listeners((), frozenset(), False)


AlikeRun = tuple[Sequence[str], Mapping[str, Any], frozenset[str]]
"""``(names, kwargs, after)``: a hint the last fire leaves for the next - every
instance in ``names`` now holds ``kwargs`` as its kwargs, waits for ``after`` and has no
``unless``.  (A plain tuple: one is built per fire.)

Instances created together and fired at together stay alike, and their ``accepting``
entries are one tuple; a fire whose entry *is* ``names`` then updates them all at once.
Any other change to stored or fresh instances drops the hint.
"""


def listeners_of(tasks: Mapping[str, TaskConfig]) -> Mapping[str, Listeners]:
    """Per trigger, the configs it can affect.

    Sessions configured alike share their TaskConfigs (``build_task_configs``), and so
    share this map too: it is never mutated.
    """
    configs = tuple(tasks.values())
    key = tuple(map(id, configs))
    cached = _listeners.get(key)
    if cached is not None:
        return cached[1]
    by_trigger: dict[str, list[TaskConfig]] = {}
    for config in configs:
        for trigger in config.after | config.unless:
            by_trigger.setdefault(trigger, []).append(config)
    listeners = {
        trigger: Listeners(
            tuple(listening),
            frozenset(config.name for config in listening),
            any(config.and_every == trigger for config in listening),
        )
        for trigger, listening in by_trigger.items()
    }
    if len(_listeners) >= 256:
        _listeners.clear()
    _listeners[key] = (configs, listeners)  # holding the configs keeps their ids unique
    return listeners


_listeners: dict[tuple[int, ...], tuple[tuple[TaskConfig, ...], dict[str, Listeners]]] = {}


_new_state = object.__new__

EMPTY = SessionState({}, {}, {}, {}, {}, {}, {}, {}, {})


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
                entry = _first_entry(name)
            elif type(names) is tuple and len(names) < CHUNK:
                entry = names + (name,)
            else:
                entry = _extended(names, [name])
            by_task[task] = entry
            if instance.status in RESOLVED_STATUSES:
                continue
            open_names = unresolved.get(task, ())
            if open_names is names:  # (as long as none is resolved, both entries are one object)
                unresolved[task] = entry
            else:
                _add(unresolved, task, name)
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
                _add(self._own_ready(), task, name)
        if joining:
            accepting = self._own_accepting()
            for accepted, joiners in joining:
                more = tuple(joiners)
                for trigger in accepted:
                    names = accepting.get(trigger, ())
                    accepting[trigger] = (
                        names + more
                        if type(names) is tuple and len(names) + len(more) <= CHUNK
                        else _extended(names, joiners)
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
                _add(self._own_unresolved(), task, name)
            else:
                _discard(self._own_unresolved(), task, name)
        accepted_now = accepted_triggers(instance)
        if accepted_before != accepted_now:
            accepting = self._own_accepting()
            for trigger in accepted_before - accepted_now:
                _discard(accepting, trigger, name)
            for trigger in accepted_now - accepted_before:
                _add(accepting, trigger, name)
        now_ready = is_ready(instance)
        if was_ready != now_ready or (now_ready and old_task != task):
            if was_ready:
                _discard(self._own_ready(), old_task, name)
            if now_ready:
                _add(self._own_ready(), task, name)

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
            ready[task] = _entry([*already, *(n for n in names_ready if n not in already)])

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


CHUNK = 32
"""Index entries up to this many names are plain tuples; longer ones are ``Names``."""


class Names(Sequence[str]):
    """An index entry grown past ``CHUNK`` names: full chunks shared between versions.

    Appending copies only the short tail (and, once per ``CHUNK`` appends, the tuple
    of chunks) instead of every name, as appending to a tuple would.
    """

    __slots__ = ("chunks", "tail")

    def __init__(self, chunks: tuple[tuple[str, ...], ...], tail: tuple[str, ...]) -> None:
        self.chunks = chunks  # each exactly CHUNK names
        self.tail = tail  # fewer than CHUNK names

    def appended(self, name: str) -> Names:
        tail = self.tail + (name,)
        if len(tail) < CHUNK:
            return Names(self.chunks, tail)
        return Names(self.chunks + (tail,), ())

    def __iter__(self) -> Iterator[str]:
        return chain(*self.chunks, self.tail)

    def __len__(self) -> int:
        return len(self.chunks) * CHUNK + len(self.tail)

    def __contains__(self, name: object) -> bool:
        return name in self.tail or any(name in chunk for chunk in self.chunks)

    def __getitem__(self, index: Any) -> Any:
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Names, tuple)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Names({tuple(self)!r})"


def _entry(names: Sequence[str]) -> tuple[str, ...] | Names:
    """``names`` as an index entry: a tuple, or chunked once longer than ``CHUNK``."""
    names = tuple(names)
    if len(names) <= CHUNK:
        return names
    full = len(names) - len(names) % CHUNK
    return Names(tuple(names[i : i + CHUNK] for i in range(0, full, CHUNK)), names[full:])


def _extended(names: Sequence[str], more: list[str]) -> Sequence[str]:
    """``names`` followed by ``more``, as an index entry (a tuple, or ``Names`` past ``CHUNK``)."""
    if type(names) is tuple:
        return names + tuple(more) if len(names) + len(more) <= CHUNK else _entry([*names, *more])
    for name in more:
        names = names.appended(name)  # type: ignore[attr-defined]
    return names


_first_entries: dict[str, tuple[str]] = {}


def _first_entry(name: str) -> tuple[str]:
    """``(name,)``, shared: sessions name their tasks' first instances alike (``t#0``), so
    the entry is one object for all of them instead of one per session."""
    entry = _first_entries.get(name)
    if entry is None:
        if len(_first_entries) >= 4096:
            _first_entries.clear()
        entry = _first_entries[name] = (name,)
    return entry


def _add(index: dict[Any, Any], key: Any, name: str) -> None:
    names = index.get(key, ())
    # (The common case inlined: a short tuple.)
    index[key] = names + (name,) if type(names) is tuple and len(names) < CHUNK else _extended(names, [name])


def _discard(index: dict[Any, Any], key: Any, name: str) -> None:
    """Remove ``name`` from ``index[key]``, dropping the key once nothing is left."""
    names = index.get(key, ())
    if name not in names:
        return
    if len(names) == 1:
        del index[key]
    elif type(names) is tuple:
        at = names.index(name)
        index[key] = names[:at] + names[at + 1 :]
    else:
        index[key] = _entry([n for n in names if n != name])
