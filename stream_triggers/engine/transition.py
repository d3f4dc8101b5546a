"""The rules of the Triggers framework: ``step(state, input) -> (state, effects)``.

Pure: no I/O, no clock (inputs carry ``at``), no mutation of the given state.
Every shell - the in-process ``TriggerManager`` and the Kafka stream worker - calls
this one function, so both follow exactly the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from datetime import datetime
from typing import Any

from stream_triggers.engine.draft import Draft
from stream_triggers.engine.effects import (
    Cascade,
    Effect,
    Fired,
    Ignored,
    InstanceChanged,
    Replayed,
    RunInstance,
    Skipped,
)
from stream_triggers.engine.errors import OperationNotAllowed, UnknownInstance
from stream_triggers.engine.inputs import (
    ConfigurationUpdated,
    Input,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
)
from stream_triggers.engine.payloads import MAX_PAYLOAD_BYTES, plain_weight
from stream_triggers.engine.state import NOBODY, Listeners, SessionState
from stream_triggers.engine.validation import build_task_configs, checked_input
from stream_triggers.types import Status, TaskConfig, TaskInstance

__all__ = ["step", "new_instance"]

_META_TIMESTAMPS = TaskInstance.META_TIMESTAMPS
_CREATED = TaskInstance.TIMESTAMP_CREATED
_LAST_MODIFIED = TaskInstance.TIMESTAMP_LAST_MODIFIED
_UNSTARTED = Status.UNSTARTED

# Statuses a runner's report may move an instance out of; anything else is late.
_REPORTABLE = {
    Status.RUNNING: frozenset({Status.SCHEDULED}),
    Status.FINISHED: frozenset({Status.SCHEDULED, Status.RUNNING}),
    Status.FAILED: frozenset({Status.SCHEDULED, Status.RUNNING}),
    Status.SKIPPED: frozenset({Status.SCHEDULED, Status.RUNNING}),
}


def step(state: SessionState, event: Input) -> tuple[SessionState, list[Effect]]:
    """Apply one input; return the new state and what the shell must do or announce.

    Raises an :class:`~stream_triggers.engine.errors.EngineError` (and leaves nothing
    changed, since ``state`` is never mutated) when the input cannot be applied -
    :class:`~stream_triggers.engine.errors.InvalidPayload` first of all, when its payloads
    break the rules of :mod:`stream_triggers.engine.payloads`.
    """
    # The payload rules first, the same for every storage (``checked_input``; a
    # configuration is checked by its handler).  The usual fire is checked inline.
    kind = type(event)
    if kind is TriggerFired:
        kwargs = event.kwargs
        if type(kwargs) is not dict or not 0 <= plain_weight(kwargs, 1) <= MAX_PAYLOAD_BYTES:
            event = checked_input(event)
    elif kind is not ConfigurationUpdated:
        event = checked_input(event)
    draft = Draft(state)
    effects: list[Effect] = []
    _HANDLERS[kind](draft, event, effects)
    return draft.finish(), effects


# -- handlers ----------------------------------------------------------------------


def _configure(draft: Draft, event: ConfigurationUpdated, effects: list[Effect]) -> None:
    # Previously fired triggers are deliberately not re-applied (as in the original):
    # a task added mid-session only reacts to triggers fired from now on.
    configs = build_task_configs(event.configuration)
    draft.set_tasks(configs)
    for name, config in configs.items():
        for instance_name in draft.names_of(name):
            instance = draft.get(instance_name)
            if instance is not None and instance.config is not config:
                draft.put(instance.evolve(config=config))


def _fire(draft: Draft, event: TriggerFired, effects: list[Effect]) -> None:
    trigger, kwargs, at = event.trigger, event.kwargs, event.at
    listening = draft.listeners.get(trigger, NOBODY)
    # Only the instances the ``accepting`` index lists can take the trigger, so a fire
    # does not scan the instances that already have it (andEvery piles).
    taken = draft.take(trigger, kwargs)
    # New instances: for a task with none yet, and for ``andEvery`` when no open
    # instance took the trigger (so each firing adds exactly one instance).
    if listening.every or not draft.by_task.keys() >= listening.tasks:
        _create_instances(draft, listening, trigger, kwargs, at, taken, effects)
    # Settle the unstarted instances now due: those that took the trigger or were
    # created, plus any left due by an edit outside ``fire`` (the ``ready`` index).
    scheduled: list[TaskInstance] = []
    if draft.ready:
        for config in listening.configs:
            for instance in draft.pop_ready(config.name):
                if instance.can_abandon:
                    _set_status(draft, instance, Status.ABANDONED, None, at, effects)
                else:
                    ready = _set_status(draft, instance, Status.SCHEDULED, None, at, effects)
                    effects.append(RunInstance(ready))
                    scheduled.append(ready)
    draft.set_latest(trigger, kwargs)
    effects.append(Fired(trigger, tuple(scheduled)))


def _create_instances(
    draft: Draft,
    listening: Listeners,
    trigger: str,
    kwargs: Mapping[str, Any],
    at: datetime,
    taken: Sequence[str],
    effects: list[Effect],
) -> None:
    """The instances ``trigger`` creates: for each listening task without one, and for
    its ``andEvery`` tasks that no open instance of took it."""
    by_task, names_in_use, latest = draft.by_task, draft.stored, draft.latest_kwargs
    took: set[str] | None = None
    created: list[TaskInstance] = []
    # The new instances share their metadata map, and those waiting for the same
    # triggers share their kwargs map: the engine never mutates either (``SessionState``).
    metadata: dict[str, Any] | None = None
    kwargs_by_after: dict[frozenset[str], dict[str, Any]] = {}
    for config in listening.configs:
        task = config.name
        if trigger == config.and_every:
            if took is None:
                took = {draft.task_of(name) for name in taken}
            if task in took:
                continue
        elif task in by_task:
            continue
        if metadata is None:
            metadata = {_META_TIMESTAMPS: {_CREATED: at, _LAST_MODIFIED: at}}
        # A new instance inherits every earlier-fired trigger it waits for (or is
        # abandoned by), so instance kwargs hold only triggers that really fired; in
        # sorted order, so the kwargs (and the state bytes) do not depend on the hash seed.
        after = config.after
        inherited = kwargs_by_after.get(after)
        if inherited is None:
            inherited = kwargs_by_after[after] = {t: latest[t] for t in sorted(after) if t != trigger and t in latest}
            if trigger in after:
                inherited[trigger] = kwargs
        unless = config.unless
        abandon_state = frozenset(t for t in unless if t == trigger or t in latest) if unless else None
        name = _free_name(task, len(by_task.get(task, ())), names_in_use)
        instance = TaskInstance(name, config, _UNSTARTED, metadata, inherited, abandon_state)
        created.append(instance)
        effects.append(InstanceChanged(instance, None))
    if created:
        draft.add(*created)  # all at once: alike instances join the indexes together


def _status_updated(draft: Draft, event: StatusUpdated, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    _set_status(draft, instance, Status(event.status), event.metadata, event.at, effects)
    if event.cascade:
        effects.append(Cascade(instance.config.name, event.cascade_kwargs or {}))


def _status_reported(draft: Draft, event: StatusReported, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    status = Status(event.status)
    allowed = _REPORTABLE.get(status)
    if allowed is None:
        raise OperationNotAllowed(f"A task runner cannot report status {status!r}.")
    if instance.status not in allowed:
        effects.append(Ignored(instance.name, f"reported {status} while {instance.status}"))
        return
    _set_status(draft, instance, status, event.metadata, event.at, effects)
    if status == Status.FINISHED:
        effects.append(Cascade(instance.config.name, event.result or {}))


def _retry(draft: Draft, event: RetryRequested, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    if instance.status not in _REPORTABLE[Status.FAILED]:
        effects.append(Ignored(instance.name, f"retry reported while {instance.status}"))
        return
    failed = _set_status(draft, instance, Status.FAILED, event.metadata, event.at, effects)
    _replay(draft, failed, event.replacement_kwargs, event.cooldown, event.at, effects)


def _replay_requested(draft: Draft, event: ReplayRequested, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    if not instance.can_replay:
        raise OperationNotAllowed(f'Instance "{instance}" in {instance.status} state cannot be replayed!')
    _replay(draft, instance, event.replacement_kwargs, None, event.at, effects)


def _replay(
    draft: Draft,
    failed: TaskInstance,
    replacement_kwargs: Mapping[str, Any] | None,
    cooldown: float | None,
    at: datetime,
    effects: list[Effect],
) -> None:
    # The failed instance keeps its exception details; a clone runs instead.
    replayed = _set_status(draft, failed, Status.REPLAYED, None, at, effects)
    metadata: dict[str, Any] = {
        TaskInstance.META_DEPTH: failed.depth + 1,
        TaskInstance.META_PARENT: failed.name,
    }
    if cooldown:
        metadata[TaskInstance.META_COOLDOWN] = cooldown
    clone = new_instance(
        draft,
        failed.config,
        at,
        kwargs=dict(failed.kwargs) if replacement_kwargs is None else dict(replacement_kwargs),
        abandon_state=frozenset(failed.abandon_state),
        metadata=metadata,
    )
    draft.put(clone)
    effects.append(InstanceChanged(clone, None))
    clone = _set_status(draft, clone, Status.SCHEDULED, None, at, effects)
    effects.append(RunInstance(clone))
    effects.append(Replayed(replayed, clone))


def _skip(draft: Draft, event: SkipRequested, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    if not instance.can_skip:
        raise OperationNotAllowed(f'Instance "{instance}" in {instance.status} state cannot be skipped!')
    result = dict(event.result or {})
    skipped = _set_status(
        draft, instance, Status.SKIPPED, {"cascade": event.cascade, "result": result}, event.at, effects
    )
    if event.cascade:
        effects.append(Cascade(instance.config.name, result))
    effects.append(Skipped(skipped, event.cascade))


def _metadata_updated(draft: Draft, event: MetadataUpdated, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    draft.put(instance.evolve(metadata=_stamped({**instance.metadata, **event.metadata}, None, event.at)))


def _logs_resolved(draft: Draft, event: LogsResolved, effects: list[Effect]) -> None:
    instance = _existing(draft, event.instance)
    metadata = {**instance.metadata, TaskInstance.META_LOGS_RESOLVED: True}
    draft.put(instance.evolve(metadata=_stamped(metadata, None, event.at)))


_HANDLERS: dict[type, Callable[[Draft, Any, list[Effect]], None]] = {
    ConfigurationUpdated: _configure,
    TriggerFired: _fire,
    StatusUpdated: _status_updated,
    StatusReported: _status_reported,
    RetryRequested: _retry,
    ReplayRequested: _replay_requested,
    SkipRequested: _skip,
    MetadataUpdated: _metadata_updated,
    LogsResolved: _logs_resolved,
}


# -- helpers -----------------------------------------------------------------------


def new_instance(
    draft: Draft,
    config: TaskConfig,
    at: datetime,
    *,
    kwargs: dict[str, Any] | None = None,
    abandon_state: frozenset[str] | None = None,
    metadata: dict[str, Any] | None = None,
    status: Status = Status.UNSTARTED,
) -> TaskInstance:
    """A new unstarted instance named ``<task>#<n>`` (not yet put into the draft)."""
    timestamps = {_CREATED: at, _LAST_MODIFIED: at}
    return TaskInstance(
        _free_name(config.name, len(draft.names_of(config.name)), draft.stored),
        config,
        status,
        {**metadata, _META_TIMESTAMPS: timestamps} if metadata else {_META_TIMESTAMPS: timestamps},
        kwargs if kwargs is not None else {},
        abandon_state,
    )


