"""Every configuration directive: after, run, andEvery, unless, withParams, using, extras."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import BaseTaskRunner, ThreadingTaskRunner, task_runners
from stream_triggers.task import ALLOW_TASK_IMPORTS_ENV, TaskContext, TriggerTask, UnknownTask, resolve_task
from stream_triggers.testing import DevNullTask, PassThruTask
from stream_triggers.types import TaskInstance
from tests.support import Session


class Shout(TriggerTask):
    """Upper-cases the ``text`` it was given by the ``said`` trigger."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"text": context.trigger_kwargs["said"]["text"].upper()}


# -- after ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["alpha", "bravo", "charlie"])))
def test_after_runs_once_every_trigger_fired_whatever_the_order(session: Session, order: tuple[str, ...]) -> None:
    session.manager.update_configuration(
        {"t_all": {"after": ["alpha", "bravo", "charlie"], "run": PassThruTask.name}},
    )
    for trigger in order[:-1]:
        session.fire(trigger, {"from": trigger})
        session.assertInstanceUnstarted("t_all#0")
    session.fire(order[-1], {"from": order[-1]})

    session.assertInstanceFinished(
        "t_all#0",
        {"kwargs": {"alpha": {"from": "alpha"}, "bravo": {"from": "bravo"}, "charlie": {"from": "charlie"}}},
    )
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])


def test_after_accepts_a_set_or_a_tuple(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_fromSet": {"after": {"left", "right"}, "run": DevNullTask.name},
            "t_fromTuple": {"after": ("left", "right"), "run": DevNullTask.name},
        }
    )
    session.fire("right")
    session.fire("left")
    session.assertInstanceFinished("t_fromSet#0", {})
    session.assertInstanceFinished("t_fromTuple#0", {})


def test_a_trigger_nobody_waits_for_creates_nothing(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_fired": {"after": ["ping"], "run": PassThruTask.name},
            "t_waiting": {"after": ["pong"], "run": PassThruTask.name},
        }
    )
    session.fire("ping")
    session.fire("unrelated")

    session.assertInstanceFinished("t_fired#0", {"kwargs": {"ping": {}}})
    session.assertInstanceMissing("t_waiting#0")
    # The task whose trigger never fired is unresolved, but it has no instance yet.
    session.assertUnresolvedTasks(["t_waiting"])
    session.assertUnresolvedInstances([])


def test_tasks_are_one_shot_without_and_every(session: Session) -> None:
    session.manager.update_configuration({"t_once": {"after": ["tick"], "run": PassThruTask.name}})
    session.fire("tick", {"n": 1})
    session.fire("tick", {"n": 2})

    session.assertInstanceFinished("t_once#0", {"kwargs": {"tick": {"n": 1}}})
    session.assertInstanceMissing("t_once#1")
    # The storage still remembers the most recent kwargs of the trigger.
    assert session.storage.latest_kwargs["tick"] == {"n": 2}


def test_a_repeated_trigger_keeps_its_first_kwargs_on_a_waiting_instance(session: Session) -> None:
    session.manager.update_configuration({"t_pair": {"after": ["a", "b"], "run": PassThruTask.name}})
    session.fire("a", {"n": 1})
    session.fire("a", {"n": 2})
    session.fire("b")
    session.assertInstanceFinished("t_pair#0", {"kwargs": {"a": {"n": 1}, "b": {}}})


# -- run ---------------------------------------------------------------------------------


def test_run_names_the_task_class_to_execute(session: Session) -> None:
    session.manager.update_configuration({"t_shout": {"after": ["said"], "run": Shout.name}})
    session.fire("said", {"text": "hello"})
    session.assertInstanceFinished("t_shout#0", {"text": "HELLO"})


def test_several_trigger_tasks_may_run_the_same_task_class(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_first": {"after": ["said"], "run": Shout.name},
            "t_second": {"after": ["said"], "run": Shout.name},
        }
    )
    session.fire("said", {"text": "twice"})
    session.assertInstanceFinished("t_first#0", {"text": "TWICE"})
    session.assertInstanceFinished("t_second#0", {"text": "TWICE"})


def test_run_naming_an_unknown_task_fails_the_instance_with_a_clear_message(session: Session) -> None:
    session.manager.update_configuration({"t_ghost": {"after": ["boo"], "run": "nowhere.to.be.Found"}})
    session.fire("boo")

    session.assertInstanceFailed("t_ghost#0", UnknownTask)
    info = session.storage["t_ghost#0"].metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "nowhere.to.be.Found" in info


# -- andEvery ----------------------------------------------------------------------------


