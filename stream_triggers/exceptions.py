"""Attach troubleshooting context to exceptions without bloating their messages."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, TypeVar

__all__ = ["with_context"]

E = TypeVar("E", bound=BaseException)


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
