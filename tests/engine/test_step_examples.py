"""Example-based tests of ``engine.step()``: one input type per test, with the exact effects.

The property tests (tests/test_engine_properties.py) check invariants over random
sessions; these pin down what each input does to a small, readable session.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from stream_triggers.engine import (
    EMPTY,
    Cascade,
    ConfigurationUpdated,
    Effect,
    Fired,
    Ignored,
    Input,
    InstanceChanged,
    InvalidConfiguration,
    InvalidPayload,
    LogsResolved,
    MetadataUpdated,
    OperationNotAllowed,
    Replayed,
    ReplayRequested,
    RetryRequested,
    RunInstance,
    SessionState,
    Skipped,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
    UnknownInstance,
    step,
)
from stream_triggers.types import Status, TaskInstance

AT = datetime(2024, 5, 1, 12, 0)
LATER = AT + timedelta(minutes=1)


def configured(configuration: dict[str, dict[str, Any]]) -> SessionState:
    state, effects = step(EMPTY, ConfigurationUpdated(configuration, AT))
    assert effects == []
    return state


def run(state: SessionState, *inputs: Input) -> tuple[SessionState, list[Effect]]:
    """Apply ``inputs`` in turn; return the last state and the last input's effects."""
    effects: list[Effect] = []
    for event in inputs:
        state, effects = step(state, event)
    return state, effects


def fire(trigger: str, **kwargs: Any) -> TriggerFired:
    return TriggerFired(trigger, kwargs, AT)


def report(instance: str, status: Status, result: dict[str, Any] | None = None) -> StatusReported:
    return StatusReported(instance, status, None, LATER, result)


def statuses(state: SessionState) -> dict[str, str]:
    return {name: str(instance.status) for name, instance in state.instances.items()}


def kinds(effects: list[Effect]) -> list[str]:
    return [type(effect).__name__ for effect in effects]


SIMPLE = {"t_import": {"after": ["started"], "run": "app.Import"}}
TWO_STEPS = {
    "t_import": {"after": ["started"], "run": "app.Import"},
    "t_score": {"after": ["t_import", "answered"], "run": "app.Score"},
}


# -- configuration ---------------------------------------------------------------------


def test_configuration_adds_tasks_and_creates_no_instance() -> None:
    state = configured(TWO_STEPS)
    assert list(state.tasks) == ["t_import", "t_score"]
    assert state.tasks["t_score"].after == frozenset({"t_import", "answered"})
    assert state.instances == {}


def test_reconfiguration_replaces_a_task_and_moves_its_instances_to_the_new_config() -> None:
    state, _ = run(configured(TWO_STEPS), fire("answered"))
    assert statuses(state) == {"t_score#0": "unstarted"}
    state, effects = step(state, ConfigurationUpdated({"t_score": {"after": ["answered"], "run": "app.Score2"}}, LATER))
    assert effects == []
    assert state.tasks["t_score"].run == "app.Score2"
    assert state.instances["t_score#0"].config is state.tasks["t_score"]
    # Due under the new config; settled by the task's next fire (triggers are not re-applied).
    assert statuses(state) == {"t_score#0": "unstarted"}


def test_invalid_configuration_names_the_task_and_directive() -> None:
    with pytest.raises(InvalidConfiguration, match="Task 't': directive 'after' is required"):
        step(EMPTY, ConfigurationUpdated({"t": {"run": "x"}}, AT))
    with pytest.raises(InvalidPayload, match="must be a mapping"):
        step(EMPTY, ConfigurationUpdated(["t"], AT))  # type: ignore[arg-type]


# -- fire --------------------------------------------------------------------------------


def test_fire_creates_an_instance_and_schedules_it_once_every_after_trigger_fired() -> None:
    state, effects = step(configured(SIMPLE), fire("started", page=1))
    instance = state.instances["t_import#0"]
    assert instance.status == Status.SCHEDULED
    assert instance.kwargs == {"started": {"page": 1}}
    assert kinds(effects) == ["InstanceChanged", "InstanceChanged", "RunInstance", "Fired"]
    created, scheduled, run_instance, fired = effects
    assert isinstance(created, InstanceChanged) and created.previous is None
    assert isinstance(scheduled, InstanceChanged) and scheduled.previous == Status.UNSTARTED
    assert run_instance == RunInstance(instance)
    assert fired == Fired("started", (instance,))
    assert state.latest_kwargs == {"started": {"page": 1}}
    assert instance.metadata[TaskInstance.META_TIMESTAMPS]["scheduled"] == AT


