"""Registries of managers, storages and runners: lookup by key, runtime registration, custom managers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from stream_triggers.manager import FinalizingTriggerManager, TriggerManager, trigger_managers
from stream_triggers.registry import REGISTRY_KEY_ATTR, RegistryKeyError
from stream_triggers.runners import BaseTaskRunner, ThreadingTaskRunner, task_runners
from stream_triggers.storages import BaseTriggerStorage, storage_backends
from stream_triggers.storages.memory import MemoryStorage
from stream_triggers.storages.rocksdb import RocksDBStorage
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from stream_triggers.types import TaskInstance
from tests.support import Session, StorageFactory


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def test_builtin_managers_by_key(make_storage: StorageFactory) -> None:
    storage = make_storage("keys")
    default = trigger_managers.get("default", storage)
    finalizing = trigger_managers.get("finalizing", storage=storage)
    assert type(default) is TriggerManager
    assert type(finalizing) is FinalizingTriggerManager
    assert default.storage is storage
    assert trigger_managers.get_class("default") is TriggerManager
    assert getattr(TriggerManager, REGISTRY_KEY_ATTR) == "default"


def test_builtin_storages_by_key(registry_env: str, rocksdb_path: str) -> None:
    memory = storage_backends.get("memory", registry_env)
    assert isinstance(memory, MemoryStorage)
    assert memory.uid == registry_env
    rocks = storage_backends.get("rocksdb", registry_env)  # path from $STREAM_TRIGGERS_ROCKSDB_PATH
    assert isinstance(rocks, RocksDBStorage)
    assert rocks.path == rocksdb_path
    explicit = storage_backends.get("rocksdb", uid=registry_env, path=rocksdb_path)
    assert isinstance(explicit, BaseTriggerStorage)


def test_builtin_runner_by_key() -> None:
    assert isinstance(task_runners.get("threading"), ThreadingTaskRunner)
    assert "threading" in task_runners


def test_an_unknown_key_raises_a_key_error_naming_the_known_ones(make_storage: StorageFactory) -> None:
    with pytest.raises(KeyError) as caught:
        trigger_managers.get("no-such-manager", make_storage("x"))
    assert isinstance(caught.value, RegistryKeyError)
    assert "no-such-manager" in str(caught.value)
    assert "default" in str(caught.value)
    with pytest.raises(KeyError, match="memory"):
        storage_backends.get("no-such-storage", "uid")
    with pytest.raises(KeyError, match="threading"):
        task_runners.get("no-such-runner")


# -- runtime registration ------------------------------------------------------------------


def test_register_and_unregister_a_manager_at_runtime(make_storage: StorageFactory) -> None:
    key = unique("custom")

    class CustomManager(TriggerManager):
        pass

    assert trigger_managers.register(key)(CustomManager) is CustomManager
    try:
        assert getattr(CustomManager, REGISTRY_KEY_ATTR) == key
        assert key in trigger_managers
        assert type(trigger_managers.get(key, make_storage("rt"))) is CustomManager
    finally:
        assert trigger_managers.unregister(key) is CustomManager
    assert key not in trigger_managers
    with pytest.raises(KeyError):
        trigger_managers.get(key, make_storage("rt"))
    # The entry-point managers are untouched.
    assert trigger_managers.get_class("default") is TriggerManager


def test_register_and_unregister_a_storage_at_runtime(registry_env: str) -> None:
    key = unique("tagged")

    class TaggedMemory(MemoryStorage):
        """Memory storage that remembers it was chosen by key."""

    storage_backends.register(key)(TaggedMemory)
    try:
        storage = storage_backends.get(key, registry_env)
        assert type(storage) is TaggedMemory
        manager = TriggerManager(storage)
        manager.update_configuration({"t_x": {"after": ["a"], "run": PassThruTask.name}})
        manager.fire("a")
        ThreadingTaskRunner.join_all()
        assert TaggedMemory(registry_env)["t_x#0"].status == "finished"
    finally:
        storage_backends.unregister(key)
    with pytest.raises(KeyError):
        storage_backends.get(key, registry_env)


class CountingRunner(BaseTaskRunner):
    """Counts the instances it starts and runs them in threads."""

    count = 0
    lock = threading.Lock()

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        with self.lock:
            type(self).count += 1
        ThreadingTaskRunner().run(manager, task_instance)


@pytest.fixture
def counting_runner() -> Iterator[str]:
    key = unique("counting")
    CountingRunner.count = 0
    task_runners.register(key)(CountingRunner)
    yield key
    ThreadingTaskRunner.join_all()
    task_runners.unregister(key)


def test_register_and_unregister_a_runner_at_runtime(session: Session, counting_runner: str) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a"], "run": DevNullTask.name, "using": counting_runner}})
    session.fire("a")
    session.assertInstanceFinished("t_x#0", {})
    assert CountingRunner.count == 1

    task_runners.unregister(counting_runner)
    task_runners.register(counting_runner)(CountingRunner)  # the fixture unregisters it again
    assert isinstance(task_runners.get(counting_runner), CountingRunner)


def test_default_task_runner_name_overridden_in_a_subclass(make_storage: StorageFactory, counting_runner: str) -> None:
    class CountingManager(TriggerManager):
        default_task_runner_name = counting_runner

    session = Session(CountingManager(make_storage("runner")))
    session.manager.update_configuration(
        {
            "t_first": {"after": ["a"], "run": PassThruTask.name},
            "t_second": {"after": ["t_first"], "run": PassThruTask.name},  # started from a task thread
            "t_pinned": {"after": ["a"], "run": PassThruTask.name, "using": "threading"},
        }
    )
    session.fire("a")
    session.assertInstanceFinished("t_second#0")
    session.assertInstanceFinished("t_pinned#0")
    # ``using`` wins over the manager's default; the cascade used the subclass's default too.
    assert CountingRunner.count == 2


# -- custom managers ------------------------------------------------------------------------


def test_a_custom_manager_from_the_registry_sees_cascades(make_storage: StorageFactory) -> None:
    key = unique("counting-manager")
    fired: list[str] = []
    lock = threading.Lock()

    class CountingManager(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            with lock:
                fired.append(trigger_name)

    trigger_managers.register(key)(CountingManager)
    try:
        session = Session(trigger_managers.get(key, make_storage("custom")))
        session.manager.update_configuration(
            {
                "t_a": {"after": ["start"], "run": PassThruTask.name},
                "t_b": {"after": ["t_a"], "run": PassThruTask.name},
                "t_c": {"after": ["t_b"], "run": FailingTask.name},
            }
        )
        session.fire("start")
        session.assertInstanceFailed("t_c#0", RuntimeError)
        # Tasks reported through CountingManager, so it saw both cascades.
        assert fired == ["start", "t_a", "t_b"]

        session.manager.skip_failed_instance("t_c#0", cascade=True)
        ThreadingTaskRunner.join_all()
        assert fired[-1] == "t_c"
    finally:
        trigger_managers.unregister(key)


def test_a_manager_built_directly_works(registry_env: str) -> None:
    manager = TriggerManager(storage_backends.get("memory", registry_env))
    manager.update_configuration(
        {
            "t_a": {"after": ["x", "y"], "run": PassThruTask.name},
            "t_b": {"after": ["t_a"], "run": PassThruTask.name},
        }
    )
    manager.fire("y")
    manager.fire("x", {"v": 1})
    ThreadingTaskRunner.join_all()
    storage = storage_backends.get("memory", registry_env)
    assert storage["t_b#0"].metadata["result"] == {"kwargs": {"t_a": {"kwargs": {"x": {"v": 1}, "y": {}}}}}
    assert repr(manager).startswith("<TriggerManager")
