"""Cascades: a finished task fires its own name, with its result as the kwargs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from stream_triggers.task import TaskContext, TriggerTask
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from tests.support import Session


class AddOne(TriggerTask):
    """Returns ``{'n': upstream n + 1}`` from whichever trigger carried an ``n``."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        (upstream,) = [kw for kw in context.trigger_kwargs.values() if "n" in kw]
        return {"n": upstream["n"] + 1}


def test_a_finished_task_fires_its_name_with_its_result(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data"], "run": PassThruTask.name},
            "t_bravo": {"after": ["t_alpha"], "run": PassThruTask.name},
            "t_charlie": {"after": ["t_alpha"], "run": PassThruTask.name},
        }
    )
    session.fire("data", {"inattention": "4.5"})

    session.assertInstanceFinished("t_alpha#0", {"kwargs": {"data": {"inattention": "4.5"}}})
    for name in ("t_bravo#0", "t_charlie#0"):
        session.assertInstanceFinished(name, {"kwargs": {"t_alpha": {"kwargs": {"data": {"inattention": "4.5"}}}}})
    # The cascade is recorded like any fired trigger.
    assert session.storage.latest_kwargs["t_alpha"] == {"kwargs": {"data": {"inattention": "4.5"}}}
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])


def test_a_long_chain_of_cascades(session: Session) -> None:
    length = 25
    configuration = {"t_0": {"after": ["start"], "run": AddOne.name}}
    for i in range(1, length):
        configuration[f"t_{i}"] = {"after": [f"t_{i - 1}"], "run": AddOne.name}
    session.manager.update_configuration(configuration)
    session.fire("start", {"n": 0})
    for i in range(length):
        session.assertInstanceFinished(f"t_{i}#0", {"n": i + 1})
    session.assertUnresolvedTasks([])


def test_a_failed_task_does_not_cascade(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data"], "run": FailingTask.name},
            "t_bravo": {"after": ["t_alpha"], "run": PassThruTask.name},
        }
    )
    session.fire("data")
    session.assertInstanceFailed("t_alpha#0", RuntimeError)
    session.assertInstanceMissing("t_bravo#0")
    assert "t_alpha" not in session.storage.latest_kwargs
    session.assertUnresolvedTasks(["t_alpha", "t_bravo"])
    session.assertUnresolvedInstances(["t_alpha#0"])


def test_redundant_trigger_passes_upstream_kwargs_along(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data", "credits"], "run": DevNullTask.name},
            # ``data`` looks redundant (t_alpha already waits for it), but it is how
            # t_bravo gets to see the kwargs ``data`` fired with.
            "t_bravo": {"after": ["t_alpha", "data"], "run": PassThruTask.name},
        }
    )
    session.manager.fire("data", {"section_timer": "42", "test_admin": "bob"})
    session.manager.fire("credits")
    session.fire("nothing")

    session.assertInstanceFinished("t_alpha#0", {})
    session.assertInstanceFinished(
        "t_bravo#0",
        {"kwargs": {"t_alpha": {}, "data": {"section_timer": "42", "test_admin": "bob"}}},
    )
    session.assertUnresolvedTasks([])
    session.assertUnresolvedInstances([])


def test_cascade_into_a_complex_trigger(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data", "credits"], "run": PassThruTask.name},
            "t_bravo": {"after": ["t_alpha", "registered"], "run": PassThruTask.name},
            "t_charlie": {"after": ["t_alpha", "demo"], "run": PassThruTask.name},
        }
    )
    session.fire("data")
    session.assertInstanceUnstarted("t_alpha#0")
    session.assertInstanceMissing("t_bravo#0")
    session.assertInstanceMissing("t_charlie#0")
    session.assertUnresolvedTasks(["t_alpha", "t_bravo", "t_charlie"])
    session.assertUnresolvedInstances(["t_alpha#0"])

    session.fire("credits")
    session.assertInstanceFinished("t_alpha#0", {"kwargs": {"data": {}, "credits": {}}})
    # The cascade made instances that still wait for their other trigger.
    session.assertInstanceUnstarted("t_bravo#0")
    session.assertInstanceUnstarted("t_charlie#0")

    session.fire("registered")
    session.assertInstanceFinished(
        "t_bravo#0", {"kwargs": {"t_alpha": {"kwargs": {"data": {}, "credits": {}}}, "registered": {}}}
    )
    session.assertInstanceUnstarted("t_charlie#0")
    session.assertUnresolvedTasks(["t_charlie"])
    session.assertUnresolvedInstances(["t_charlie#0"])


def test_cascade_completes_a_complex_trigger_that_fired_first(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data", "credits"], "run": PassThruTask.name},
            "t_bravo": {"after": ["t_alpha", "registered"], "run": PassThruTask.name},
        }
    )
    session.fire("registered")
    session.assertInstanceMissing("t_alpha#0")
    session.assertInstanceUnstarted("t_bravo#0")
    session.assertUnresolvedInstances(["t_bravo#0"])

    session.fire("data")
    session.fire("credits")
    session.assertInstanceFinished("t_alpha#0", {"kwargs": {"data": {}, "credits": {}}})
    session.assertInstanceFinished(
        "t_bravo#0", {"kwargs": {"t_alpha": {"kwargs": {"data": {}, "credits": {}}}, "registered": {}}}
    )
    session.assertUnresolvedTasks([])


@pytest.mark.parametrize("order", list(itertools.permutations(["data", "credits", "registered"])))
def test_complex_triggers_with_cascades_in_any_order(session: Session, order: tuple[str, ...]) -> None:
    session.manager.update_configuration(
        {
            "t_alpha": {"after": ["data", "credits"], "run": PassThruTask.name},
            "t_bravo": {"after": ["t_alpha", "registered", "data"], "run": PassThruTask.name},
        }
    )
    for trigger in order:
        session.fire(trigger, {"name": trigger})

    session.assertInstanceFinished(
        "t_bravo#0",
        {
            "kwargs": {
                "t_alpha": {"kwargs": {"data": {"name": "data"}, "credits": {"name": "credits"}}},
                "registered": {"name": "registered"},
                "data": {"name": "data"},
            }
        },
    )
    session.assertInstanceMissing("t_alpha#1")
    session.assertInstanceMissing("t_bravo#1")
    session.assertUnresolvedTasks([])


class ReturnsNone(TriggerTask):
    def _run(self, context: TaskContext) -> None:
        return None


def test_a_task_returning_nothing_cascades_empty_kwargs(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_quiet": {"after": ["go"], "run": ReturnsNone.name},
            "t_next": {"after": ["t_quiet"], "run": PassThruTask.name},
        }
    )
    session.fire("go")
    session.assertInstanceFinished("t_quiet#0", {})
    session.assertInstanceFinished("t_next#0", {"kwargs": {"t_quiet": {}}})