def _free_name(task: str, count: int, names_in_use: Container[str]) -> str:
    """``<task>#<count>``, primed if a hand-made instance took that name."""
    name = f"{task}#{count}"
    while name in names_in_use:
        name = f"{name}'"
    return name


def _existing(draft: Draft, name: str) -> TaskInstance:
    instance = draft.get(name)
    if instance is None:
        raise UnknownInstance(name)
    return instance


def _set_status(
    draft: Draft,
    instance: TaskInstance,
    status: Status,
    metadata: Mapping[str, Any] | None,
    at: datetime,
    effects: list[Effect],
) -> TaskInstance:
    merged = {**instance.metadata, **metadata} if metadata else dict(instance.metadata)
    updated = instance.evolve(status=status, metadata=_stamped(merged, status, at))
    draft.put(updated)
    effects.append(InstanceChanged(updated, instance.status))
    return updated


def _stamped(metadata: dict[str, Any], status: Status | None, at: datetime) -> dict[str, Any]:
    """``metadata`` with its timestamps bumped (mutates and returns the fresh dict)."""
    timestamps = dict(metadata.get(_META_TIMESTAMPS) or {})
    timestamps.setdefault(_CREATED, at)
    timestamps[_LAST_MODIFIED] = at
    if status is not None:
        timestamps[str(status)] = at
    metadata[_META_TIMESTAMPS] = timestamps
    return metadata
