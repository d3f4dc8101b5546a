"""The storage API: queries, the lock, low-level instance creation, caching, persistence."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage, LockAcquisitionFailed
from stream_triggers.storages.rocksdb import RocksDBStorage, close_all
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from stream_triggers.types import TaskConfig, TaskInstance
from tests.support import Session, StorageFactory

QUESTIONNAIRE_START = {
    "t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PassThruTask.name},
}


def test_unresolved_tasks_versus_unresolved_instances(session: Session) -> None:
    session.manager.update_configuration(QUESTIONNAIRE_START)
    storage = session.storage
    # The task has not run yet, so it is unresolved, but no instance exists yet.
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_importSubject"]
    assert all(isinstance(t, TaskConfig) for t in storage.get_unresolved_tasks())
    assert storage.get_unresolved_instances() == []

    session.fire("firstPageReceived")
    storage = session.storage
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_importSubject"]
    assert [i.name for i in storage.get_unresolved_instances()] == ["t_importSubject#0"]

    session.fire("questionnaireComplete")
    assert session.storage.get_unresolved_tasks() == []
    assert session.storage.get_unresolved_instances() == []
    # The manager offers the same two queries.
    assert session.manager.get_unresolved_tasks() == []
    assert session.manager.get_unresolved_instances() == []


def test_a_task_with_one_failed_instance_among_finished_ones_is_unresolved(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_mixed": {"after": [], "andEvery": "tick", "run": PassThruTask.name},
        }
    )
    session.fire("tick")
    session.manager.update_configuration({"t_mixed": {"after": [], "andEvery": "tick", "run": FailingTask.name}})
    session.fire("tick")
    session.assertInstanceFinished("t_mixed#0")
    session.assertInstanceFailed("t_mixed#1", RuntimeError)
    session.assertUnresolvedTasks(["t_mixed"])
    session.assertUnresolvedInstances(["t_mixed#1"])


def test_instances_of_task(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_each": {"after": [], "andEvery": "tick", "run": DevNullTask.name},
            "t_never": {"after": ["nope"], "run": DevNullTask.name},
        }
    )
    session.fire("tick")
    session.fire("tick")
    storage = session.storage
    by_name = storage.instances_of_task("t_each")
    assert list(by_name) == ["t_each#0", "t_each#1"]
    assert all(isinstance(i, TaskInstance) and i.config.name == "t_each" for i in by_name.values())
    assert list(storage.instances_of_task(storage.tasks["t_each"])) == ["t_each#0", "t_each#1"]
    assert storage.instances_of_task("t_never") == {}


def test_latest_kwargs_remember_the_last_firing_of_each_trigger(session: Session) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a"], "run": DevNullTask.name}})
    session.fire("a", {"n": 1})
    session.fire("a", {"n": 2})
    session.fire("nobodyListens", {"still": "recorded"})
    latest = session.storage.latest_kwargs
    assert latest["a"] == {"n": 2}
    assert latest["nobodyListens"] == {"still": "recorded"}
    assert latest["t_x"] == {}  # the cascade
    assert session.storage.metadata["latest_kwargs"]["a"] == {"n": 2}


def test_debug_repr_shows_tasks_instances_and_metadata(session: Session) -> None:
    session.manager.update_configuration(
        {"t_x": {"after": ["a"], "unless": ["u"], "run": PassThruTask.name, "withParams": {"p": {"q": 1}}}},
    )
    session.fire("a", {"n": 1})
    snapshot = session.storage.debug_repr()
    assert set(snapshot) == {"tasks", "instances", "metas"}
    task = snapshot["tasks"]["t_x"]
    assert task["after"] == ["a"]
    assert task["unless"] == ["u"]
    assert task["run"] == PassThruTask.name
    assert task["withParams"] == {"p": {"q": 1}}
    instance = snapshot["instances"]["t_x#0"]
    assert instance["status"] == "finished"
    assert instance["task"] == "t_x"
    assert instance["kwargs"] == {"a": {"n": 1}}
    assert instance["metadata"]["result"] == {"kwargs": {"a": {"n": 1}, "p": {"q": 1}}}
    assert snapshot["metas"]["latest_kwargs"]["a"] == {"n": 1}


def test_getitem_and_iter(session: Session) -> None:
    session.manager.update_configuration({"t_each": {"after": [], "andEvery": "tick", "run": DevNullTask.name}})
    for _ in range(3):
        session.fire("tick")
    storage = session.storage
    assert storage["t_each#1"].name == "t_each#1"
    assert isinstance(storage["t_each#1"], TaskInstance)
    assert sorted(i.name for i in storage) == ["t_each#0", "t_each#1", "t_each#2"]
    assert sorted(i.name for i in iter(storage)) == ["t_each#0", "t_each#1", "t_each#2"]
    assert len(storage.instances) == 3
    with pytest.raises(KeyError):
        storage["t_each#3"]


def test_storage_reads_are_private_copies(session: Session) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a"], "run": DevNullTask.name}})
    session.fire("a", {"n": 1})
    storage = session.storage
    storage["t_x#0"].kwargs["a"]["n"] = 999  # a reader scribbling on what it got
    storage["t_x#0"].status = "failed"
    assert session.storage["t_x#0"].kwargs == {"a": {"n": 1}}
    session.assertInstanceFinished("t_x#0")


def test_a_storage_alone_can_inspect_a_session(session: Session, make_storage: StorageFactory) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a"], "run": PassThruTask.name}})
    session.fire("a")
    inspector = make_storage("session")
    assert inspector["t_x#0"].status == "finished"
    assert list(inspector.tasks) == ["t_x"]


def test_sessions_are_isolated(make_session) -> None:
    one, two = make_session("one"), make_session("two")
    one.manager.update_configuration({"t_x": {"after": ["a"], "run": DevNullTask.name}})
    two.manager.update_configuration({"t_y": {"after": ["a"], "run": DevNullTask.name}})
    one.fire("a")
    one.assertInstanceFinished("t_x#0")
    two.assertInstanceMissing("t_y#0")
    assert "a" not in two.storage.latest_kwargs
    two.fire("a")
    two.assertInstanceFinished("t_y#0")
    one.assertInstanceMissing("t_y#0")


# -- the lock and low-level writes -----------------------------------------------------------


def test_acquire_lock_yields_the_writable_storage(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": DevNullTask.name}})
    storage = session.manager.storage
    assert not storage.has_lock
    with storage.acquire_lock() as writable:
        assert isinstance(writable, BaseTriggerStorage)
        assert writable is storage
        assert writable.has_lock
        instance = writable.create_instance(task_config=writable.tasks["t_alpha"])
        assert instance.name == "t_alpha#0"
        assert instance.status == TaskInstance.STATUS_UNSTARTED
        instance.status = TaskInstance.STATUS_FINISHED
        instance.metadata["note"] = "made by hand"
        writable.save()
    assert not storage.has_lock

    session.assertInstanceFinished("t_alpha#0")
    assert session.storage["t_alpha#0"].metadata["note"] == "made by hand"
    assert session.storage["t_alpha#0"].metadata[TaskInstance.META_TIMESTAMPS]["created"]


def test_create_instance_passes_extra_arguments_to_the_instance(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x", "y"], "run": PassThruTask.name}})
    with session.manager.storage.acquire_lock() as writable:
        writable.create_instance("t_alpha", kwargs={"x": {"given": True}}, metadata={"origin": "test"})
        writable.save()
    session.assertInstanceUnstarted("t_alpha#0")
    assert session.storage["t_alpha#0"].metadata["origin"] == "test"

    # The hand-made instance takes part in the session like any other.
    session.fire("y")
    session.assertInstanceFinished("t_alpha#0", {"kwargs": {"x": {"given": True}, "y": {}}})
    session.assertInstanceMissing("t_alpha#1")


def test_an_edited_instance_is_persisted_by_save(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": FailingTask.name}})
    session.fire("x")
    with session.manager.storage.acquire_lock() as writable:
        writable["t_alpha#0"].status = TaskInstance.STATUS_SKIPPED
        writable.save()
    session.assertInstanceSkipped("t_alpha#0")


def test_save_requires_the_lock(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": DevNullTask.name}})
    with pytest.raises(RuntimeError, match="acquire_lock"):
        session.manager.storage.save()


def test_the_lock_is_reentrant(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": DevNullTask.name}})
    storage = session.manager.storage
    with storage.acquire_lock() as outer, outer.acquire_lock() as inner:
        assert inner is outer
        inner.create_instance("t_alpha")
        inner.save()
    session.assertInstanceUnstarted("t_alpha#0")


def test_acquire_lock_without_blocking_fails_at_once_while_another_thread_holds_it(
    session: Session, make_storage: StorageFactory
) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with make_storage("session").acquire_lock():
            held.set()
            release.wait(30)  # (only reached, and so only slow, if block=False waited)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        storage = session.manager.storage
        with pytest.raises(LockAcquisitionFailed, match="session 'session'"), storage.acquire_lock(block=False):
            pass
        assert not storage.has_lock
    finally:
        release.set()
        holder.join()
    with storage.acquire_lock(block=False) as writable:  # free again: taken at once
        assert writable.has_lock


def test_the_lock_keeps_other_threads_out(session: Session, make_storage: StorageFactory) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": DevNullTask.name}})
    done, tried, blocked = threading.Event(), threading.Event(), []
    elsewhere = make_storage("session")
    session_lock = elsewhere._session_lock

    @contextlib.contextmanager
    def probed() -> Iterator[None]:
        """The other storage's lock, noting whether its first try found it taken."""
        lock = session_lock()
        blocked.append(not lock.acquire(blocking=False))
        tried.set()
        if blocked[-1]:
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    elsewhere._session_lock = probed  # type: ignore[method-assign]

    def fire_elsewhere() -> None:
        TriggerManager(elsewhere).fire("x")
        done.set()

    with session.manager.storage.acquire_lock():
        thread = threading.Thread(target=fire_elsewhere)
        thread.start()
        assert tried.wait(5)
        assert blocked[0]  # the other thread found the lock taken while this thread holds it
    assert done.wait(5)
    thread.join()
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_alpha#0")