def test_fire_of_a_trigger_nobody_waits_for_is_only_recorded() -> None:
    state, effects = step(configured(SIMPLE), fire("unrelated"))
    assert effects == [Fired("unrelated", ())]
    assert state.instances == {}
    assert state.latest_kwargs == {"unrelated": {}}


def test_fire_waits_for_every_after_trigger_and_a_new_instance_inherits_earlier_ones() -> None:
    state, effects = run(configured(TWO_STEPS), fire("answered", n=1))
    assert kinds(effects) == ["InstanceChanged", "Fired"]
    assert statuses(state) == {"t_score#0": "unstarted"}
    state, effects = run(state, fire("started"), report("t_import#0", Status.FINISHED, {"rows": 3}))
    assert effects[-1] == Cascade("t_import", {"rows": 3})
    state, effects = step(state, TriggerFired("t_import", {"rows": 3}, LATER))
    assert state.instances["t_score#0"].status == Status.SCHEDULED
    assert state.instances["t_score#0"].kwargs == {"answered": {"n": 1}, "t_import": {"rows": 3}}
    assert RunInstance(state.instances["t_score#0"]) in effects


def test_a_second_fire_of_the_same_trigger_changes_no_started_instance() -> None:
    state, _ = run(configured(SIMPLE), fire("started", n=1))
    state, effects = step(state, fire("started", n=2))
    assert effects == [Fired("started", ())]
    assert state.instances["t_import#0"].kwargs == {"started": {"n": 1}}
    assert state.latest_kwargs["started"] == {"n": 2}


# -- andEvery, unless, withParams --------------------------------------------------------


AND_EVERY = {"t_page": {"after": ["subject"], "andEvery": "page", "run": "app.Page"}}


def test_and_every_adds_one_instance_per_firing_until_the_other_triggers_fire() -> None:
    state, _ = run(configured(AND_EVERY), fire("page", n=1), fire("page", n=2))
    assert statuses(state) == {"t_page#0": "unstarted", "t_page#1": "unstarted"}
    state, effects = step(state, fire("subject"))
    assert statuses(state) == {"t_page#0": "scheduled", "t_page#1": "scheduled"}
    assert [e.instance.kwargs["page"] for e in effects if isinstance(e, RunInstance)] == [{"n": 1}, {"n": 2}]
    state, effects = step(state, fire("page", n=3))
    assert state.instances["t_page#2"].status == Status.SCHEDULED
    assert state.instances["t_page#2"].kwargs == {"subject": {}, "page": {"n": 3}}


UNLESS = {"t_remind": {"after": ["registered", "week"], "unless": ["paid"], "run": "app.Remind"}}


def test_unless_abandons_an_unstarted_instance_and_nothing_runs() -> None:
    state, _ = run(configured(UNLESS), fire("registered"))
    state, effects = step(state, fire("paid"))
    assert statuses(state) == {"t_remind#0": "abandoned"}
    assert state.instances["t_remind#0"].abandon_state == frozenset({"paid"})
    assert kinds(effects) == ["InstanceChanged", "Fired"]
    assert effects[-1] == Fired("paid", ())
    state, effects = step(state, fire("week"))
    assert statuses(state) == {"t_remind#0": "abandoned"}
    assert effects == [Fired("week", ())]


def test_unless_fired_first_creates_the_instance_abandoned() -> None:
    state, _ = step(configured(UNLESS), fire("paid"))
    assert statuses(state) == {"t_remind#0": "abandoned"}


def test_unless_does_not_stop_an_instance_already_scheduled() -> None:
    state, _ = run(configured(UNLESS), fire("registered"), fire("week"))
    state, effects = step(state, fire("paid"))
    assert statuses(state) == {"t_remind#0": "scheduled"}
    assert effects == [Fired("paid", ())]


def test_with_params_are_kept_in_the_config_and_out_of_the_instance_kwargs() -> None:
    state = configured({"t": {"after": ["go"], "run": "app.T", "withParams": {"go": {"model": "Psych 01"}}}})
    assert state.tasks["t"].with_params == {"go": {"model": "Psych 01"}}
    state, _ = step(state, fire("go", x=1))
    # The runner merges them (``task_kwargs``); the engine keeps what was fired.
    assert state.instances["t#0"].kwargs == {"go": {"x": 1}}


