"""What a task runner is: something that starts a scheduled instance somewhere."""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from stream_triggers.engine import Input, InvalidPayload
from stream_triggers.registry import PluginRegistry
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.task import TriggerTask, failure_input, resolve_task
from stream_triggers.types import TaskInstance

__all__ = ["BaseTaskRunner", "RunnerHost", "fail_instance", "task_runners", "task_kwargs", "merge_dict_recursive"]

log = logging.getLogger(__name__)


class RunnerHost(Protocol):
    """What a runner needs from the manager that hands it an instance.

    A protocol rather than the concrete ``TriggerManager``: the manager imports the
    runners, so the runners must not import the manager back.
    """

    name: str | None
    storage: BaseTriggerStorage
    clock: Callable[[], datetime]

    @property
    def default_task_runner_name(self) -> str: ...

    def submit(self, event: Input) -> None: ...

    def run_inline(self, event: Input) -> None: ...

    def rebuild(self) -> RunnerHost: ...


class BaseTaskRunner(ABC):
    """Starts task instances; selected by a task's ``using`` or the manager's default."""

    name: str | None = None
    """Registry key (set by ``task_runners``)."""

    @abstractmethod
    def run(self, manager: RunnerHost, task_instance: TaskInstance) -> None:
        """Start ``task_instance`` (already ``scheduled``); raise if it cannot be started.

        Called with the session locked; the task must report back through the manager
        (or the events topic), not from inside this call.
        """

    allow_python_path_target: bool = False
    """Let :meth:`resolve` import the module a ``run`` name points to (off: see
    :func:`~stream_triggers.task.resolve_task`); the original's switch, same name."""

    def resolve(self, target: str | type[TriggerTask]) -> type[TriggerTask]:
        """The TriggerTask class a ``run`` value names (the original returned a bound task).

        Names resolve through the task registry only, unless this runner (class)
        sets ``allow_python_path_target``.
        """
        if isinstance(target, str):
            return resolve_task(target, allow_imports=self.allow_python_path_target or None)
        if isinstance(target, type) and issubclass(target, TriggerTask):
            return target
        raise TypeError(f"{type(self).__name__} runs TriggerTask subclasses, not {type(target).__name__}.")


def merge_dict_recursive(*dicts: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mappings left to right; nested mappings merge, everything else is replaced."""
    merged: dict[str, Any] = {}
    for mapping in dicts:
        for key, value in mapping.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge_dict_recursive(merged[key], value)
            else:
                merged[key] = value
    return merged


def task_kwargs(task_instance: TaskInstance) -> dict[str, Any]:
    """What the task receives as ``trigger_kwargs``: ``withParams`` under the instance kwargs.

    A deep copy: the session state shares these maps between instances and versions,
    so a task that edits its kwargs must not reach them.
    """
    with_params = task_instance.config.with_params
    kwargs = merge_dict_recursive(with_params, task_instance.kwargs) if with_params else task_instance.kwargs
    return copy.deepcopy(dict(kwargs))


def fail_instance(manager: RunnerHost, instance: str, exc: Exception, report: Input | None = None) -> None:
    """Report ``instance`` failed with ``exc``, which broke its run or the report of its outcome.

    For runners that report from this process: whatever goes wrong after the instance
    was handed over, it must not stay ``scheduled`` or ``running`` for ever.  With
    ``report``, an :class:`InvalidPayload` is the engine's refusal of that report (a
    result too heavy, say), and the failure says which report it refused.  Should the
    outcome have gone through after all (a follow-up raised), the engine ignores this
    report: a resolved instance stays as it is.
    """
    refused = report if isinstance(exc, InvalidPayload) else None
    log.warning("task instance %s failed in its runner: %s", instance, exc, exc_info=exc)
    try:
        manager.submit(failure_input(instance, exc, manager.clock(), refused))
    except Exception:
        log.exception("could not report task instance %s failed", instance)


task_runners: PluginRegistry[BaseTaskRunner] = PluginRegistry(group="stream_triggers.runners", kind="task runner")
"""Task runners by name (entry-point group ``stream_triggers.runners``)."""
