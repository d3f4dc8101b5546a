"""Manager operations (replay, skip, status, metadata, logs) and the _post_* hooks."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from logging import ERROR, WARNING
from typing import Any

import pytest

from stream_triggers.manager import TriggerManager, trigger_managers
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from stream_triggers.types import TaskInstance
from tests.support import Session, StorageFactory

FAILING_THEN_DOWNSTREAM = {
    "t_alpha": {"after": ["data"], "run": FailingTask.name},
    "t_bravo": {"after": ["t_alpha"], "run": PassThruTask.name},
}


def fail_first(session: Session, kwargs: dict | None = None) -> None:
    session.manager.update_configuration(FAILING_THEN_DOWNSTREAM)
    session.fire("data", kwargs)
    session.assertInstanceFailed("t_alpha#0", RuntimeError)
    session.assertInstanceMissing("t_bravo#0")
    session.assertUnresolvedTasks(["t_alpha", "t_bravo"])
    session.assertUnresolvedInstances(["t_alpha#0"])


def now_works(session: Session) -> None:
    """Simulate fixing the cause of the failure before replaying."""
    session.manager.update_configuration({"t_alpha": {"after": ["data"], "run": PassThruTask.name}})


# -- update_configuration --------------------------------------------------------------------


def test_a_task_added_mid_session_only_reacts_to_later_triggers(session: Session) -> None:
    session.manager.update_configuration({"t_first": {"after": ["a"], "run": DevNullTask.name}})
    session.fire("a", {"n": 1})
    session.manager.update_configuration(
        {
            "t_late": {"after": ["a"], "run": PassThruTask.name},
            "t_pair": {"after": ["a", "b"], "run": PassThruTask.name},
        }
    )
    # Earlier firings are not replayed into the new tasks...
    session.assertInstanceMissing("t_late#0")
    session.assertInstanceMissing("t_pair#0")
    session.assertUnresolvedTasks(["t_late", "t_pair"])

    # ... but an instance created later starts from the latest kwargs of triggers that already fired.
    session.fire("b")
    session.assertInstanceFinished("t_pair#0", {"kwargs": {"a": {"n": 1}, "b": {}}})
    session.fire("a", {"n": 2})
    session.assertInstanceFinished("t_late#0", {"kwargs": {"a": {"n": 2}}})


def test_a_reconfigured_task_applies_to_its_waiting_instance(session: Session) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a", "b"], "run": FailingTask.name}})
    session.fire("a")
    session.manager.update_configuration({"t_x": {"after": ["a", "b"], "run": PassThruTask.name}})
    session.fire("b")
    session.assertInstanceFinished("t_x#0", {"kwargs": {"a": {}, "b": {}}})


# -- replay_failed_instance ------------------------------------------------------------------


def test_replay_clones_the_failed_instance_and_cascades(session: Session) -> None:
    fail_first(session, {"random": "filbert"})
    now_works(session)
    session.manager.replay_failed_instance("t_alpha#0")
    ThreadingTaskRunner.join_all()

    session.assertInstanceReplayed("t_alpha#0")
    session.assertInstanceFinished("t_alpha#1", {"kwargs": {"data": {"random": "filbert"}}})
    session.assertInstanceFinished("t_bravo#0", {"kwargs": {"t_alpha": {"kwargs": {"data": {"random": "filbert"}}}}})
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])

    failed, replay = session.storage["t_alpha#0"], session.storage["t_alpha#1"]
    # The failed instance keeps its exception details for investigation.
    assert failed.metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.RuntimeError"
    assert "Traceback" in failed.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert replay.metadata[TaskInstance.META_PARENT] == "t_alpha#0"
    assert replay.depth == 1


def test_replay_with_replacement_kwargs_replaces_them_completely(session: Session) -> None:
    fail_first(session, {"random": "filbert"})
    now_works(session)
    session.manager.replay_failed_instance(
        failed_instance="t_alpha#0",
        replacement_kwargs={"data": {"name": "Princess Luna"}, "extra": {"unused": True}},
    )
    ThreadingTaskRunner.join_all()

    session.assertInstanceReplayed("t_alpha#0")
    expected = {"kwargs": {"data": {"name": "Princess Luna"}, "extra": {"unused": True}}}
    session.assertInstanceFinished("t_alpha#1", expected)
    session.assertInstanceFinished("t_bravo#0", {"kwargs": {"t_alpha": expected}})
    # The failed instance's own kwargs are left as they were.
    assert session.storage["t_alpha#0"].kwargs == {"data": {"random": "filbert"}}


def test_replay_with_empty_replacement_kwargs_runs_without_kwargs(session: Session) -> None:
    fail_first(session, {"random": "filbert"})
    now_works(session)
    session.manager.replay_failed_instance(session.storage["t_alpha#0"], replacement_kwargs={})
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_alpha#1", {"kwargs": {}})


def test_replay_accepts_the_instance_object(session: Session) -> None:
    fail_first(session)
    now_works(session)
    session.manager.replay_failed_instance(session.storage["t_alpha#0"])
    ThreadingTaskRunner.join_all()
    session.assertInstanceReplayed("t_alpha#0")
    session.assertInstanceFinished("t_alpha#1")


def test_a_replay_that_fails_again_can_be_replayed_again(session: Session) -> None:
    fail_first(session)
    session.manager.replay_failed_instance("t_alpha#0")
    ThreadingTaskRunner.join_all()
    session.assertInstanceFailed("t_alpha#1", RuntimeError)
    session.manager.replay_failed_instance("t_alpha#1")
    ThreadingTaskRunner.join_all()
    session.assertInstanceReplayed("t_alpha#1")
    session.assertInstanceFailed("t_alpha#2", RuntimeError)
    assert session.storage["t_alpha#2"].depth == 2
    session.assertUnresolvedInstances(["t_alpha#2"])


def test_replaying_a_finished_instance_raises_value_error(session: Session) -> None:
    session.manager.update_configuration({"t_ok": {"after": ["go"], "run": PassThruTask.name}})
    session.fire("go")
    before = session.storage.debug_repr()
    # The original's wording: the instance as ``str()`` gives it, "name (status)".
    message = 'Instance "t_ok#0 (finished)" in finished state cannot be replayed!'
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        session.manager.replay_failed_instance("t_ok#0")
    session.assertInstanceFinished("t_ok#0")
    session.assertInstanceMissing("t_ok#1")
    assert session.storage.debug_repr() == before


def test_replaying_an_unstarted_or_replayed_instance_raises_value_error(session: Session) -> None:
    fail_first(session)
    session.manager.replay_failed_instance("t_alpha#0")
    ThreadingTaskRunner.join_all()
    with pytest.raises(ValueError):
        session.manager.replay_failed_instance("t_alpha#0")  # already replayed

    session.manager.update_configuration({"t_wait": {"after": ["a", "b"], "run": DevNullTask.name}})
    session.fire("a")
    with pytest.raises(ValueError):
        session.manager.replay_failed_instance("t_wait#0")


def test_replaying_an_unknown_instance_raises_key_error(session: Session) -> None:
    session.manager.update_configuration(FAILING_THEN_DOWNSTREAM)
    with pytest.raises(KeyError, match="t_alpha#7"):
        session.manager.replay_failed_instance("t_alpha#7")


# -- skip_failed_instance ------------------------------------------------------------------


def test_skip_resolves_the_instance_without_cascading(session: Session) -> None:
    fail_first(session)
    session.manager.skip_failed_instance("t_alpha#0")
    ThreadingTaskRunner.join_all()

    session.assertInstanceSkipped("t_alpha#0")
    session.assertInstanceMissing("t_bravo#0")
    session.assertUnresolvedTasks(["t_bravo"])
    session.assertUnresolvedInstances([])
    metadata = session.storage["t_alpha#0"].metadata
    assert metadata["cascade"] is False
    # The exception that made it fail is still there.
    assert metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.RuntimeError"


def test_skip_with_cascade_passes_a_fake_result_along(session: Session) -> None:
    fail_first(session)
    session.manager.skip_failed_instance(
        failed_instance="t_alpha#0",
        cascade=True,
        result={"rating": "4.5", "popularity": "0.7"},
    )
    ThreadingTaskRunner.join_all()

    session.assertInstanceSkipped("t_alpha#0")
    session.assertInstanceFinished("t_bravo#0", {"kwargs": {"t_alpha": {"rating": "4.5", "popularity": "0.7"}}})
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])
    metadata = session.storage["t_alpha#0"].metadata
    assert metadata["cascade"] is True
    assert metadata["result"] == {"rating": "4.5", "popularity": "0.7"}


def test_skip_with_cascade_and_no_result_cascades_empty_kwargs(session: Session) -> None:
    fail_first(session)
    session.manager.skip_failed_instance(session.storage["t_alpha#0"], cascade=True)
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_bravo#0", {"kwargs": {"t_alpha": {}}})


def test_skipping_a_non_failed_instance_raises_value_error(session: Session) -> None:
    session.manager.update_configuration({"t_ok": {"after": ["go"], "run": PassThruTask.name}})
    session.fire("go")
    message = 'Instance "t_ok#0 (finished)" in finished state cannot be skipped!'
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        session.manager.skip_failed_instance("t_ok#0")
    session.assertInstanceFinished("t_ok#0")


# -- update_instance_status ----------------------------------------------------------------


def test_update_instance_status_by_hand_with_cascade(session: Session) -> None:
    fail_first(session)
    updated = session.manager.update_instance_status(
        task_instance="t_alpha#0",
        status=TaskInstance.STATUS_FINISHED,
        metadata={"fixedBy": "ops"},
        cascade=True,
        cascade_kwargs={"subjectId": 42},
    )
    ThreadingTaskRunner.join_all()

    assert isinstance(updated, TaskInstance)
    assert updated.name == "t_alpha#0"
    assert updated.status == TaskInstance.STATUS_FINISHED
    session.assertInstanceFinished("t_alpha#0")
    metadata = session.storage["t_alpha#0"].metadata
    assert metadata["fixedBy"] == "ops"
    assert "finished" in metadata[TaskInstance.META_TIMESTAMPS]
    session.assertInstanceFinished("t_bravo#0", {"kwargs": {"t_alpha": {"subjectId": 42}}})
    session.assertUnresolvedTasks([])


def test_update_instance_status_without_cascade_fires_nothing(session: Session) -> None:
    fail_first(session)
    session.manager.update_instance_status(session.storage["t_alpha#0"], "finished")
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_alpha#0")
    session.assertInstanceMissing("t_bravo#0")


def test_update_instance_status_rejects_an_unknown_status(session: Session) -> None:
    fail_first(session)
    with pytest.raises(ValueError, match="done"):
        session.manager.update_instance_status("t_alpha#0", "done")
    session.assertInstanceFailed("t_alpha#0", RuntimeError)


# -- update_instance_metadata --------------------------------------------------------------

STAMP = datetime(2017, 3, 13, 12, 22, 47)


def hand_made_finished_instance(session: Session) -> None:
    """Create ``t_alpha#0`` under the lock, the low-level way, with fixed timestamps."""
    session.manager.update_configuration({"t_alpha": {"after": ["optIn"], "run": DevNullTask.name}})
    with session.manager.storage.acquire_lock() as writable:
        instance = writable.create_instance(task_config=writable.tasks["t_alpha"])
        instance.status = TaskInstance.STATUS_FINISHED
        instance.metadata[TaskInstance.META_TIMESTAMPS] = {
            TaskInstance.TIMESTAMP_CREATED: STAMP,
            TaskInstance.TIMESTAMP_LAST_MODIFIED: STAMP,
            TaskInstance.STATUS_FINISHED: STAMP,
        }
        writable.save()