def test_and_every_creates_one_instance_per_firing(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_each": {"after": [], "andEvery": "page", "run": PassThruTask.name},
            "t_other": {"after": [], "andEvery": "elsewhere", "run": PassThruTask.name},
        }
    )
    for number in range(3):
        session.fire("page", {"number": number})

    for number in range(3):
        session.assertInstanceFinished(f"t_each#{number}", {"kwargs": {"page": {"number": number}}})
    session.assertInstanceMissing("t_each#3")
    session.assertInstanceMissing("t_other#0")
    # Every instance of t_each is resolved, so only the task that never ran is unresolved.
    session.assertUnresolvedTasks(["t_other"])
    session.assertUnresolvedInstances([])


def test_and_every_instances_run_only_after_the_after_triggers(session: Session) -> None:
    session.manager.update_configuration(
        {"t_each": {"after": ["ready"], "andEvery": "page", "run": PassThruTask.name}},
    )
    session.fire("page", {"number": 0})
    session.fire("page", {"number": 1})
    session.assertInstanceUnstarted("t_each#0")
    session.assertInstanceUnstarted("t_each#1")
    session.assertUnresolvedInstances(["t_each#0", "t_each#1"])

    # ``ready`` completes every waiting instance at once.
    session.fire("ready", {"go": True})
    session.assertInstanceFinished("t_each#0", {"kwargs": {"ready": {"go": True}, "page": {"number": 0}}})
    session.assertInstanceFinished("t_each#1", {"kwargs": {"ready": {"go": True}, "page": {"number": 1}}})

    # A later page gets a new instance that already knows ``ready`` fired.
    session.fire("page", {"number": 2})
    session.assertInstanceFinished("t_each#2", {"kwargs": {"ready": {"go": True}, "page": {"number": 2}}})
    session.assertUnresolvedTasks([])


def test_and_every_ignores_repeats_of_its_after_triggers(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_each": {"after": ["data"], "andEvery": "credit", "run": PassThruTask.name},
            "t_blocked": {"after": ["data", "never"], "andEvery": "credit", "run": PassThruTask.name},
        }
    )
    session.fire("data")
    session.fire("credit", {"n": 1})
    session.assertInstanceFinished("t_each#0", {"kwargs": {"data": {}, "credit": {"n": 1}}})

    # Firing an ``after`` trigger again does not make a new instance...
    session.fire("data", {"again": True})
    session.assertInstanceMissing("t_each#1")

    # ... the ``andEvery`` trigger does, with the latest ``data`` kwargs.
    session.fire("credit", {"n": 2})
    session.assertInstanceFinished("t_each#1", {"kwargs": {"data": {"again": True}, "credit": {"n": 2}}})

    session.assertInstanceUnstarted("t_blocked#0")
    session.assertInstanceUnstarted("t_blocked#1")
    session.assertUnresolvedTasks(["t_blocked"])
    session.assertUnresolvedInstances(["t_blocked#0", "t_blocked#1"])


def test_and_every_on_a_cascade_runs_once_per_upstream_instance(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_upstream": {"after": [], "andEvery": "data", "run": PassThruTask.name},
            "t_downstream": {"after": [], "andEvery": "t_upstream", "run": PassThruTask.name},
        }
    )
    session.fire("data", {"n": 1})
    session.fire("data", {"n": 2})

    for index, n in enumerate((1, 2)):
        session.assertInstanceFinished(
            f"t_downstream#{index}", {"kwargs": {"t_upstream": {"kwargs": {"data": {"n": n}}}}}
        )
    session.assertInstanceMissing("t_downstream#2")
    session.assertUnresolvedTasks([])


# -- unless ------------------------------------------------------------------------------


def test_unless_fired_first_abandons_the_instance_for_good(session: Session) -> None:
    session.manager.update_configuration(
        {"t_maybe": {"after": ["finalized"], "unless": ["finalizedEarly"], "run": DevNullTask.name}},
    )
    session.fire("finalizedEarly")
    session.assertInstanceAbandoned("t_maybe#0")
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])

    # Its ``after`` trigger firing later does not revive it, nor create another instance.
    session.fire("finalized")
    session.assertInstanceAbandoned("t_maybe#0")
    session.assertInstanceMissing("t_maybe#1")


def test_unless_abandons_an_instance_still_waiting_for_triggers(session: Session) -> None:
    session.manager.update_configuration(
        {"t_maybe": {"after": ["a", "b"], "unless": ["stop"], "run": DevNullTask.name}},
    )
    session.fire("a")
    session.assertInstanceUnstarted("t_maybe#0")
    session.fire("stop")
    session.assertInstanceAbandoned("t_maybe#0")
    session.fire("b")
    session.assertInstanceAbandoned("t_maybe#0")
    session.assertInstanceMissing("t_maybe#1")


