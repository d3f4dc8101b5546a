"""Fixtures for the in-process suite: every scenario runs on the 'memory' and 'rocksdb' storages.

Each test gets its own ``MemoryStore`` (memory) or its own RocksDB directory under
``tmp_path`` (rocksdb), so no two tests share session state.  Tests that use the
registries' default storages (``storage_backends.get(name, uid)``) get a unique uid and
``$STREAM_TRIGGERS_ROCKSDB_PATH`` pointed at ``tmp_path``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.storages.memory import MemoryStorage, MemoryStore
from stream_triggers.storages.rocksdb import DEFAULT_PATH_ENV, RocksDBStorage, close_all
from tests.support import BACKENDS, Session, SessionFactory, StorageFactory


@pytest.fixture(autouse=True)
def _join_task_threads() -> Iterator[None]:
    """No task thread outlives its test."""
    yield
    ThreadingTaskRunner.join_all()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rocksdb_path(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "rocksdb")
    yield path
    ThreadingTaskRunner.join_all()
    close_all()


@pytest.fixture
def make_storage(backend: str, rocksdb_path: str) -> StorageFactory:
    """Storage for a session uid on this test's backend (same uid -> same session)."""
    store = MemoryStore()

    def make(uid: str) -> BaseTriggerStorage:
        if backend == "memory":
            return MemoryStorage(uid, store)
        return RocksDBStorage(uid, rocksdb_path)

    return make


@pytest.fixture
def reopen(backend: str, make_storage: StorageFactory) -> StorageFactory:
    """A storage for ``uid`` as a restarted process would get it (RocksDB closed and reopened)."""

    def again(uid: str) -> BaseTriggerStorage:
        ThreadingTaskRunner.join_all()
        if backend == "rocksdb":
            close_all()
        return make_storage(uid)

    return again


@pytest.fixture
def make_session(make_storage: StorageFactory) -> SessionFactory:
    """``make_session(uid='session', manager_cls=TriggerManager)`` -> a Session."""

    def make(uid: str = "session", manager_cls: type[TriggerManager] = TriggerManager) -> Session:
        return Session(manager_cls(make_storage(uid)))

    return make


@pytest.fixture
def session(make_session: SessionFactory) -> Session:
    return make_session()


@pytest.fixture
def registry_env(backend: str, monkeypatch: pytest.MonkeyPatch, rocksdb_path: str) -> str:
    """For code that builds storages by registry key alone: a unique uid, RocksDB under tmp_path."""
    monkeypatch.setenv(DEFAULT_PATH_ENV, rocksdb_path)
    return f"test-{uuid.uuid4().hex}"
