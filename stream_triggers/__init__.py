"""stream-triggers: the Triggers framework on Kafka.

"Run this task once triggers A and B have fired for this session, whatever order and
whatever server they arrive on."  See README.md.

As the original package did, this one also offers ``TriggerManager``,
``trigger_managers``, ``BaseTriggerStorage`` and ``storage_backends`` at its top level, so
that ``from triggers import TriggerManager`` ports by its package name alone.  They are
imported on first use: ``import stream_triggers`` stays light for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TriggerManager": "stream_triggers.manager",
    "trigger_managers": "stream_triggers.manager",
    "BaseTriggerStorage": "stream_triggers.storages",
    "storage_backends": "stream_triggers.storages",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_triggers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