def test_unless_needs_every_one_of_its_triggers(session: Session) -> None:
    session.manager.update_configuration(
        {"t_maybe": {"after": ["data", "finalized"], "unless": ["bureau", "noSteps"], "run": DevNullTask.name}},
    )
    session.fire("noSteps")
    session.assertInstanceUnstarted("t_maybe#0")
    session.fire("finalized")
    session.assertInstanceUnstarted("t_maybe#0")
    session.assertUnresolvedInstances(["t_maybe#0"])

    session.fire("bureau")
    session.assertInstanceAbandoned("t_maybe#0")
    session.fire("data")
    session.assertInstanceAbandoned("t_maybe#0")
    session.assertUnresolvedTasks([])


def test_unless_applies_beside_a_task_waiting_for_the_same_triggers(session: Session) -> None:
    # Both instances start with the same triggers (the engine shares such kwargs); the
    # ``unless`` trigger must still abandon the one task, and only that one.
    session.manager.update_configuration(
        {
            "t_plain": {"after": ["a", "b"], "run": DevNullTask.name},
            "t_maybe": {"after": ["a", "b"], "unless": ["a"], "run": DevNullTask.name},
        }
    )
    session.fire("b")
    session.fire("a")
    session.assertInstanceFinished("t_plain#0", {})
    session.assertInstanceAbandoned("t_maybe#0")


def test_unless_leaves_an_instance_that_already_ran_alone(session: Session) -> None:
    session.manager.update_configuration({"t_done": {"after": ["go"], "unless": ["stop"], "run": DevNullTask.name}})
    session.fire("go")
    session.fire("stop")
    session.assertInstanceFinished("t_done#0", {})


def test_unless_abandons_every_waiting_and_every_instance_and_later_ones(session: Session) -> None:
    session.manager.update_configuration(
        {"t_each": {"after": ["credits"], "andEvery": "step", "unless": ["disabled"], "run": DevNullTask.name}},
    )
    for _ in range(3):
        session.manager.fire("step")
    session.manager.fire("disabled")
    session.manager.fire("credits")
    ThreadingTaskRunner.join_all()
    for index in range(3):
        session.assertInstanceAbandoned(f"t_each#{index}")

    # A new instance inherits the satisfied ``unless`` and is abandoned at once.
    session.fire("step")
    session.assertInstanceAbandoned("t_each#3")
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])


def test_unless_after_an_and_every_instance_started(session: Session) -> None:
    session.manager.update_configuration(
        {"t_each": {"after": ["credits"], "andEvery": "step", "unless": ["disabled"], "run": DevNullTask.name}},
    )
    session.manager.fire("credits")
    session.manager.fire("step")  # #0 is scheduled before ``disabled`` fires
    session.manager.fire("disabled")
    session.manager.fire("step")
    ThreadingTaskRunner.join_all()

    session.assertInstanceFinished("t_each#0", {})
    session.assertInstanceAbandoned("t_each#1")


# -- withParams --------------------------------------------------------------------------


def test_with_params_fill_in_beneath_the_trigger_kwargs(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_plain": {"after": ["step"], "run": PassThruTask.name},
            "t_params": {
                "after": ["step"],
                "run": PassThruTask.name,
                "withParams": {
                    "step": {"name": "observations", "status": "clone"},
                    "extra": {"stuff": "arbitrary"},
                },
            },
        }
    )
    session.fire("step", {"name": "Dolly", "greeting": "Hello"})

    session.assertInstanceFinished("t_plain#0", {"kwargs": {"step": {"name": "Dolly", "greeting": "Hello"}}})
    # The trigger's own kwargs win; params only add what the trigger did not say.
    session.assertInstanceFinished(
        "t_params#0",
        {
            "kwargs": {
                "step": {"name": "Dolly", "greeting": "Hello", "status": "clone"},
                "extra": {"stuff": "arbitrary"},
            }
        },
    )
    instance = session.storage["t_params#0"]
    # The instance keeps the kwargs that really fired; what the task saw is in actualKwargs.
    assert instance.kwargs == {"step": {"name": "Dolly", "greeting": "Hello"}}
    assert instance.metadata[TaskInstance.META_ACTUAL_KWARGS]["extra"] == {"stuff": "arbitrary"}


def test_with_params_merge_recursively_into_a_cascade_result(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data"], "run": PassThruTask.name},
            "t_charlie": {
                "after": ["t_alpha"],
                "run": PassThruTask.name,
                "withParams": {
                    "t_alpha": {"foo": "bar", "kwargs": {"injected": True, "data": {"ignored": True}}},
                    "pun": {"baz": "luhrmann"},
                },
            },
        }
    )
    session.fire("data", {"score": 7})
    # Nested mappings merge; where both have a value, the cascaded result wins.
    session.assertInstanceFinished(
        "t_charlie#0",
        {
            "kwargs": {
                "t_alpha": {"foo": "bar", "kwargs": {"data": {"score": 7, "ignored": True}, "injected": True}},
                "pun": {"baz": "luhrmann"},
            }
        },
    )


