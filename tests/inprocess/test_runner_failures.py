"""Whatever breaks after an instance was handed to a runner, it ends ``failed``, not stuck.

The runner may refuse to start it, the task thread may not start, a report may be
refused or fail to save: each leaves the instance ``failed`` with the exception in its
metadata, the session lock free, and the rest of the session going on.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stream_triggers.engine import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from stream_triggers.manager import TriggerManager
from stream_triggers.runners.base import BaseTaskRunner, RunnerHost
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.testing import DevNullTask
from stream_triggers.types import Status, TaskInstance
from tests.support import Session, StorageFactory


class ChattyRefusal(RuntimeError):
    """An error whose message alone is heavier than a report may carry."""


class RefusingRunner(BaseTaskRunner):
    name = "refusing"

    def run(self, manager: RunnerHost, task_instance: TaskInstance) -> None:
        raise ChattyRefusal("cannot start: " + "z" * (MAX_PAYLOAD_BYTES + 1))


def _lock_is_free(storage: BaseTriggerStorage) -> bool:
    result: list[bool] = []

    def probe() -> None:  # (another thread: the session lock is re-entrant for its holder)
        try:
            with storage.fresh().acquire_lock(block=False):
                result.append(True)
        except Exception:
            result.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result == [True]


def test_a_runner_refusing_with_a_huge_message_fails_the_instance(make_storage: StorageFactory) -> None:
    session = Session(TriggerManager(make_storage("refusing"), runners={"refusing": RefusingRunner()}))
    session.manager.update_configuration(
        {
            "t_refused": {"after": ["start"], "run": DevNullTask.name, "using": "refusing"},
            "t_sibling": {"after": ["start"], "run": DevNullTask.name},
        }
    )
    session.fire("start")

    session.assertInstanceFailed("t_refused#0", ChattyRefusal)
    info = session.storage["t_refused#0"].metadata[TaskInstance.META_EXCEPTION_INFO]
    assert info.startswith("Traceback") and "characters clipped" in info
    session.assertInstanceFinished("t_sibling#0")
    assert _lock_is_free(session.manager.storage)


def test_a_task_thread_that_cannot_start_fails_the_instance(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    session.manager.update_configuration({"t_no_thread": {"after": ["start"], "run": DevNullTask.name}})
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("task "):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    session.fire("start")  # (join_all: must not wait for, nor trip on, the thread that never started)

    session.assertInstanceFailed("t_no_thread#0", RuntimeError)
    assert _lock_is_free(session.manager.storage)


def test_kwargs_as_deep_as_allowed_run_though_the_running_report_nests_them_deeper(session: Session) -> None:
    # Trigger kwargs as deep as allowed; the running report nests them two levels more
    # (actualKwargs -> trigger -> kwargs), levels the depth limit does not count.
    kwargs: dict[str, Any] = {}
    for _ in range(MAX_PAYLOAD_DEPTH - 1):
        kwargs = {"k": kwargs}
    session.manager.update_configuration({"t_deep": {"after": ["start"], "run": DevNullTask.name}})
    session.fire("start", kwargs)

    session.assertInstanceFinished("t_deep#0")
    assert session.storage["t_deep#0"].metadata[TaskInstance.META_ACTUAL_KWARGS] == {"start": kwargs}
    assert _lock_is_free(session.manager.storage)


def test_a_report_that_cannot_be_saved_fails_the_instance(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    session.manager.update_configuration(
        {
            "t_unsaved": {"after": ["start"], "run": DevNullTask.name},
            "t_next": {"after": ["start"], "run": DevNullTask.name},
        }
    )
    storage_cls = type(session.manager.storage)
    real_save = storage_cls.save
    failures: list[str] = []

    def save(storage: BaseTriggerStorage) -> None:
        instance = storage.state.instances.get("t_unsaved#0")
        if not failures and instance is not None and instance.status == Status.RUNNING:
            failures.append(instance.name)
            raise OSError("disk full")
        real_save(storage)

    monkeypatch.setattr(storage_cls, "save", save)
    session.fire("start")

    assert failures == ["t_unsaved#0"]
    session.assertInstanceFailed("t_unsaved#0", OSError)
    session.assertInstanceFinished("t_next#0")
    assert _lock_is_free(session.manager.storage)
