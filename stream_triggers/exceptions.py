"""The root of every stream-triggers error, and a helper to attach context to exceptions.

Every error this package raises derives from :class:`StreamTriggersError`, so callers
can catch "anything stream-triggers refused" in one clause.  Each subclass also keeps
the built-in base callers relied on before (``ValueError`` for bad input,
``LookupError``/``KeyError`` for what is not there, ``RuntimeError`` for state that
went wrong), so existing ``except ValueError`` clauses still work.  The subclasses
live beside the code that raises them; :data:`PROJECT_ERRORS` (in the tests) lists them.

Control-flow exceptions a task raises on purpose (``task.StatusChange`` / ``Retry``)
are not errors and do not derive from the root: a broad ``except StreamTriggersError``
in task code must not swallow a retry.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, TypeVar

from class_registry import RegistryKeyError as _ClassRegistryKeyError

__all__ = ["RegistryKeyError", "StreamTriggersError", "with_context"]

E = TypeVar("E", bound=BaseException)


class StreamTriggersError(Exception):
    """Root of every error stream-triggers raises."""


class RegistryKeyError(StreamTriggersError, _ClassRegistryKeyError):
    """No plugin (manager, storage, runner, task) is registered under that key.

    Also the ``class_registry`` error of the same name (a ``KeyError``), which the
    original framework's callers catch.
    """


def with_context(exc: E, context: dict[str, Any]) -> E:
    """Return ``exc`` with ``context`` merged into ``exc.context`` (for logs and metadata).

    A non-mapping ``exc.context`` is kept under ``'_original_context'``.
    """
    existing = getattr(exc, "context", None)
    if existing is None:
        existing = {}
    elif not isinstance(existing, MutableMapping):
        existing = {"_original_context": existing}
    existing.update(context)
    exc.context = existing  # type: ignore[attr-defined]
    return exc