def test_with_params_for_a_trigger_that_fired_without_kwargs(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_score": {
                "after": ["data", "credits"],
                "run": PassThruTask.name,
                "withParams": {"data": {"name": "Han"}, "calibration": {"name": "Greedo"}},
            }
        }
    )
    session.fire("credits")
    session.fire("data")
    session.assertInstanceFinished(
        "t_score#0",
        {"kwargs": {"data": {"name": "Han"}, "calibration": {"name": "Greedo"}, "credits": {}}},
    )


# -- using -------------------------------------------------------------------------------


class RecordingRunner(BaseTaskRunner):
    """Records what it was asked to run, then runs it in a thread like the default runner."""

    started: list[str] = []
    lock = threading.Lock()

    def run(self, manager: TriggerManager, task_instance: TaskInstance) -> None:
        with self.lock:
            type(self).started.append(task_instance.name)
        ThreadingTaskRunner().run(manager, task_instance)


@pytest.fixture
def recording_runner() -> Any:
    RecordingRunner.started = []
    task_runners.register("recording")(RecordingRunner)
    yield RecordingRunner
    task_runners.unregister("recording")


def test_using_selects_the_task_runner(session: Session, recording_runner: type[RecordingRunner]) -> None:
    session.manager.update_configuration(
        {
            "t_custom": {"after": ["go"], "run": PassThruTask.name, "using": "recording"},
            "t_default": {"after": ["go"], "run": PassThruTask.name},
        }
    )
    session.fire("go")
    session.assertInstanceFinished("t_custom#0", {"kwargs": {"go": {}}})
    session.assertInstanceFinished("t_default#0", {"kwargs": {"go": {}}})
    assert recording_runner.started == ["t_custom#0"]


def test_using_an_unknown_runner_fails_the_instance_not_the_caller(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_lost": {"after": ["go"], "run": PassThruTask.name, "using": "carrier-pigeon"},
            "t_fine": {"after": ["go"], "run": PassThruTask.name},
        }
    )
    session.fire("go")  # does not raise

    session.assertInstanceStatus("t_lost#0", TaskInstance.STATUS_FAILED)
    info = session.storage["t_lost#0"].metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "carrier-pigeon" in info
    assert "threading" in info  # the message lists the runners that do exist
    session.assertInstanceFinished("t_fine#0", {"kwargs": {"go": {}}})
    # A failed instance waits to be replayed or skipped.
    session.assertUnresolvedInstances(["t_lost#0"])


# -- extras ------------------------------------------------------------------------------


def test_unknown_directives_land_in_extras(session: Session, reopen: Any) -> None:
    session.manager.update_configuration(
        {
            "t_extra": {
                "after": ["go"],
                "run": DevNullTask.name,
                "finalizeOnlyIfClean": True,
                "owner": {"team": "scoring", "pager": ["alice", "bob"]},
            }
        }
    )
    expected = {"finalizeOnlyIfClean": True, "owner": {"team": "scoring", "pager": ["alice", "bob"]}}
    assert session.storage.tasks["t_extra"].extras == expected
    assert reopen("session").tasks["t_extra"].extras == expected

    # Extras change nothing about how the task runs.
    session.manager = TriggerManager(reopen("session"))
    session.fire("go")
    session.assertInstanceFinished("t_extra#0", {})


# -- run names import nothing --------------------------------------------------------------


def test_a_run_name_never_imports_the_module_it_names(session: Session) -> None:
    """``run`` comes from a configuration: naming a module must not run its code."""
    sys.modules.pop("this", None)  # the Zen of Python, printed on import
    session.manager.update_configuration({"t_zen": {"after": ["go"], "run": "this.Anything"}})
    session.fire("go")

    session.assertInstanceFailed("t_zen#0", UnknownTask)
    info = session.storage["t_zen#0"].metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "No TriggerTask named 'this.Anything' is registered" in info
    assert "this" not in sys.modules


def test_the_shared_resolution_imports_nothing_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_TASK_IMPORTS_ENV, raising=False)
    sys.modules.pop(_OPT_IN_MODULE, None)
    with pytest.raises(UnknownTask, match="import the module that defines it"):
        resolve_task(f"{_OPT_IN_MODULE}.Anything")
    assert _OPT_IN_MODULE not in sys.modules

    # The explicit opt-in (argument or environment) imports the named module first.
    monkeypatch.setenv(ALLOW_TASK_IMPORTS_ENV, "1")
    task = resolve_task(f"{_OPT_IN_MODULE}.Imported")
    assert task.__module__ == _OPT_IN_MODULE
    with pytest.raises(UnknownTask, match="importing 'no_such_module_here' failed"):
        resolve_task("no_such_module_here.Task", allow_imports=True)


_OPT_IN_MODULE = f"{__package__}.opt_in_tasks"
