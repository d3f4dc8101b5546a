"""Trigger tasks: the user's code, its context, and how one run turns into a status.

A ``TriggerTask`` subclass registers itself under its ``name`` (default
``module.ClassName``) when its module is imported.  :func:`execute` runs one
instance and returns an :data:`Outcome` instead of reporting it, so the in-process
runner and the Kafka executor report the very same outcomes through their own
channels (:func:`outcome_input` turns one into engine inputs).
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from stream_triggers.engine import Input, RetryRequested, StatusReported, StatusUpdated, json_mapping
from stream_triggers.engine.errors import InvalidPayload
from stream_triggers.engine.payloads import clipped_repr
from stream_triggers.exceptions import StreamTriggersError, with_context
from stream_triggers.failures import failure_metadata, jsonable_context, reportable_failure
from stream_triggers.types import Status, TaskInstance

__all__ = [
    "ALLOW_TASK_IMPORTS_ENV",
    "MaxRetriesExceeded",
    "Retry",
    "StatusChange",
    "TaskContext",
    "TaskRequest",
    "TriggerTask",
    "UnknownTask",
    "execute",
    "failure_input",
    "outcome_input",
    "resolve_task",
    "task_registry",
]

task_registry: dict[str, type[TriggerTask]] = {}
"""Every imported TriggerTask subclass, by name."""

_task_log = logging.getLogger("stream_triggers.tasks")


class UnknownTask(StreamTriggersError, LookupError):
    """No TriggerTask is registered under the configured ``run`` name."""


class MaxRetriesExceeded(StreamTriggersError):
    """A task asked to retry itself more than its ``max_retries``."""


class StatusChange(Exception):
    """Raised by a task to end in a status of its own choosing (see ``TriggerTask.skip``)."""

    def __init__(self, status: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(status)
        self.status = Status(status)
        self.metadata = dict(metadata or {})


class Retry(StatusChange):
    """Raised (via ``TriggerTask.retry``) to fail this run and replay it after ``cooldown``."""

    def __init__(
        self,
        metadata: Mapping[str, Any] | None = None,
        replacement_kwargs: Mapping[str, Any] | None = None,
        cooldown: float | None = None,
    ) -> None:
        metadata = dict(metadata or {})
        metadata.setdefault(TaskInstance.META_COOLDOWN, cooldown)
        super().__init__(Status.FAILED, metadata)
        self.cooldown = cooldown
        self.replacement_kwargs = replacement_kwargs


@dataclass
class TaskRequest:
    """What the original exposed as Celery's ``self.request``: id and replay depth."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    retries: int = 0


class TriggerTask:
    """Base class for tasks run by the Triggers framework: implement ``_run(context)``."""

    name: ClassVar[str]
    max_retries: ClassVar[int] = 3

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__name__}"
        task_registry[cls.name] = cls

    def __init__(self, request: TaskRequest | None = None) -> None:
        self.request = request or TaskRequest()

    def _run(self, context: TaskContext) -> Mapping[str, Any] | None:
        """The task's work; the returned mapping becomes the cascade's kwargs."""
        raise NotImplementedError(f"Not implemented in {type(self).__name__}.")

    @staticmethod
    def skip(metadata: Mapping[str, Any] | None = None) -> StatusChange:
        """An exception that, raised, marks this instance ``skipped``."""
        return StatusChange(Status.SKIPPED, metadata)

    def retry(
        self,
        exc: BaseException | None = None,
        metadata: Mapping[str, Any] | None = None,
        replacement_kwargs: Mapping[str, Any] | None = None,
        cooldown: float | None = None,
    ) -> Retry:
        """An exception that, raised, fails this run and replays it after ``cooldown`` s.

        Raises :class:`MaxRetriesExceeded` instead once ``request.retries`` (the replay
        depth) has reached ``max_retries``.
        """
        metadata = dict(metadata or {})
        if exc is not None:
            metadata.update(failure_metadata(exc))
        if self.request.retries >= self.max_retries:
            raise with_context(
                MaxRetriesExceeded(
                    f"Attempting retry #{self.request.retries + 1}, but `self.max_retries` = {self.max_retries}."
                ),
                {"replay_metadata": metadata},
            )
        return Retry(metadata, replacement_kwargs, cooldown)