# -- status reports, retries -------------------------------------------------------------


def scheduled_import() -> SessionState:
    return step(configured(SIMPLE), fire("started"))[0]


def test_reports_move_an_instance_through_running_to_finished_and_cascade_its_result() -> None:
    state, effects = step(scheduled_import(), report("t_import#0", Status.RUNNING))
    assert statuses(state) == {"t_import#0": "running"}
    assert kinds(effects) == ["InstanceChanged"]
    state, effects = step(state, report("t_import#0", Status.FINISHED, {"rows": 3}))
    assert statuses(state) == {"t_import#0": "finished"}
    assert effects[-1] == Cascade("t_import", {"rows": 3})
    assert state.instances["t_import#0"].metadata[TaskInstance.META_TIMESTAMPS]["finished"] == LATER


def test_a_failed_report_keeps_its_metadata_and_cascades_nothing() -> None:
    failure = {TaskInstance.META_EXCEPTION_TYPE: "builtins.ValueError"}
    state, effects = step(scheduled_import(), StatusReported("t_import#0", Status.FAILED, failure, LATER))
    assert statuses(state) == {"t_import#0": "failed"}
    assert state.instances["t_import#0"].metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.ValueError"
    assert kinds(effects) == ["InstanceChanged"]


def test_a_late_or_duplicate_report_is_ignored_and_changes_nothing() -> None:
    state, _ = step(scheduled_import(), report("t_import#0", Status.FINISHED))
    after, effects = step(state, report("t_import#0", Status.FINISHED))
    assert effects == [Ignored("t_import#0", "reported finished while finished")]
    assert after == state
    after, effects = step(state, report("t_import#0", Status.RUNNING))
    assert effects == [Ignored("t_import#0", "reported running while finished")]


def test_a_runner_cannot_report_a_status_reserved_to_the_engine() -> None:
    with pytest.raises(OperationNotAllowed, match="cannot report status"):
        step(scheduled_import(), report("t_import#0", Status.REPLAYED))


def test_a_retry_fails_the_instance_and_schedules_a_clone_with_its_cooldown() -> None:
    state, _ = step(scheduled_import(), report("t_import#0", Status.RUNNING))
    state, effects = step(state, RetryRequested("t_import#0", {"attempt": 1}, None, 2.5, LATER))
    assert statuses(state) == {"t_import#0": "replayed", "t_import#1": "scheduled"}
    clone = state.instances["t_import#1"]
    assert clone.kwargs == {"started": {}}
    assert clone.cooldown == 2.5
    assert clone.depth == 1
    assert clone.metadata[TaskInstance.META_PARENT] == "t_import#0"
    assert state.instances["t_import#0"].metadata["attempt"] == 1
    assert kinds(effects) == [
        "InstanceChanged",  # failed
        "InstanceChanged",  # replayed
        "InstanceChanged",  # clone created
        "InstanceChanged",  # clone scheduled
        "RunInstance",
        "Replayed",
    ]
    assert effects[-1] == Replayed(state.instances["t_import#0"], clone)


def test_a_retry_with_replacement_kwargs_runs_the_clone_with_them() -> None:
    state, _ = step(scheduled_import(), report("t_import#0", Status.RUNNING))
    state, _ = step(state, RetryRequested("t_import#0", None, {"started": {"page": 2}}, None, LATER))
    assert state.instances["t_import#1"].kwargs == {"started": {"page": 2}}
    assert state.instances["t_import#1"].cooldown == 0


def test_a_retry_from_a_finished_instance_is_ignored() -> None:
    state, _ = step(scheduled_import(), report("t_import#0", Status.FINISHED))
    after, effects = step(state, RetryRequested("t_import#0", None, None, None, LATER))
    assert effects == [Ignored("t_import#0", "retry reported while finished")]
    assert after == state


# -- replay, skip ------------------------------------------------------------------------


def failed_import() -> SessionState:
    return step(scheduled_import(), report("t_import#0", Status.FAILED))[0]


def test_replay_without_replacement_kwargs_reruns_with_the_same_kwargs() -> None:
    state, effects = step(failed_import(), ReplayRequested("t_import#0", None, LATER))
    assert statuses(state) == {"t_import#0": "replayed", "t_import#1": "scheduled"}
    assert state.instances["t_import#1"].kwargs == {"started": {}}
    assert kinds(effects) == ["InstanceChanged", "InstanceChanged", "InstanceChanged", "RunInstance", "Replayed"]


