"""A task module no test imports: only the opt-in resolution of a ``run`` name loads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_triggers.task import TaskContext, TriggerTask


class Imported(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {}
