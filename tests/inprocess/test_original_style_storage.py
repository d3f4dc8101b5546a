"""A storage backend written the original framework's way (``_load_from_backend`` /
``_save`` over plain dicts) works unchanged on the new base class."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.testing import PassThruTask

_BACKEND: dict[str, dict[str, Any]] = {}


class DictStorageBackend(BaseTriggerStorage):
    """Keeps the serialised session in a module-level dict, like the docs' cache backend."""

    name = "dict"

    def _load_from_backend(self) -> tuple[dict, dict, dict]:
        stored = _BACKEND.get(self.uid) or {}
        return stored.get("tasks") or {}, stored.get("instances") or {}, stored.get("metas") or {}

    def _save(self) -> None:
        _BACKEND[self.uid] = {
            "tasks": self._serialize(self._configs),
            "instances": self._serialize(self._instances),
            "metas": self._metas,
        }


def test_an_original_style_backend_runs_the_framework() -> None:
    manager = TriggerManager(DictStorageBackend("legacy-1"))
    manager.update_configuration(
        {
            "t_alpha": {"after": ["go"], "run": PassThruTask.name},
            "t_bravo": {"after": ["t_alpha"], "andEvery": "page", "run": PassThruTask.name},
        }
    )
    manager.fire("page", {"n": 1})
    manager.fire("go", {"k": 1})
    ThreadingTaskRunner.join_all()

    stored = _BACKEND["legacy-1"]
    assert stored["instances"]["t_alpha#0"]["status"] == "finished"
    assert stored["instances"]["t_bravo#0"]["kwargs"]["page"] == {"n": 1}
    assert stored["metas"]["latest_kwargs"]["go"] == {"k": 1}

    reread = DictStorageBackend("legacy-1")
    assert reread["t_bravo#0"].status == "finished"
    assert isinstance(reread["t_alpha#0"].last_modified, datetime)
    assert sorted(t.name for t in reread.get_unresolved_tasks()) == []
    assert reread.tasks["t_bravo"].and_every == "page"