def test_replay_with_replacement_kwargs_reruns_with_them() -> None:
    state, _ = step(failed_import(), ReplayRequested("t_import#0", {"started": {"fixed": True}}, LATER))
    assert state.instances["t_import#1"].kwargs == {"started": {"fixed": True}}


def test_only_a_failed_instance_can_be_replayed_or_skipped() -> None:
    with pytest.raises(OperationNotAllowed, match="in scheduled state cannot be replayed"):
        step(scheduled_import(), ReplayRequested("t_import#0", None, LATER))
    with pytest.raises(OperationNotAllowed, match="in scheduled state cannot be skipped"):
        step(scheduled_import(), SkipRequested("t_import#0", False, None, LATER))


def test_skip_without_cascade_resolves_the_instance_and_fires_nothing() -> None:
    state, effects = step(failed_import(), SkipRequested("t_import#0", False, None, LATER))
    assert statuses(state) == {"t_import#0": "skipped"}
    assert state.instances["t_import#0"].metadata["cascade"] is False
    assert kinds(effects) == ["InstanceChanged", "Skipped"]
    assert effects[-1] == Skipped(state.instances["t_import#0"], False)


def test_skip_with_cascade_fires_the_task_name_with_the_given_result() -> None:
    state, effects = step(failed_import(), SkipRequested("t_import#0", True, {"rows": 0}, LATER))
    assert statuses(state) == {"t_import#0": "skipped"}
    assert state.instances["t_import#0"].metadata["result"] == {"rows": 0}
    assert kinds(effects) == ["InstanceChanged", "Cascade", "Skipped"]
    assert effects[1] == Cascade("t_import", {"rows": 0})


# -- administrative edits ----------------------------------------------------------------


def test_status_update_applies_whatever_the_current_status() -> None:
    state, _ = step(scheduled_import(), report("t_import#0", Status.FINISHED))
    state, effects = step(state, StatusUpdated("t_import#0", Status.UNSTARTED, {"why": "redo"}, False, None, LATER))
    assert statuses(state) == {"t_import#0": "unstarted"}
    assert state.instances["t_import#0"].metadata["why"] == "redo"
    assert kinds(effects) == ["InstanceChanged"]
    # Due again (its kwargs are all there): the task's next fire settles it.
    state, effects = step(state, fire("started"))
    assert statuses(state) == {"t_import#0": "scheduled"}


def test_status_update_with_cascade_fires_the_task_name() -> None:
    state, effects = step(scheduled_import(), StatusUpdated("t_import#0", Status.FINISHED, None, True, {"n": 1}, LATER))
    assert statuses(state) == {"t_import#0": "finished"}
    assert effects[-1] == Cascade("t_import", {"n": 1})


def test_metadata_update_merges_keys_and_keeps_the_status() -> None:
    state, effects = step(scheduled_import(), MetadataUpdated("t_import#0", {"note": "checked"}, LATER))
    instance = state.instances["t_import#0"]
    assert instance.status == Status.SCHEDULED
    assert instance.metadata["note"] == "checked"
    assert instance.last_modified == LATER
    assert effects == []


def test_logs_resolved_marks_the_instance_metadata() -> None:
    state, effects = step(failed_import(), LogsResolved("t_import#0", LATER))
    assert state.instances["t_import#0"].metadata[TaskInstance.META_LOGS_RESOLVED] is True
    assert state.instances["t_import#0"].logs_resolved
    assert effects == []


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        StatusReported("nope#0", Status.RUNNING, None, AT),
        StatusUpdated("nope#0", Status.FINISHED, None, False, None, AT),
        RetryRequested("nope#0", None, None, None, AT),
        ReplayRequested("nope#0", None, AT),
        SkipRequested("nope#0", False, None, AT),
        MetadataUpdated("nope#0", {}, AT),
        LogsResolved("nope#0", AT),
    ],
    ids=lambda event: type(event).__name__,
)
def test_an_input_naming_an_unknown_instance_raises_and_leaves_the_state_unchanged(event: Input) -> None:
    state = scheduled_import()
    before = statuses(state)
    with pytest.raises(UnknownInstance, match="No task instance named 'nope#0'") as raised:
        step(state, event)
    assert isinstance(raised.value, KeyError)
    assert raised.value.reason == "unknown_instance"
    assert statuses(state) == before