ALLOW_TASK_IMPORTS_ENV = "STREAM_TRIGGERS_ALLOW_TASK_IMPORTS"
"""Set to ``1`` to let a ``run`` name import its module (off: names are code paths)."""


def resolve_task(name: str, *, allow_imports: bool | None = None) -> type[TriggerTask]:
    """The TriggerTask class registered as ``name``.

    Only classes already imported (by the application, or by an executor's
    ``--import``) can run: a ``run`` name comes from a session's configuration, and
    importing whatever module it names would run that module's code.  The original
    framework turned its Python-path targets off for the same reason.  With
    ``allow_imports`` (default: ``$STREAM_TRIGGERS_ALLOW_TASK_IMPORTS`` set to ``1``)
    an unregistered ``module.Class`` name imports ``module`` first, as before.
    """
    task = task_registry.get(name)
    if task is not None:
        return task
    if allow_imports is None:
        allow_imports = os.environ.get(ALLOW_TASK_IMPORTS_ENV, "") in ("1", "true", "yes")
    hint = "import the module that defines it (executors: --import MODULE)"
    if allow_imports and "." in name:
        module = name.rsplit(".", 1)[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            hint = f"importing {module!r} failed: {exc}"
        task = task_registry.get(name)
        if task is not None:
            return task
    known = ", ".join(sorted(task_registry)) or "none"
    raise UnknownTask(f"No TriggerTask named {name!r} is registered; {hint}. Known tasks: {known}.")


class TaskContext:
    """Everything a running task gets: its kwargs, its manager, a tracking logger."""

    def __init__(
        self,
        instance_name: str,
        trigger_kwargs: Mapping[str, Any],
        manager_factory: Callable[[], Any],
        *,
        session_uid: str | None = None,
    ) -> None:
        self.instance_name = instance_name
        self.trigger_kwargs = trigger_kwargs
        self.session_uid = session_uid
        self.log_level = logging.NOTSET
        """Highest level logged inside ``get_logger_context`` blocks so far."""
        self._manager_factory = manager_factory
        self._manager: Any = None

    @property
    def storage_uid(self) -> str | None:
        """The session's UID under the original's name (``session_uid``)."""
        return self.session_uid

    @property
    def manager(self) -> Any:
        """A trigger manager for this task's session (e.g. to fire more triggers).

        (Typed loosely: this module sits below the manager and must not import it.)
        """
        if self._manager is None:
            self._manager = self._manager_factory()
        return self._manager

    @property
    def task_instance(self) -> TaskInstance:
        return self.manager.storage.instances[self.instance_name]

    @contextmanager
    def get_logger_context(
        self,
        logger: logging.Logger | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Iterator[logging.LoggerAdapter]:
        """A logger whose records carry ``context`` and whose max level is recorded.

        An exception raised inside the block is logged (with its ``context``) and
        re-raised.  Records also reach ``logger`` (default ``stream_triggers.tasks``)
        at the levels it is configured for.  The original docs pass the context dict
        positionally (``get_logger_context(extra_context)``), so a mapping given as
        ``logger`` is taken as the context.
        """
        if isinstance(logger, Mapping) and context is None:
            logger, context = None, logger
        tracker = _LevelTracker()
        local = _LocalLogger(f"stream_triggers.tasks.{self.instance_name}", logger or _task_log, logger is None)
        local.addHandler(tracker)
        adapter = _ContextAdapter(local, {"context": dict(context or {})})
        try:
            yield adapter
        except Exception as exc:
            adapter.exception(str(exc), extra={"context": getattr(exc, "context", {})})
            raise
        finally:
            self.log_level = max(self.log_level, tracker.max_level)


class _LevelTracker(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.max_level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        self.max_level = max(self.max_level, record.levelno)


class _LocalLogger(logging.Logger):
    """Tracks the levels of its records and forwards what ``target`` would log.

    With no logger given, every level is tracked (the original's own ``LocalLogger``
    recorded everything).  A logger the task passes decides instead: the original put the
    tracking handler on that logger, so a record it drops is not counted.
    """

    def __init__(self, name: str, target: logging.Logger, every_level: bool) -> None:
        super().__init__(name, logging.NOTSET)
        self.propagate = False
        self.target = target
        self.every_level = every_level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging API
        return self.every_level or self.target.isEnabledFor(level)

    def callHandlers(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        super().callHandlers(record)
        if self.target.isEnabledFor(record.levelno):
            self.target.handle(record)


class _ContextAdapter(logging.LoggerAdapter):
    """Merges per-message ``extra`` (or ``extras``, as the original docs spell it)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.pop("extras", None) or kwargs.get("extra") or {}
        merged = dict(self.extra)
        for key, value in extra.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        kwargs["extra"] = merged
        return msg, kwargs


# -- running one instance -------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    result: dict[str, Any]
    log_level: int


@dataclass(frozen=True)
class Failed:
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Changed:
    status: Status
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Retried:
    metadata: dict[str, Any]
    replacement_kwargs: dict[str, Any] | None
    cooldown: float | None


Outcome = Finished | Failed | Changed | Retried


def execute(task_cls: type[TriggerTask], context: TaskContext, depth: int = 0) -> Outcome:
    """Run ``task_cls`` once in ``context``; never raises (failures become ``Failed``).

    The outcome may still break the payload rules (a result too heavy, say): the
    engine refuses its report, and the runner then reports the refusal as the failure.
    """
    try:
        return _outcome(task_cls(TaskRequest(retries=depth)), context)
    except Exception as exc:  # (e.g. a RecursionError describing absurdly deep metadata)
        return Failed(reportable_failure(exc, context.log_level))


def _outcome(task: TriggerTask, context: TaskContext) -> Outcome:
    name = type(task).name
    try:
        result = task._run(context)
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            raise with_context(
                ValueError(
                    f"{name} must return a Mapping (dict), so that it can be used "
                    f"as kwargs for cascading triggers; it returned {type(result).__name__}."
                ),
                {"actual_result": clipped_repr(result)},
            )
        result = json_mapping(result, f"Result of {name}")  # (the payload rules, as every input meets)
        return Finished(result, context.log_level)
    except Retry as retry:
        try:
            replacement = (
                None
                if retry.replacement_kwargs is None
                else json_mapping(retry.replacement_kwargs, "replacement_kwargs")
            )
        except InvalidPayload as exc:
            return Failed(reportable_failure(exc, context.log_level))
        return Retried(_plain(retry.metadata), replacement, retry.cooldown)
    except StatusChange as change:
        return Changed(change.status, _plain(change.metadata))
    except Exception as exc:
        _task_log.debug("task %s failed", context.instance_name, exc_info=True)
        return Failed(reportable_failure(exc, context.log_level))


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` as JSON where it can be; else as given, for the engine to refuse by name."""
    try:
        return json_mapping(metadata, "task metadata")
    except InvalidPayload:
        try:
            return jsonable_context(metadata)
        except RecursionError:
            return dict(metadata)


_REFUSED_REPORT = "refused_report"


def failure_input(instance: str, exc: BaseException, at: datetime, refused: Input | None = None) -> Input:
    """The report that fails ``instance`` with ``exc`` (``refused``: the report ``exc`` refused)."""
    if refused is not None:
        status = getattr(refused, "status", None)
        with_context(exc, {_REFUSED_REPORT: "retry" if status is None else str(Status(status).value)})
    return StatusReported(instance, Status.FAILED, reportable_failure(exc), at)


def running_input(instance: str, kwargs: Mapping[str, Any], at: datetime) -> Input:
    return StatusReported(instance, Status.RUNNING, {TaskInstance.META_ACTUAL_KWARGS: dict(kwargs)}, at)


def outcome_input(instance: str, outcome: Outcome, at: datetime) -> Input:
    """The engine input that reports ``outcome`` for ``instance``."""
    if isinstance(outcome, Finished):
        metadata = {TaskInstance.META_RESULT: outcome.result, TaskInstance.META_LOG_LEVEL: outcome.log_level}
        return StatusReported(instance, Status.FINISHED, metadata, at, outcome.result)
    if isinstance(outcome, Failed):
        return StatusReported(instance, Status.FAILED, outcome.metadata, at)
    if isinstance(outcome, Retried):
        return RetryRequested(instance, outcome.metadata, outcome.replacement_kwargs, outcome.cooldown, at)
    if outcome.status in (Status.SKIPPED, Status.FAILED):
        return StatusReported(instance, outcome.status, outcome.metadata, at)
    return StatusUpdated(instance, outcome.status, outcome.metadata, False, None, at)
