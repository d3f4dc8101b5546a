"""Which engine applies the worker's inputs: the native core (Rust) when it is installed, else Python.

The one place that imports the optional ``stream_triggers_native`` extension (built from
``native/`` by ``scripts/test.sh`` / ``scripts/demo.sh`` where ``cargo`` exists).  The
Python engine stays the reference and the fallback: a machine without a Rust toolchain runs
everything on it.  ``STREAM_TRIGGERS_ENGINE=native|python`` forces a choice.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from stream_triggers.exceptions import StreamTriggersError

__all__ = ["ENGINE_ENV", "NativeUnavailable", "available", "choose", "describe", "new_core"]

ENGINE_ENV = "STREAM_TRIGGERS_ENGINE"
ENGINES = ("native", "python")
BUILT_IN_MANAGERS = ("default", "finalizing")


def _load() -> ModuleType | None:
    try:
        import stream_triggers_native
    except ImportError:
        return None
    return stream_triggers_native


_native = _load()


class NativeUnavailable(StreamTriggersError, RuntimeError):
    """The native engine was asked for but cannot run here."""


def available() -> bool:
    """Whether the native core is installed."""
    return _native is not None


def choose(requested: str | None = None, manager: str = "default") -> str:
    """``"native"`` or ``"python"``: ``requested`` (else ``$STREAM_TRIGGERS_ENGINE``), else native if it can run.

    ``"auto"`` (or nothing asked) means: native if it can run.

    The native core runs the built-in managers only; a custom manager (Python hooks) runs
    on the Python engine.  Asking for ``native`` where it cannot run raises
    :class:`NativeUnavailable` rather than quietly running Python.
    """
    wanted = requested or os.environ.get(ENGINE_ENV) or None
    if wanted == "auto":
        wanted = None
    if wanted is not None and wanted not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join((*ENGINES, 'auto'))}, not {wanted!r}")
    can_run = available() and manager in BUILT_IN_MANAGERS
    if wanted == "native" and not can_run:
        why = "it is not installed (build it: pip install ./native)" if not available() else f"manager {manager!r}"
        raise NativeUnavailable(f"the native engine cannot run: {why}")
    if wanted == "python":
        return "python"
    return "native" if can_run else "python"


def describe() -> str:
    """One line saying which engine a worker with the default manager runs, and why."""
    if available():
        return f"engine: native (stream_triggers_native {_native.__version__})"  # type: ignore[union-attr]
    return "engine: python (the native core is not installed)"


def new_core(manager: str, task_runs: str, task_results: str, sessions: str) -> Any:
    """A native core holding the session states of the partitions a worker owns."""
    if _native is None:
        raise NativeUnavailable("the native engine is not installed")
    return _native.NativeCore(manager, task_runs, task_results, sessions)