def test_update_instance_metadata_merges_and_bumps_last_modified(session: Session, reopen: StorageFactory) -> None:
    hand_made_finished_instance(session)
    session.manager.update_instance_metadata(task_instance="t_alpha#0", metadata={"foo": "bar", "baz": "luhrmann"})

    def check(instance: TaskInstance) -> None:
        assert instance.metadata["foo"] == "bar"
        assert instance.metadata["baz"] == "luhrmann"
        assert instance.status == TaskInstance.STATUS_FINISHED
        timestamps = instance.metadata[TaskInstance.META_TIMESTAMPS]
        assert instance.last_modified != STAMP
        assert instance.last_modified > STAMP
        assert timestamps[TaskInstance.TIMESTAMP_CREATED] == STAMP
        assert timestamps[TaskInstance.STATUS_FINISHED] == STAMP

    check(session.storage.instances["t_alpha#0"])
    check(reopen("session").instances["t_alpha#0"])  # datetimes survive a restart


def test_metadata_datetimes_round_trip(session: Session, reopen: StorageFactory) -> None:
    hand_made_finished_instance(session)
    values = {
        "naive": datetime(2020, 1, 2, 3, 4, 5, 678901),
        "utc": datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        "plus5": datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "nested": {"when": [datetime(1999, 12, 31, 23, 59, 59)]},
    }
    session.manager.update_instance_metadata("t_alpha#0", values)
    metadata = reopen("session")["t_alpha#0"].metadata
    for key, value in values.items():
        assert metadata[key] == value
    assert metadata["naive"].tzinfo is None
    assert metadata["plus5"].utcoffset() == timedelta(hours=5, minutes=30)


