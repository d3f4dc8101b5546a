"""The derived indexes of a session state, and the entries they hold.

Derived indexes keep ``fire`` cheap however many instances a session accumulates:

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
append (``andEvery`` sessions with thousands of instances).  Entries are never
mutated: the helpers below build new ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

from stream_triggers.types import Status, TaskConfig, TaskInstance

__all__ = [
    "CHUNK",
    "AlikeRun",
    "NOBODY",
    "Listeners",
    "Names",
    "accepted_triggers",
    "add_name",
    "discard_name",
    "entry_of",
    "extended",
    "first_entry",
    "is_ready",
    "listeners_of",
]

AlikeRun = tuple[Sequence[str], Mapping[str, Any], frozenset[str]]
"""``(names, kwargs, after)``: a hint the last fire leaves for the next - every
instance in ``names`` now holds ``kwargs`` as its kwargs, waits for ``after`` and has no
``unless``.  (A plain tuple: one is built per fire.)

Instances created together and fired at together stay alike, and their ``accepting``
entries are one tuple; a fire whose entry *is* ``names`` then updates them all at once.
Any other change to stored or fresh instances drops the hint.
"""

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
    kwargs, after = instance.kwargs, config.after  # sizes first: no keys view while waiting
    return bool(unless and unless.issubset(instance.abandon_state)) or (
        len(kwargs) >= len(after) and kwargs.keys() >= after
    )


class Listeners(NamedTuple):
    """The task configs one trigger can affect (its ``after`` or ``unless`` names it)."""

    configs: tuple[TaskConfig, ...]  # in configuration order
    tasks: frozenset[str]  # their names
    every: bool  # whether it is some config's ``andEvery`` trigger


NOBODY = Listeners((), frozenset(), False)


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


def entry_of(names: Sequence[str]) -> tuple[str, ...] | Names:
    """``names`` as an index entry: a tuple, or chunked once longer than ``CHUNK``."""
    names = tuple(names)
    if len(names) <= CHUNK:
        return names
    full = len(names) - len(names) % CHUNK
    return Names(tuple(names[i : i + CHUNK] for i in range(0, full, CHUNK)), names[full:])


def extended(names: Sequence[str], more: list[str]) -> Sequence[str]:
    """``names`` followed by ``more``, as an index entry (a tuple, or ``Names`` past ``CHUNK``)."""
    if type(names) is tuple:
        return names + tuple(more) if len(names) + len(more) <= CHUNK else entry_of([*names, *more])
    for name in more:
        names = names.appended(name)  # type: ignore[attr-defined]
    return names


_first_entries: dict[str, tuple[str]] = {}


def first_entry(name: str) -> tuple[str]:
    """``(name,)``, shared: sessions name their tasks' first instances alike (``t#0``), so
    the entry is one object for all of them instead of one per session."""
    entry = _first_entries.get(name)
    if entry is None:
        if len(_first_entries) >= 4096:
            _first_entries.clear()
        entry = _first_entries[name] = (name,)
    return entry


def add_name(index: dict[Any, Any], key: Any, name: str) -> None:
    names = index.get(key, ())
    # (The common case inlined: a short tuple.)
    index[key] = names + (name,) if type(names) is tuple and len(names) < CHUNK else extended(names, [name])


def discard_name(index: dict[Any, Any], key: Any, name: str) -> None:
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
        index[key] = entry_of([n for n in names if n != name])
