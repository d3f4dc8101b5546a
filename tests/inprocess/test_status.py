"""The eight instance statuses, the meta-statuses, and instance naming."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import BaseTaskRunner, ThreadingTaskRunner, task_runners
from stream_triggers.task import TaskContext, TriggerTask
from stream_triggers.testing import DevNullTask, FailingTask
from stream_triggers.types import Status, TaskConfig, TaskInstance
from tests.support import Session

ALL_STATUSES = ["unstarted", "scheduled", "running", "finished", "failed", "replayed", "skipped", "abandoned"]


def test_the_eight_statuses_keep_the_original_names() -> None:
    assert sorted(s.value for s in Status) == sorted(ALL_STATUSES)
    assert TaskInstance.STATUS_UNSTARTED == "unstarted"
    assert TaskInstance.STATUS_SCHEDULED == "scheduled"
    assert TaskInstance.STATUS_RUNNING == "running"
    assert TaskInstance.STATUS_FINISHED == "finished"
    assert TaskInstance.STATUS_FAILED == "failed"
    assert TaskInstance.STATUS_REPLAYED == "replayed"
    assert TaskInstance.STATUS_SKIPPED == "skipped"
    assert TaskInstance.STATUS_ABANDONED == "abandoned"


# -- meta-statuses on a bare TaskInstance -------------------------------------------------

CONFIG = TaskConfig(name="t_meta", after=["a", "b"], run=DevNullTask.name, unless=["x", "y"])


def instance(status: str = "unstarted", kwargs: dict | None = None, abandon: set[str] | None = None) -> TaskInstance:
    return TaskInstance(name="t_meta#0", config=CONFIG, status=status, kwargs=kwargs, abandonState=abandon)


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_is_resolved_only_for_final_statuses(status: str) -> None:
    assert instance(status).is_resolved is (status in {"finished", "abandoned", "skipped", "replayed"})


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_only_failed_instances_can_be_replayed_or_skipped(status: str) -> None:
    assert instance(status).can_replay is (status == "failed")
    assert instance(status).can_skip is (status == "failed")


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_only_unstarted_instances_can_run_or_be_abandoned(status: str) -> None:
    ready = instance(status, kwargs={"a": {}, "b": {}})
    doomed = instance(status, abandon={"x", "y"})
    assert ready.can_run is (status == "unstarted")
    assert bool(doomed.can_abandon) is (status == "unstarted")


def test_can_run_needs_every_after_trigger() -> None:
    assert not instance(kwargs={}).can_run
    assert not instance(kwargs={"a": {}}).can_run
    assert instance(kwargs={"a": {}, "b": {}}).can_run
    assert instance(kwargs={"a": {}, "b": {}, "extra": {}}).can_run


def test_can_abandon_needs_every_unless_trigger() -> None:
    assert not instance().can_abandon
    assert not instance(abandon={"x"}).can_abandon
    assert instance(abandon={"x", "y"}).can_abandon


def test_an_instance_to_be_abandoned_cannot_run() -> None:
    both = instance(kwargs={"a": {}, "b": {}}, abandon={"x", "y"})
    assert both.can_abandon
    assert not both.can_run


def test_a_task_without_unless_is_never_abandoned() -> None:
    config = TaskConfig(name="t_plain", after=["a"], run=DevNullTask.name)
    assert not TaskInstance(name="t_plain#0", config=config).can_abandon


def test_apply_trigger_reports_whether_it_applied() -> None:
    mutable = instance()
    assert mutable.apply_trigger("a", {"n": 1})
    assert not mutable.apply_trigger("a", {"n": 2})  # already fired for this instance
    assert not mutable.apply_trigger("unrelated", {})
    assert mutable.apply_trigger("x", {})
    assert mutable.kwargs == {"a": {"n": 1}}
    assert set(mutable.abandon_state) == {"x"}


# -- statuses reached through the manager --------------------------------------------------


def test_unstarted_then_finished(session: Session) -> None:
    session.manager.update_configuration({"t_two": {"after": ["a", "b"], "run": DevNullTask.name}})
    session.fire("a")
    session.assertInstanceUnstarted("t_two#0")
    inst = session.storage["t_two#0"]
    assert not inst.can_run
    assert not inst.is_resolved
    session.fire("b")
    session.assertInstanceFinished("t_two#0", {})
    assert session.storage["t_two#0"].is_resolved


class ParkingRunner(BaseTaskRunner):
    """Accepts instances and never runs them (so they stay 'scheduled')."""

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        pass


@pytest.fixture
def parking_runner() -> Iterator[None]:
    task_runners.register("parking")(ParkingRunner)
    yield
    task_runners.unregister("parking")


def test_scheduled_until_a_runner_picks_it_up(session: Session, parking_runner: None) -> None:
    session.manager.update_configuration({"t_parked": {"after": ["go"], "run": DevNullTask.name, "using": "parking"}})
    session.fire("go")
    session.assertInstanceStatus("t_parked#0", TaskInstance.STATUS_SCHEDULED)
    parked = session.storage["t_parked#0"]
    assert not parked.is_resolved
    assert not parked.can_run  # already handed to a runner
    assert TaskInstance.STATUS_SCHEDULED in parked.metadata[TaskInstance.META_TIMESTAMPS]
    session.assertUnresolvedInstances(["t_parked#0"])


class Gate(TriggerTask):
    """Waits until the test opens the gate (so it can be seen 'running')."""

    entered = threading.Event()
    opened = threading.Event()

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        type(self).entered.set()
        if not type(self).opened.wait(5):
            raise TimeoutError("the test never opened the gate")
        return {"passed": True}


def test_running_while_the_task_executes(session: Session) -> None:
    Gate.entered.clear()
    Gate.opened.clear()
    session.manager.update_configuration({"t_gate": {"after": ["go"], "run": Gate.name}})
    session.manager.fire("go")
    try:
        assert Gate.entered.wait(5)
        session.assertInstanceStatus("t_gate#0", TaskInstance.STATUS_RUNNING)
        running = session.storage["t_gate#0"]
        assert not running.is_resolved
        assert running.metadata[TaskInstance.META_ACTUAL_KWARGS] == {"go": {}}
    finally:
        Gate.opened.set()
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_gate#0", {"passed": True})


def test_failed_replayed_and_skipped(session: Session) -> None:
    session.manager.update_configuration({"t_bad": {"after": [], "andEvery": "go", "run": FailingTask.name}})
    session.fire("go")
    session.assertInstanceFailed("t_bad#0", RuntimeError)
    failed = session.storage["t_bad#0"]
    assert failed.can_replay and failed.can_skip and not failed.is_resolved

    session.manager.replay_failed_instance("t_bad#0")
    ThreadingTaskRunner.join_all()
    session.assertInstanceReplayed("t_bad#0")
    session.assertInstanceFailed("t_bad#1", RuntimeError)
    replayed = session.storage["t_bad#0"]
    assert replayed.is_resolved and not replayed.can_replay and not replayed.can_skip

    session.manager.skip_failed_instance("t_bad#1")
    session.assertInstanceSkipped("t_bad#1")
    assert session.storage["t_bad#1"].is_resolved
    session.assertUnresolvedInstances([])


def test_abandoned(session: Session) -> None:
    session.manager.update_configuration({"t_no": {"after": ["go"], "unless": ["stop"], "run": DevNullTask.name}})
    session.fire("stop")
    session.assertInstanceAbandoned("t_no#0")
    abandoned = session.storage["t_no#0"]
    assert abandoned.is_resolved
    assert not abandoned.can_abandon  # already abandoned
    assert not abandoned.can_run


def test_every_status_change_is_timestamped(session: Session) -> None:
    session.manager.update_configuration({"t_one": {"after": ["go"], "run": DevNullTask.name}})
    session.fire("go")
    stamps = session.storage["t_one#0"].metadata[TaskInstance.META_TIMESTAMPS]
    for key in ("created", "lastModified", "scheduled", "running", "finished"):
        assert key in stamps
    assert stamps["created"] <= stamps["scheduled"] <= stamps["running"] <= stamps["finished"]
    assert stamps["lastModified"] == stamps["finished"]


# -- naming --------------------------------------------------------------------------------


def test_instances_are_numbered_per_task_from_zero(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_x": {"after": [], "andEvery": "tick", "run": DevNullTask.name},
            "t_y": {"after": [], "andEvery": "tick", "run": FailingTask.name},
        }
    )
    for _ in range(3):
        session.fire("tick")
    assert sorted(session.storage.instances_of_task("t_x")) == ["t_x#0", "t_x#1", "t_x#2"]
    assert sorted(session.storage.instances_of_task("t_y")) == ["t_y#0", "t_y#1", "t_y#2"]

    # A replay takes the task's next number.
    session.manager.replay_failed_instance("t_y#1")
    ThreadingTaskRunner.join_all()
    session.assertInstanceFailed("t_y#3", RuntimeError)
    assert session.storage["t_y#3"].metadata[TaskInstance.META_PARENT] == "t_y#1"
    assert str(session.storage["t_y#3"]) == "t_y#3 (failed)"


def test_the_task_name_is_not_an_instance_name(session: Session) -> None:
    session.manager.update_configuration({"t_x": {"after": ["go"], "run": DevNullTask.name}})
    session.fire("go")
    assert "t_x#0" in session.storage.instances
    with pytest.raises(KeyError):
        session.storage.instances["t_x"]
    with pytest.raises(KeyError):
        session.storage["t_x"]
