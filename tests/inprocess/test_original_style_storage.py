"""A storage backend written the original framework's way (``_load_from_backend`` /
``_save`` over plain dicts) works unchanged on the new base class."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from stream_triggers.engine import InvalidConfiguration
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


class DefaultConfigured(DictStorageBackend):
    """Overrides the original's ``_load_default_configuration`` hook."""

    def _load_default_configuration(self) -> dict[str, Any]:
        return {"t_default": {"after": ["go"], "run": PassThruTask.name}}


def test_a_session_with_no_stored_configuration_starts_with_the_backend_s_default() -> None:
    storage = DefaultConfigured("legacy-default")
    assert list(storage.tasks) == ["t_default"]
    assert "legacy-default" not in _BACKEND  # loaded, not saved yet
    TriggerManager(storage).fire("go", {"k": 2})
    ThreadingTaskRunner.join_all()
    stored = _BACKEND["legacy-default"]
    assert stored["tasks"]["t_default"]["after"] == ["go"]  # saved with the first change
    assert stored["instances"]["t_default#0"]["status"] == "finished"
    assert DefaultConfigured("legacy-default")["t_default#0"].kwargs == {"go": {"k": 2}}


def test_a_stored_configuration_wins_over_the_default() -> None:
    TriggerManager(DictStorageBackend("legacy-own")).update_configuration(
        {"t_own": {"after": ["go"], "run": PassThruTask.name}}
    )
    assert list(DefaultConfigured("legacy-own").tasks) == ["t_own"]


def test_a_bad_default_configuration_is_refused_as_update_configuration_refuses_it() -> None:
    class BadDefault(DictStorageBackend):
        def _load_default_configuration(self) -> dict[str, Any]:
            return {"t_bad": {"run": PassThruTask.name}}

    with pytest.raises(InvalidConfiguration, match="after"):
        TriggerManager(BadDefault("legacy-bad")).fire("go")