def test_clone_instance_copies_kwargs_and_abandon_state(session: Session) -> None:
    session.manager.update_configuration(
        {"t_alpha": {"after": ["data"], "unless": ["bureau", "noSteps"], "run": DevNullTask.name}},
    )
    session.fire("noSteps")
    session.assertInstanceUnstarted("t_alpha#0")
    session.assertUnresolvedInstances(["t_alpha#0"])

    with session.manager.storage.acquire_lock() as writable:
        clone = writable.clone_instance(writable["t_alpha#0"])
        assert clone.name == "t_alpha#1"
        writable.save()

    session.assertInstanceUnstarted("t_alpha#1")
    copied = session.storage["t_alpha#1"]
    assert set(copied.abandon_state) == {"noSteps"}
    assert copied.metadata[TaskInstance.META_PARENT] == "t_alpha#0"
    assert copied.depth == 1
    session.assertUnresolvedInstances(["t_alpha#0", "t_alpha#1"])

    # The clone inherited its parent's abandon state, so both are abandoned together.
    session.fire("bureau")
    session.assertInstanceAbandoned("t_alpha#0")
    session.assertInstanceAbandoned("t_alpha#1")
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])


def test_clone_instance_by_name(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["a", "b"], "run": PassThruTask.name}})
    session.fire("a", {"n": 1})
    with session.manager.storage.acquire_lock() as writable:
        writable.clone_instance("t_alpha#0")
        writable.save()
    session.fire("b")
    session.assertInstanceFinished("t_alpha#0", {"kwargs": {"a": {"n": 1}, "b": {}}})
    session.assertInstanceFinished("t_alpha#1", {"kwargs": {"a": {"n": 1}, "b": {}}})


