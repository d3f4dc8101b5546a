"""Why the engine refused an input.  Each is also the built-in error users expect."""

from __future__ import annotations

from stream_triggers.exceptions import StreamTriggersError

__all__ = [
    "EngineError",
    "InvalidConfiguration",
    "InvalidPayload",
    "OperationNotAllowed",
    "UnknownInstance",
]


class EngineError(StreamTriggersError):
    """Root of the engine's refusals; ``reason`` is a short machine-readable code."""

    reason = "engine_error"


class InvalidConfiguration(EngineError, ValueError):
    """A task configuration is malformed; names the task and the directive."""

    reason = "invalid_configuration"

    def __init__(self, task: str, directive: str, problem: str) -> None:
        super().__init__(f"Task {task!r}: directive {directive!r} {problem}")
        self.task = task
        self.directive = directive


class InvalidPayload(EngineError, ValueError):
    """Trigger kwargs, a result or metadata cannot travel as a JSON mapping."""

    reason = "invalid_payload"


class UnknownInstance(EngineError, KeyError):
    """The session has no task instance by that name."""

    reason = "unknown_instance"

    def __init__(self, instance: str) -> None:
        super().__init__(instance)
        self.instance = instance

    def __str__(self) -> str:
        return f"No task instance named {self.instance!r} in this session."


class OperationNotAllowed(EngineError, ValueError):
    """The instance's status does not allow the operation (e.g. replaying a finished one)."""

    reason = "operation_not_allowed"