def test_update_instance_metadata_of_an_unknown_instance_raises_key_error(session: Session) -> None:
    session.manager.update_configuration({"t_alpha": {"after": ["x"], "run": DevNullTask.name}})
    with pytest.raises(KeyError):
        session.manager.update_instance_metadata("t_alpha#0", {"foo": "bar"})


# -- mark_instance_logs_resolved -----------------------------------------------------------


def test_mark_instance_logs_resolved(session: Session) -> None:
    hand_made_finished_instance(session)
    session.manager.update_instance_metadata("t_alpha#0", {TaskInstance.META_LOG_LEVEL: ERROR})
    assert [i.name for i in session.storage.get_instances_with_unresolved_logs()] == ["t_alpha#0"]
    assert not session.storage["t_alpha#0"].logs_resolved

    session.manager.mark_instance_logs_resolved("t_alpha#0")
    instance = session.storage["t_alpha#0"]
    assert instance.logs_resolved
    assert instance.metadata[TaskInstance.META_LOGS_RESOLVED] is True
    assert instance.log_level == ERROR  # the record of what was logged stays
    assert session.storage.get_instances_with_unresolved_logs() == []


def test_warnings_do_not_need_resolving(session: Session) -> None:
    hand_made_finished_instance(session)
    session.manager.update_instance_metadata("t_alpha#0", {TaskInstance.META_LOG_LEVEL: WARNING})
    assert session.storage.get_instances_with_unresolved_logs() == []


