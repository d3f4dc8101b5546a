"""The original framework's names that ported code still calls (docs/porting.md)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import threading
import unittest
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import stream_triggers
import stream_triggers.runners
from stream_triggers.manager import TriggerManager
from stream_triggers.runners import DEFAULT_TASK_RUNNER, BaseTaskRunner, ThreadingTaskRunner, task_runners
from stream_triggers.storages.base import BaseTriggerStorage, LockAcquisitionFailed
from stream_triggers.storages.memory import DEFAULT_STORE, MemoryStorage, MemoryStore
from stream_triggers.task import TaskContext, TriggerTask, UnknownTask, task_registry
from stream_triggers.testing import DevNullTask, TriggerManagerTestCaseMixin, name_matches_classpath
from stream_triggers.types import TaskInstance
from tests.support import Session


class ReportsUid(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"storage_uid": context.storage_uid, "session_uid": context.session_uid}


def test_task_context_keeps_storage_uid(session: Session) -> None:
    session.manager.update_configuration({"t_uid": {"after": ["go"], "run": ReportsUid.name}})
    session.fire("go")
    session.assertInstanceFinished("t_uid#0", {"storage_uid": "session", "session_uid": "session"})


# -- runners ----------------------------------------------------------------------------


class RecordingRunner(BaseTaskRunner):
    """Finishes nothing; remembers what it was handed."""

    name = "recording"
    started: list[str] = []

    def run(self, manager: Any, task_instance: TaskInstance) -> None:
        self.started.append(task_instance.name)


def test_default_task_runner_is_threading_and_patching_it_changes_the_default(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_TASK_RUNNER is ThreadingTaskRunner
    assert session.manager.default_task_runner_name == "threading"

    task_runners.register("recording")(RecordingRunner)
    try:
        monkeypatch.setattr(stream_triggers.runners, "DEFAULT_TASK_RUNNER", RecordingRunner)
        RecordingRunner.started.clear()
        session.manager.update_configuration({"t_a": {"after": ["go"], "run": DevNullTask.name}})
        session.fire("go")
        assert RecordingRunner.started == ["t_a#0"]
        session.assertInstanceStatus("t_a#0", "scheduled")
    finally:
        task_runners.unregister("recording")


def test_runner_resolve_takes_registered_names_and_task_classes() -> None:
    runner = ThreadingTaskRunner()
    assert runner.resolve(DevNullTask.name) is DevNullTask
    assert runner.resolve(DevNullTask) is DevNullTask
    with pytest.raises(UnknownTask):
        runner.resolve("json.tool.Nothing")
    with pytest.raises(TypeError, match="TriggerTask subclasses"):
        runner.resolve(len)  # type: ignore[arg-type]


def test_allow_python_path_target_is_the_runners_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    module = f"{__package__}.opt_in_tasks"
    monkeypatch.setattr(ThreadingTaskRunner, "allow_python_path_target", True)
    assert ThreadingTaskRunner().resolve(f"{module}.Imported").__module__ == module


# -- testing ----------------------------------------------------------------------------


def test_name_matches_classpath_renames_and_registers() -> None:
    @name_matches_classpath
    class Custom(TriggerTask):
        name = "some.other.Name"

    expected = f"{__name__}.Custom"
    assert Custom.name == expected
    assert task_registry[expected] is Custom


class _SharedUidCase(TriggerManagerTestCaseMixin, unittest.TestCase):
    """Two tests on the default memory store with the same session uid."""

    seen: list[int] = []

    def setUp(self) -> None:
        super().setUp()
        self.manager = TriggerManager(MemoryStorage("shared-uid"))

    def test_one(self) -> None:
        self._count_and_configure()

    def test_two(self) -> None:
        self._count_and_configure()

    def _count_and_configure(self) -> None:
        self.seen.append(len(self.manager.storage.tasks))
        self.manager.update_configuration({f"t_{len(self.seen)}": {"after": ["x"], "run": DevNullTask.name}})


def test_the_testing_mixin_empties_the_memory_store_between_tests() -> None:
    DEFAULT_STORE.clear()
    _SharedUidCase.seen = []
    result = unittest.TextTestRunner(stream=open("/dev/null", "w"), verbosity=0).run(  # noqa: SIM115
        unittest.defaultTestLoader.loadTestsFromTestCase(_SharedUidCase)
    )
    assert result.wasSuccessful()
    assert _SharedUidCase.seen == [0, 0]  # the second test did not see the first one's task


_SharedUidCase.__test__ = False  # run only through the test above


# -- storages ---------------------------------------------------------------------------


def test_memory_storage_timeout_is_the_sessions_time_to_live() -> None:
    store = MemoryStore()
    configuration = {"t_a": {"after": ["x"], "run": DevNullTask.name}}
    TriggerManager(MemoryStorage("kept", store, timeout=3600)).update_configuration(configuration)
    TriggerManager(MemoryStorage("gone", store, timeout=0)).update_configuration(configuration)
    assert list(MemoryStorage("kept", store).tasks) == ["t_a"]
    assert list(MemoryStorage("gone", store).tasks) == []  # expired: reads as a new session
    # ... and a new session can be written over the expired one.
    TriggerManager(MemoryStorage("gone", store)).update_configuration(configuration)
    assert list(MemoryStorage("gone", store).tasks) == ["t_a"]


class _NamedLockStorage(BaseTriggerStorage):
    """An original-style backend whose sessions all share one lock name."""

    def get_lock_name(self) -> str:
        return "one-lock-for-all"

    def _load_from_backend(self) -> tuple[dict, dict, dict]:
        return {}, {}, {}

    def _save(self) -> None:
        pass


def test_get_lock_name_names_the_lock() -> None:
    assert MemoryStorage("abc").get_lock_name() == "triggers:abc:lock"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _NamedLockStorage("first").acquire_lock():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(LockAcquisitionFailed), _NamedLockStorage("second").acquire_lock(block=False):
            pass
    finally:
        release.set()
        holder.join()


# -- docs/porting.md --------------------------------------------------------------------

PORTING = Path(__file__).resolve().parents[2] / "docs" / "porting.md"

ORIGINAL_PUBLIC_NAMES = [  # every __all__ entry of the original package, and its package-level import
    "TriggerManager", "trigger_managers", "BaseTriggerStorage", "TaskInstanceCollection", "storage_backends",
    "CacheStorageBackend", "BaseTaskRunner", "CeleryTaskRunner", "DEFAULT_TASK_RUNNER", "ThreadingTaskRunner",
    "autodiscover_celery_tasks", "resolve_celery_task", "task_runners", "MaxRetriesExceeded", "Retry",
    "StatusChange", "TaskContext", "TriggerTask", "task_body", "DevNullTask", "FailingTask", "PassThruTask",
    "SelfRetryingTask", "SelfSkippingTask", "TriggerManagerTestCaseMixin", "name_matches_classpath", "TaskConfig",
    "TaskInstance", "with_context", "dl", "merge_dict", "merge_dict_recursive", "acquire_lock", "Lockable",
    "LockAcquisitionFailed", "NotSupported", "resolve_cache", "AttrPatcher", "BasePatcher", "LogLevelHandler",
    "MemoryHandler", "LocalLogger", "LoggerAdapter", "storage_uid", "get_lock_name", "resolve",
]  # fmt: skip


def _table_rows() -> list[list[str]]:
    text = PORTING.read_text()
    table = text[text.index("### Every public name of the original") :]
    table = table[: table.index("\n\n", table.index("| original |"))]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_porting_table_names_every_public_name_of_the_original() -> None:
    originals = " ".join(row[0] for row in _table_rows())
    missing = [name for name in ORIGINAL_PUBLIC_NAMES if not re.search(rf"\b{re.escape(name)}\b", originals)]
    assert missing == []


def test_every_new_home_in_the_porting_table_exists() -> None:
    for row in _table_rows():
        for path in re.findall(r"`(stream_triggers(?:\.\w+)+)", row[1]):
            module, _, attribute = path.rpartition(".")
            try:
                target = importlib.import_module(path)
            except ImportError:
                target = getattr(importlib.import_module(module), attribute, None)
            assert target is not None, f"porting.md names {path}, which does not exist"


# -- the package's top level ---------------------------------------------------------------


def test_the_package_offers_what_the_original_package_did() -> None:
    # ``from triggers import TriggerManager`` (the cookbook) ports by the package name alone.
    from stream_triggers import BaseTriggerStorage as Storage
    from stream_triggers import TriggerManager as Manager
    from stream_triggers import storage_backends, trigger_managers
    from stream_triggers.manager import trigger_managers as managers
    from stream_triggers.storages import storage_backends as storages

    assert (Manager, Storage) == (TriggerManager, BaseTriggerStorage)
    assert (trigger_managers, storage_backends) == (managers, storages)
    manager = trigger_managers.get("default", storage_backends.get("memory", "top-level"))
    assert isinstance(manager, Manager)
    with pytest.raises(AttributeError, match="no attribute 'CacheStorageBackend'"):
        stream_triggers.CacheStorageBackend  # noqa: B018


def test_importing_the_package_imports_none_of_them() -> None:
    code = "import sys, stream_triggers; print(sorted(m for m in sys.modules if m.startswith('stream_triggers.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