def test_invalidate_cache_rereads_the_backend(session: Session, make_storage: StorageFactory) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["a", "b"], "run": DevNullTask.name}})
    reader = make_storage("session")
    assert "t_alpha#0" not in reader.instances  # loads (and caches) the state

    TriggerManager(make_storage("session")).fire("a")
    ThreadingTaskRunner.join_all()
    assert "t_alpha#0" not in reader.instances  # still the cached state
    reader.invalidate_cache()
    assert reader["t_alpha#0"].status == "unstarted"


# -- concurrency and persistence -------------------------------------------------------------


def test_concurrent_firing_loses_nothing(session: Session, make_storage: StorageFactory) -> None:
    session.manager.update_configuration({"t_page": {"after": [], "andEvery": "page", "run": PassThruTask.name}})
    threads, per_thread = 6, 5

    def fire_pages(worker: int) -> None:
        manager = TriggerManager(make_storage("session"))
        for page in range(per_thread):
            manager.fire("page", {"worker": worker, "page": page})

    workers = [threading.Thread(target=fire_pages, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ThreadingTaskRunner.join_all()

    instances = session.storage.instances_of_task("t_page")
    assert sorted(instances) == sorted(f"t_page#{n}" for n in range(threads * per_thread))
    assert all(i.status == "finished" for i in instances.values())
    pages = sorted((i.kwargs["page"]["worker"], i.kwargs["page"]["page"]) for i in instances.values())
    assert pages == [(w, p) for w in range(threads) for p in range(per_thread)]


def test_a_session_survives_reopening_its_storage(session: Session, reopen: StorageFactory) -> None:
    session.manager.update_configuration(
        {
            "t_import": {"after": ["first", "complete"], "run": PassThruTask.name},
            "t_failing": {"after": ["first"], "run": FailingTask.name, "custom": {"x": 1}},
        }
    )
    session.fire("first", {"when": "2020-01-02"})
    session.manager.update_instance_metadata("t_import#0", {"seenAt": datetime(2020, 1, 2, 3, 4, 5, 6)})
    created = session.storage["t_import#0"].metadata[TaskInstance.META_TIMESTAMPS]["created"]

    storage = reopen("session")
    assert storage["t_import#0"].status == "unstarted"
    assert storage["t_import#0"].kwargs == {"first": {"when": "2020-01-02"}}
    assert storage["t_import#0"].metadata["seenAt"] == datetime(2020, 1, 2, 3, 4, 5, 6)
    assert storage["t_import#0"].metadata[TaskInstance.META_TIMESTAMPS]["created"] == created
    assert isinstance(created, datetime)
    assert storage["t_failing#0"].status == "failed"
    assert storage.tasks["t_failing"].extras == {"custom": {"x": 1}}
    assert storage.latest_kwargs["first"] == {"when": "2020-01-02"}

    # The session carries on where it stopped.
    session.manager = TriggerManager(storage)
    session.fire("complete")
    session.assertInstanceFinished("t_import#0", {"kwargs": {"first": {"when": "2020-01-02"}, "complete": {}}})
    session.manager.skip_failed_instance("t_failing#0")
    session.assertUnresolvedTasks([])


def test_rocksdb_close_all_and_reopen_the_directory(rocksdb_path: str) -> None:
    stamp = datetime(2017, 3, 13, 12, 22, 47, 123456)
    manager = TriggerManager(RocksDBStorage("persisted", rocksdb_path))
    manager.update_configuration({"t_x": {"after": ["a"], "run": PassThruTask.name}})
    manager.fire("a", {"n": 1})
    ThreadingTaskRunner.join_all()
    manager.update_instance_metadata("t_x#0", {"reviewedAt": stamp})
    close_all()

    reopened = RocksDBStorage("persisted", rocksdb_path)
    instance = reopened["t_x#0"]
    assert instance.status == "finished"
    assert instance.metadata["result"] == {"kwargs": {"a": {"n": 1}}}
    assert instance.metadata["reviewedAt"] == stamp
    timestamps = instance.metadata[TaskInstance.META_TIMESTAMPS]
    assert all(isinstance(value, datetime) and value.tzinfo is None for value in timestamps.values())
    assert timestamps["created"] <= timestamps["finished"] <= timestamps["lastModified"]


def test_a_backend_lock_may_be_a_single_use_context_manager() -> None:
    """``_session_lock()`` is asked for every operation (like ``db.advisory_lock(uid)``)."""
    from contextlib import contextmanager

    from stream_triggers.storages.memory import MemoryStorage, MemoryStore

    held: list[str] = []

    class AdvisoryLocked(MemoryStorage):
        @contextmanager
        def _session_lock(self):  # type: ignore[override]
            held.append(self.uid)
            yield

    manager = TriggerManager(AdvisoryLocked("s1", MemoryStore()))
    manager.update_configuration({"t": {"after": ["a", "b", "c"], "run": DevNullTask.name}})
    manager.fire("a")
    manager.fire("b")
    assert held == ["s1", "s1", "s1"]
    assert set(manager.storage.instances["t#0"].kwargs) == {"a", "b"}