# -- hooks ---------------------------------------------------------------------------------


class Recorder:
    """Hook calls in the order they happened, from every thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def add(self, *call: Any) -> None:
        with self.lock:
            self.calls.append(call)

    def take(self) -> list[tuple[Any, ...]]:
        ThreadingTaskRunner.join_all()
        with self.lock:
            calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def hooked(make_storage: StorageFactory) -> Iterator[tuple[Session, Recorder]]:
    """A session whose manager class records its hooks, obtained from the registry by key."""
    recorder = Recorder()

    class PirateTriggerManager(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            recorder.add("fire", trigger_name, [i.name for i in tasks_scheduled])

        def _post_replay(self, task_instance: TaskInstance) -> None:
            recorder.add("replay", task_instance.name, str(task_instance.status))

        def _post_skip(self, task_instance: TaskInstance, cascade: bool) -> None:
            assert task_instance.status == "skipped"
            recorder.add("skip", task_instance.name, cascade)

    key = f"pirate-{uuid.uuid4().hex}"
    trigger_managers.register(key)(PirateTriggerManager)
    try:
        yield Session(trigger_managers.get(key, make_storage("hooks"))), recorder
    finally:
        ThreadingTaskRunner.join_all()
        trigger_managers.unregister(key)


def test_post_fire_for_a_trigger_that_schedules_nothing(hooked: tuple[Session, Recorder]) -> None:
    session, recorder = hooked
    session.manager.update_configuration({"t_alpha": {"after": ["target"], "run": DevNullTask.name}})
    session.manager.fire("foobar")
    assert recorder.take() == [("fire", "foobar", [])]


def test_post_fire_follows_a_cascade_chain_in_order(hooked: tuple[Session, Recorder]) -> None:
    session, recorder = hooked
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["target"], "run": DevNullTask.name},
            "t_bravo": {"after": ["target", "t_alpha"], "run": DevNullTask.name},
        }
    )
    session.manager.fire("target")
    assert recorder.take() == [
        ("fire", "target", ["t_alpha#0"]),
        ("fire", "t_alpha", ["t_bravo#0"]),
        ("fire", "t_bravo", []),
    ]


def test_post_fire_receives_the_scheduled_instances(make_storage: StorageFactory) -> None:
    seen: list[TaskInstance] = []

    class Keeper(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            if trigger_name == "go":
                seen.extend(tasks_scheduled)

    manager = Keeper(make_storage("keeper"))
    manager.update_configuration(
        {
            "t_a": {"after": ["go"], "run": DevNullTask.name},
            "t_b": {"after": ["go"], "run": DevNullTask.name},
            "t_c": {"after": ["go", "later"], "run": DevNullTask.name},
        }
    )
    manager.fire("go", {"k": 1})
    ThreadingTaskRunner.join_all()
    assert sorted(i.name for i in seen) == ["t_a#0", "t_b#0"]
    assert all(isinstance(i, TaskInstance) and i.status == "scheduled" for i in seen)
    assert all(i.kwargs == {"go": {"k": 1}} for i in seen)


def test_post_fire_receives_a_real_list(make_storage: StorageFactory) -> None:
    """The original passed a list: hooks concatenate it and append to it."""
    received: list[list[TaskInstance]] = []

    class Extender(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            if trigger_name == "go":
                combined = tasks_scheduled + []
                tasks_scheduled.append(combined[0])
                received.append(tasks_scheduled)

    manager = Extender(make_storage("extender"))
    manager.update_configuration({"t_a": {"after": ["go"], "run": DevNullTask.name}})
    manager.fire("go")
    ThreadingTaskRunner.join_all()
    [scheduled] = received
    assert type(scheduled) is list
    assert [i.name for i in scheduled] == ["t_a#0", "t_a#0"]


def test_replay_calls_post_replay_with_the_replayed_instance_not_post_fire(
    hooked: tuple[Session, Recorder],
) -> None:
    session, recorder = hooked
    session.manager.update_configuration({"t_failing": {"after": ["fail"], "run": FailingTask.name}})
    session.manager.fire("fail")
    assert recorder.take() == [("fire", "fail", ["t_failing#0"])]

    session.manager.replay_failed_instance("t_failing#0")
    assert recorder.take() == [("replay", "t_failing#0", "replayed")]
    session.assertInstanceFailed("t_failing#1", RuntimeError)

    # Skipping (even with a cascade) is no replay.
    session.manager.skip_failed_instance("t_failing#1", cascade=True)
    assert [c for c in recorder.take() if c[0] == "replay"] == []


def test_post_skip_runs_after_the_cascades_post_fire(hooked: tuple[Session, Recorder]) -> None:
    session, recorder = hooked
    session.manager.update_configuration(
        {
            "t_failing": {"after": [], "andEvery": "fail", "run": FailingTask.name},
            "t_after": {"after": ["t_failing"], "run": DevNullTask.name},
        }
    )
    session.manager.fire("fail")
    recorder.take()

    session.manager.skip_failed_instance("t_failing#0", cascade=False)
    assert recorder.take() == [("skip", "t_failing#0", False)]

    session.manager.fire("fail")
    assert recorder.take() == [("fire", "fail", ["t_failing#1"])]
    session.manager.skip_failed_instance("t_failing#1", cascade=True)
    assert recorder.take() == [
        ("fire", "t_failing", ["t_after#0"]),
        ("skip", "t_failing#1", True),
        ("fire", "t_after", []),
    ]


def test_a_manual_status_cascade_calls_post_fire(hooked: tuple[Session, Recorder]) -> None:
    session, recorder = hooked
    session.manager.update_configuration({"t_failing": {"after": ["fail"], "run": FailingTask.name}})
    session.manager.fire("fail")
    recorder.take()
    session.manager.update_instance_status("t_failing#0", "finished", cascade=True, cascade_kwargs={"x": 1})
    assert recorder.take() == [("fire", "t_failing", [])]


def test_hooks_run_with_the_lock_released(make_storage: StorageFactory) -> None:
    """A hook may call the manager again (e.g. fire), as the cookbook's finalizer does."""
    observed: list[bool] = []

    class Refiring(TriggerManager):
        def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
            observed.append(self.storage.has_lock)
            if trigger_name == "first":
                self.fire("second")

    manager = Refiring(make_storage("refire"))
    manager.update_configuration({"t_two": {"after": ["second"], "run": DevNullTask.name}})
    manager.fire("first")
    ThreadingTaskRunner.join_all()
    assert observed == [False, False, False]  # first, second, and the cascade of t_two
    manager.storage.invalidate_cache()
    assert manager.storage["t_two#0"].status == "finished"
