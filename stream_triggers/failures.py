"""How a failure is written into an instance's metadata.

Below the manager, the task module and the executor, which all describe failures the
same way (so an in-process failure and an executor's failure read alike).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from stream_triggers.engine import MAX_PAYLOAD_BYTES, InvalidPayload, checked_payload
from stream_triggers.engine.payloads import Weigher, clipped_repr
from stream_triggers.types import TaskInstance

__all__ = ["MAX_FAILURE_TEXT", "failure_metadata", "jsonable_context", "reportable_failure"]


def failure_metadata(exc: BaseException, log_level: int | None = None) -> dict[str, Any]:
    """Instance metadata describing an exception (type as ``module.ClassName``)."""
    metadata = {
        TaskInstance.META_EXCEPTION_CONTEXT: jsonable_context(getattr(exc, "context", {})),
        TaskInstance.META_EXCEPTION_INFO: "".join(traceback.format_exception(exc)),
        TaskInstance.META_EXCEPTION_TYPE: f"{type(exc).__module__}.{type(exc).__name__}",
    }
    if log_level is not None:
        metadata[TaskInstance.META_LOG_LEVEL] = log_level
    return metadata


def jsonable_context(context: Any) -> Any:
    """Exception context as JSON-friendly data (reprs, clipped, for what JSON cannot carry)."""
    if isinstance(context, Mapping):
        return {str(k): jsonable_context(v) for k, v in context.items()}
    if isinstance(context, (list, tuple)):
        return [jsonable_context(v) for v in context]
    if isinstance(context, (str, int, float, bool)) or context is None:
        return context
    return clipped_repr(context, _MAX_CONTEXT_REPR)


_MAX_CONTEXT_REPR = 1024
"""Characters of a value's repr an exception context keeps (a huge set must not fill a report)."""


MAX_FAILURE_TEXT = 32 * 1024
"""Characters of a traceback a failure report keeps when the whole one is too heavy."""

_MAX_FAILURE_PART = 8 * 1024


def reportable_failure(exc: BaseException, log_level: int | None = None) -> dict[str, Any]:
    """:func:`failure_metadata` of ``exc``, clipped if need be so that a report can carry it.

    A failure whose traceback or context breaks the payload rules (a message quoting a
    huge value, a context nested too deep) would be refused in turn and leave its
    instance unresolved; its text is clipped instead (head and tail kept).
    """
    try:
        metadata = failure_metadata(exc, log_level)
    except RecursionError:
        metadata = {TaskInstance.META_EXCEPTION_CONTEXT: {}}
    else:
        if _reportable(metadata):
            return metadata
    clipped = {
        TaskInstance.META_EXCEPTION_CONTEXT: metadata[TaskInstance.META_EXCEPTION_CONTEXT],
        TaskInstance.META_EXCEPTION_INFO: _clip(
            "".join(_clip(part, _MAX_FAILURE_PART) for part in traceback.format_exception(exc)), MAX_FAILURE_TEXT
        ),
        TaskInstance.META_EXCEPTION_TYPE: f"{type(exc).__module__}.{type(exc).__name__}",
    }
    if log_level is not None:
        clipped[TaskInstance.META_LOG_LEVEL] = log_level
    if not _reportable(clipped):
        clipped[TaskInstance.META_EXCEPTION_CONTEXT] = {"clipped": "the exception's context is too large to report"}
    return clipped


def _reportable(metadata: Mapping[str, Any]) -> bool:
    weigher = Weigher()
    try:
        checked_payload(metadata, "failure metadata", weigher)
    except (InvalidPayload, RecursionError):
        return False
    return weigher.size <= MAX_PAYLOAD_BYTES


def _clip(text: str, limit: int) -> str:
    text = text.encode("utf-8", "backslashreplace").decode()  # (lone surrogates are not Unicode)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half:,} characters clipped ...] {text[-half:]}"
