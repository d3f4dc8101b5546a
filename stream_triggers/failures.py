"""How a failure is written into an instance's metadata.

Below the manager, the task module and the executor, which all describe failures the
same way (so an in-process failure and an executor's failure read alike).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from stream_triggers.types import TaskInstance

__all__ = ["failure_metadata", "jsonable_context"]


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
    """Exception context as JSON-friendly data (reprs for what JSON cannot carry)."""
    if isinstance(context, Mapping):
        return {str(k): jsonable_context(v) for k, v in context.items()}
    if isinstance(context, (list, tuple)):
        return [jsonable_context(v) for v in context]
    if isinstance(context, (str, int, float, bool)) or context is None:
        return context
    return repr(context)
