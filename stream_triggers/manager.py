"""The trigger manager: the in-process shell around the engine.

Each public method turns its arguments into one engine input, applies it to the
session under the storage's lock, saves, hands ready instances to their task
runners, and only then - lock released - follows up: cascades fire as the next
inputs and the ``_post_*`` hooks run.  Follow-ups go through a work stack (depth
first, so hooks see the same order the original framework's recursion gave them)
instead of recursing, however long a cascade chain is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from stream_triggers import runners as _runners
from stream_triggers.engine import (
    Cascade,
    ConfigurationUpdated,
    Effect,
    Fired,
    Input,
    InstanceChanged,
    LogsResolved,
    MetadataUpdated,
    Replayed,
    ReplayRequested,
    RunInstance,
    SessionState,
    Skipped,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
    json_mapping,
)
from stream_triggers.failures import failure_metadata, reportable_failure
from stream_triggers.registry import PluginRegistry
from stream_triggers.runners import ThreadingTaskRunner, task_runners
from stream_triggers.runners.base import BaseTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage, utc_now
from stream_triggers.types import RESOLVED_STATUSES, SESSION_FINALIZED, Status, TaskConfig, TaskInstance

__all__ = ["TriggerManager", "FinalizingTriggerManager", "failure_metadata", "trigger_managers"]

log = logging.getLogger(__name__)

_Work = Input | Callable[[], None]

# The hook that each kind of effect calls; a manager class skips the ones it leaves alone.
# (``InstanceChanged`` feeds ``_post_resolve``, called once per input, see ``_apply``.)
_HOOKS_BY_EFFECT = {
    Fired: "_post_fire",
    Replayed: "_post_replay",
    Skipped: "_post_skip",
    InstanceChanged: "_post_resolve",
}


class TriggerManager:
    """Fires triggers, runs tasks, and lets subclasses react through hooks."""

    name: str | None = None
    """Registry key (set by ``trigger_managers``)."""

    _hooked_effects: frozenset[type] = frozenset()
    """Effect types whose ``_post_*`` hook this class overrides (set per subclass)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = TriggerManager
        cls._hooked_effects = frozenset(
            effect for effect, hook in _HOOKS_BY_EFFECT.items() if getattr(cls, hook) is not getattr(base, hook)
        )

    def __init__(
        self,
        storage: BaseTriggerStorage,
        *,
        runners: Mapping[str, BaseTaskRunner] | None = None,
        clock: Callable[[], datetime] = utc_now,
        observer: Callable[[list[Effect]], None] | None = None,
    ) -> None:
        """
        :param storage: where the session lives.
        :param runners: task runners to use instead of building them from
            ``task_runners`` by name (the stream worker passes its Kafka runner).
        :param clock: naive-UTC "now" for the timestamps of this manager's inputs.
        :param observer: called with the effects of every input applied, right after the
            transition and before runners start (the stream worker turns them into output
            records): the one route by which a shell learns what happened.
        """
        self.storage = storage
        self.runners: Mapping[str, BaseTaskRunner] = runners if runners is not None else {}
        self.clock = clock
        self.observer = observer
        self._inline: list[Input] | None = None  # (a list only once used: managers can be many)

    @property
    def default_task_runner_name(self) -> str:
        """Runner for tasks without ``using``; override in a subclass to change it.

        The storage decides by default: ``threading`` in process (or whatever
        ``stream_triggers.runners.DEFAULT_TASK_RUNNER`` is patched to), ``kafka`` in a
        stream worker.
        """
        name = self.storage.default_task_runner_name
        if name == ThreadingTaskRunner.name:
            return _runners.DEFAULT_TASK_RUNNER.name or name
        return name

    # -- the original framework's API ----------------------------------------------------

    def update_configuration(self, configuration: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or replace task configurations (earlier triggers are not re-applied)."""
        self.submit(ConfigurationUpdated(configuration, self.clock()))

    def fire(self, trigger_name: str, trigger_kwargs: Mapping[str, Any] | None = None) -> None:
        """Fire a trigger; tasks whose ``after`` triggers have all fired get scheduled."""
        if not isinstance(trigger_name, str) or not trigger_name:
            raise ValueError(f"A trigger name must be a non-empty string, not {trigger_name!r}.")
        kwargs = json_mapping(trigger_kwargs, f"Kwargs of trigger {trigger_name!r}")
        self.submit(TriggerFired(trigger_name, kwargs, self.clock()))

    def replay_failed_instance(
        self,
        failed_instance: TaskInstance | str,
        replacement_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a failed instance ``replayed`` and run a clone (with other kwargs, if given)."""
        name = _instance_name(failed_instance)
        replacement = (
            None if replacement_kwargs is None else json_mapping(replacement_kwargs, f"Replacement kwargs for {name!r}")
        )
        self.submit(ReplayRequested(name, replacement, self.clock()))

    def skip_failed_instance(
        self,
        failed_instance: TaskInstance | str,
        cascade: bool = False,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a failed instance ``skipped``; with ``cascade``, fire its name with ``result``."""
        name = _instance_name(failed_instance)
        fake_result = json_mapping(result, f"Result for skipped {name!r}")
        self.submit(SkipRequested(name, bool(cascade), fake_result, self.clock()))

    def update_instance_status(
        self,
        task_instance: TaskInstance | str,
        status: str,
        metadata: Mapping[str, Any] | None = None,
        cascade: bool = False,
        cascade_kwargs: Mapping[str, Any] | None = None,
    ) -> TaskInstance:
        """Set an instance's status by hand (optionally cascading); returns the instance."""
        name = _instance_name(task_instance)
        try:
            status = Status(status)
        except ValueError:
            raise ValueError(
                f"Unknown status {status!r}; expected one of {', '.join(s.value for s in Status)}."
            ) from None
        kwargs = json_mapping(cascade_kwargs, f"Cascade kwargs for {name!r}") if cascade else None
        self.submit(StatusUpdated(name, status, dict(metadata or {}), bool(cascade), kwargs, self.clock()))
        try:
            return self.storage.instances.get(name)
        except LookupError:  # e.g. the kafka storage before a worker committed the session
            return None

    def update_instance_metadata(self, task_instance: TaskInstance | str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into an instance's metadata (status unchanged)."""
        self.submit(MetadataUpdated(_instance_name(task_instance), dict(metadata or {}), self.clock()))

    def mark_instance_logs_resolved(self, task_instance: TaskInstance | str) -> None:
        self.submit(LogsResolved(_instance_name(task_instance), self.clock()))

    def get_unresolved_tasks(self) -> list[TaskConfig]:
        return self.storage.get_unresolved_tasks()

    def get_unresolved_instances(self) -> list[TaskInstance]:
        return self.storage.get_unresolved_instances()

    # -- hooks ---------------------------------------------------------------------------

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        """After a trigger fired (lock released); ``tasks_scheduled`` were made ready by it."""

    def _post_replay(self, task_instance: TaskInstance) -> None:
        """After an instance was replayed; receives the instance now in ``replayed`` status."""

    def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
        """After an instance was skipped, and after its cascade (if any) was processed."""

    def _post_resolve(self, task_instances: list[TaskInstance]) -> None:
        """After an input resolved instances without firing anything (not in the original).

        A task that skips itself, a skip without cascade, a status set by hand without
        cascade: no ``_post_fire`` follows those, so a manager that waits for the
        session to settle hears of them here.  Receives copies, lock released.
        """

    # -- the shell -------------------------------------------------------------------------

    def submit(self, event: Input) -> None:
        """Apply one engine input and everything that follows from it."""
        work = self._apply(event)
        if not work:  # the usual case: nothing follows
            return
        stack = work[::-1]
        while stack:
            item = stack.pop()
            if callable(item):
                item()
            else:
                stack.extend(reversed(self._apply(item)))

    def run_inline(self, event: Input) -> None:
        """For runners that finish a task at once: apply ``event`` after the current input."""
        if self._inline is None:
            self._inline = []
        self._inline.append(event)

    def rebuild(self) -> TriggerManager:
        """The same kind of manager over a fresh storage object (for a task's context)."""
        return type(self)(self.storage.fresh(), runners=self.runners, clock=self.clock, observer=self.observer)

    def _apply(self, event: Input) -> list[_Work]:
        """Apply ``event`` under the session lock; return the follow-ups to run after it."""
        storage = self.storage
        # (``with storage.acquire_lock()``, spelled out: this runs for every input.)
        lock = storage._lock_and_reload()
        work: list[_Work] = []
        try:
            effects = self._transition(storage, event)
            storage.save()
            hooks = self._hooked_effects
            resolved: list[TaskInstance] | None = None
            for effect in effects:  # one pass: start runners now, collect the follow-ups
                kind = type(effect)
                if kind is RunInstance:
                    self._start(storage, effect.instance)
                elif kind is Cascade:
                    work.append(TriggerFired(effect.trigger, effect.kwargs, self.clock()))
                elif kind not in hooks:
                    continue  # the base class's hook does nothing: skip the call and the copies
                elif kind is Fired:
                    work.append(partial(self._post_fire, effect.trigger, [i.copy() for i in effect.scheduled]))
                elif kind is Replayed:
                    work.append(partial(self._post_replay, effect.failed.copy()))
                elif kind is Skipped:
                    work.append(partial(self._post_skip, effect.instance.copy(), effect.cascade))
                elif kind is InstanceChanged and _newly_resolved(effect):
                    resolved = [] if resolved is None else resolved
                    resolved.append(effect.instance.copy())
            if resolved and not any(type(e) is Fired or type(e) is Cascade for e in effects):
                work.append(partial(self._post_resolve, resolved))
        except BaseException as exc:
            storage._unlock(lock, (type(exc), exc, exc.__traceback__))
            raise
        storage._unlock(lock)
        if self._inline:  # finished by runners that complete at once (after this input's cascades)
            work.extend(self._inline)
            self._inline = None
        return work

    def _start(self, storage: BaseTriggerStorage, instance: TaskInstance) -> None:
        """Hand an instance to its runner; a runner that refuses fails the instance."""
        runner_name = instance.config.using or self.default_task_runner_name
        try:
            self._runner(runner_name).run(self, instance)
        except Exception as exc:
            log.warning("could not start %s with runner %r: %s", instance.name, runner_name, exc)
            failed = StatusReported(instance.name, Status.FAILED, reportable_failure(exc), self.clock())
            self._transition(storage, failed)
            storage.save()

    def _transition(self, storage: BaseTriggerStorage, event: Input) -> list[Effect]:
        """Apply ``event`` to the session in hand and tell the observer what happened."""
        effects = storage.apply(event)
        if self.observer is not None:
            self.observer(effects)
        return effects

    def _runner(self, name: str) -> BaseTaskRunner:
        runner = self.runners.get(name)
        if runner is None:
            runner = task_runners.get(name)
        return runner

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.storage!r}>"


class FinalizingTriggerManager(TriggerManager):
    """Fires ``sessionFinalized`` once, when every task is resolved.

    Checked after every fire and after every input that resolved instances without a
    fire (the original cookbook's recipe looked only after fires, and so never
    finalized a session whose last task skipped itself).

    Tasks that wait for ``sessionFinalized`` themselves are ignored by the check
    (the cookbook's "Finalizing a Session" recipe).  Unlike the recipe, the check and
    the firing hold the session lock, so tasks finishing together finalize only once
    (``sessionFinalized``'s own follow-ups then run before that lock is released).
    """

    TRIGGER_SESSION_FINALIZED = SESSION_FINALIZED

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        if trigger_name != self.TRIGGER_SESSION_FINALIZED:
            self._finalize_if_settled()

    def _post_resolve(self, task_instances: list[TaskInstance]) -> None:
        # The last instance may be resolved without any fire (a task that skipped
        # itself, a skip without cascade): no ``_post_fire`` would ever look.
        self._finalize_if_settled()

    def _finalize_if_settled(self) -> None:
        # Cheap look at the state in hand first: most firings leave work unresolved.
        if not self._ready_to_finalize(self.storage.state):
            return
        # Check again and fire under the session lock, on freshly loaded state: tasks
        # that finish together run this hook at the same time, and only one may finalize.
        with self.storage.acquire_lock() as storage:
            if self._ready_to_finalize(storage.state):
                self.fire(self.TRIGGER_SESSION_FINALIZED)

    def _ready_to_finalize(self, state: SessionState) -> bool:
        finalized = self.TRIGGER_SESSION_FINALIZED
        if finalized in state.latest_kwargs:
            return False
        return all(finalized in config.after for config in state.unresolved_tasks())


def _newly_resolved(effect: InstanceChanged) -> bool:
    return effect.instance.status in RESOLVED_STATUSES and effect.previous not in RESOLVED_STATUSES


def _instance_name(instance: TaskInstance | str) -> str:
    return instance.name if isinstance(instance, TaskInstance) else instance


trigger_managers: PluginRegistry[TriggerManager] = PluginRegistry(
    group="stream_triggers.managers", kind="trigger manager"
)
"""Trigger managers by name (entry-point group ``stream_triggers.managers``)."""
