"""Real task code through a real worker and executor: results, replays, retries, logs, errors.

One worker and one executor serve the whole module (each test has sessions of its own).
The executor imports ``stream_triggers.cli.demo_tasks`` and, on purpose, a module that does
not exist - it must start anyway and say so when a task from that module is requested.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from stream_triggers.cli.demo_tasks import (
    QUESTIONNAIRE,
    AlwaysRetries,
    FailsOnce,
    FiresFollowUp,
    RetriesThenSucceeds,
    WarnsOnOddAnswers,
    WhoRunsMe,
    subject_id,
)
from stream_triggers.events import jsonx
from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.types import TaskInstance
from tests.support import Pipeline, Proc, committed_offset, read_topic, wait_until

pytestmark = pytest.mark.broker

MISSING_MODULE = "no_such_module_for_tests"


@pytest.fixture(scope="module")
def running(module_pipeline: Pipeline) -> Iterator[tuple[Pipeline, Proc]]:
    """The module's worker and executor (the executor is returned with the pipeline)."""
    module_pipeline.worker()
    executor = module_pipeline.executor(imports=("stream_triggers.cli.demo_tasks", MISSING_MODULE))
    yield module_pipeline, executor


@pytest.fixture
def app(running: tuple[Pipeline, Proc]) -> Pipeline:
    return running[0]


@pytest.fixture
def executor(running: tuple[Pipeline, Proc]) -> Proc:
    return running[1]


def page(app: Pipeline, uid: str, number: int, agent: str = "Firefox/126.0", name: str = "Marcus") -> None:
    """What the questionnaire's responses view fires for one page."""
    responses = {f"q{number}": "yes"}
    if number == 1:
        app.manager(uid).fire("firstPageReceived", {"responses": {"name": name, **responses}})
    app.manager(uid).fire("pageReceived", {"number": number, "responses": responses, "userAgent": agent})


def result(instance: TaskInstance) -> Any:
    return instance.metadata[TaskInstance.META_RESULT]


def failure_line(instance: TaskInstance) -> str:
    return instance.metadata[TaskInstance.META_EXCEPTION_INFO].strip().splitlines()[-1]


def test_questionnaires_run_to_the_end_and_later_tasks_read_earlier_results(app: Pipeline) -> None:
    web, embedded = "q-web", "q-embedded"
    for uid in (web, embedded):
        app.manager(uid).update_configuration(QUESTIONNAIRE)
    # Triggers in an order the framework must not care about.
    page(app, web, 2, agent="Chrome/125.0")
    app.manager(web).fire("questionnaireComplete")
    page(app, web, 1)
    page(app, web, 3)
    app.manager(embedded).fire("isEmbeddedApplication")
    page(app, embedded, 1, name="Ada")
    app.manager(embedded).fire("questionnaireComplete")

    state = app.wait_finalized(web)
    subject = {"subjectId": subject_id(web, "Marcus"), "name": "Marcus"}
    assert result(state.instances["t_importSubject#0"]) == subject
    responses = [i for i in state.instances_of("t_importResponses")]
    assert [i.status for i in responses] == ["finished"] * 3
    # Each import read the subject id from t_importSubject's result, cascaded as kwargs.
    assert sorted(result(i)["page"] for i in responses) == [1, 2, 3]
    assert {result(i)["subjectId"] for i in responses} == {subject["subjectId"]}
    assert all(i.kwargs["t_importSubject"] == subject for i in responses)
    # Browser metadata ran once, with whichever page arrived first.
    [browser] = state.instances_of("t_importBrowserMetadata")
    assert browser.status == "finished"
    assert result(browser) == {"subjectId": subject["subjectId"], "browser": "Chrome"}
    assert state.unresolved_tasks() == []

    state = app.wait_finalized(embedded)
    assert state.instances["t_importSubject#0"].status == "finished"
    assert state.instances["t_importResponses#0"].status == "finished"
    assert state.instances["t_importBrowserMetadata#0"].status == "abandoned"


def test_a_task_that_failed_once_is_replayed_through_the_kafka_storage(app: Pipeline) -> None:
    uid = "flaky"
    app.manager(uid).update_configuration(
        {
            "t_flaky": {"after": ["go"], "run": FailsOnce.name},
            "t_next": {"after": ["t_flaky"], "run": WhoRunsMe.name},
        }
    )
    app.manager(uid).fire("go", {"attempt": "first"})
    failed = app.wait_status(uid, "t_flaky#0", "failed")
    assert failed.metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.ValueError"
    assert failure_line(failed) == "ValueError: t_flaky#0 fails on its first attempt."

    # Support replays it with corrected kwargs, through the kafka storage, as an admin page would.
    manager = app.manager(uid)
    instance = manager.storage.instances["t_flaky#0"]
    manager.replay_failed_instance(instance, {"go": {"attempt": "second"}})

    state = app.wait_finalized(uid)
    assert state.instances["t_flaky#0"].status == "replayed"
    clone = state.instances["t_flaky#1"]
    assert clone.status == "finished"
    assert clone.metadata[TaskInstance.META_PARENT] == "t_flaky#0"
    assert result(clone) == {"attempt": 2, "kwargs": {"go": {"attempt": "second"}}}
    assert state.instances["t_next#0"].status == "finished"
    assert state.instances["t_next#0"].kwargs["t_flaky"] == result(clone)


def test_a_task_retries_with_a_cooldown_then_succeeds(app: Pipeline) -> None:
    uid = "retrying"
    app.manager(uid).update_configuration(
        {
            "t_retry": {
                "after": ["go"],
                "run": RetriesThenSucceeds.name,
                "withParams": {"retry": {"times": 2, "cooldown": 0.5}},
            }
        }
    )
    app.manager(uid).fire("go")
    state = app.wait_finalized(uid)
    first, second, third = (state.instances[f"t_retry#{n}"] for n in range(3))
    assert [first.status, second.status, third.status] == ["replayed", "replayed", "finished"]
    assert result(third) == {"attempts": 3}
    assert first.metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.RuntimeError"
    for number, clone in ((1, second), (2, third)):
        assert clone.depth == number
        assert clone.metadata[TaskInstance.META_PARENT] == f"t_retry#{number - 1}"
        assert clone.metadata[TaskInstance.META_COOLDOWN] == 0.5
        # The executor held the request back for the cooldown before running it.
        stamps = clone.metadata[TaskInstance.META_TIMESTAMPS]
        assert (stamps["running"] - stamps["created"]).total_seconds() >= 0.5


def test_a_task_that_keeps_retrying_fails_with_max_retries_exceeded(app: Pipeline) -> None:
    uid = "doomed"
    app.manager(uid).update_configuration({"t_doomed": {"after": ["go"], "run": AlwaysRetries.name}})
    app.manager(uid).fire("go")
    last = app.wait_status(uid, f"t_doomed#{AlwaysRetries.max_retries}", "failed")
    assert last.metadata[TaskInstance.META_EXCEPTION_TYPE] == "stream_triggers.task.MaxRetriesExceeded"
    assert failure_line(last) == (
        "stream_triggers.task.MaxRetriesExceeded: Attempting retry #3, but `self.max_retries` = 2."
    )
    # The last retry's reason travels in the exception's context.
    context = last.metadata[TaskInstance.META_EXCEPTION_CONTEXT]
    assert context["replay_metadata"][TaskInstance.META_EXCEPTION_TYPE] == "builtins.ConnectionError"
    state = app.state(uid)
    assert [i.status for i in state.instances_of("t_doomed")] == ["replayed", "replayed", "failed"]
    assert [t.name for t in state.unresolved_tasks()] == ["t_doomed"]


def test_a_warning_logged_by_the_task_is_recorded_on_the_instance(app: Pipeline) -> None:
    uid = "warns"
    app.manager(uid).update_configuration({"t_check": {"after": ["pageReceived"], "run": WarnsOnOddAnswers.name}})
    app.manager(uid).fire("pageReceived", {"number": 1, "responses": {"q1": "yes", "q2": "maybe"}})
    instance = app.wait_status(uid, "t_check#0", "finished")
    assert instance.metadata[TaskInstance.META_LOG_LEVEL] == logging.WARNING == 30
    assert instance.log_level_name == "WARNING"
    assert instance.logs_resolved  # below ERROR: nothing for support to look at
    assert result(instance) == {"odd": ["q2"]}


def test_a_task_fires_a_trigger_through_its_context_manager(app: Pipeline) -> None:
    uid = "follow-up"
    app.manager(uid).update_configuration(
        {
            "t_check": {"after": ["go"], "run": FiresFollowUp.name},
            "t_followUp": {"after": ["followUp"], "run": WhoRunsMe.name},
        }
    )
    app.manager(uid).fire("go")
    state = app.wait_finalized(uid)
    assert state.instances["t_check#0"].status == "finished"
    follow_up = state.instances["t_followUp#0"]
    assert follow_up.status == "finished"
    assert follow_up.kwargs == {"followUp": {"from": "t_check#0", "reason": "checked"}}


def test_an_unknown_task_fails_clearly_and_the_executor_carries_on(app: Pipeline, executor: Proc) -> None:
    uid = "ghost"
    app.manager(uid).update_configuration(
        {
            "t_ghost": {"after": ["go"], "run": "stream_triggers.cli.demo_tasks.NoSuchTask"},
            "t_alive": {"after": ["go"], "run": WhoRunsMe.name},
        }
    )
    app.manager(uid).fire("go")
    ghost = app.wait_status(uid, "t_ghost#0", "failed")
    assert ghost.metadata[TaskInstance.META_EXCEPTION_TYPE] == "stream_triggers.task.UnknownTask"
    assert "No TriggerTask named 'stream_triggers.cli.demo_tasks.NoSuchTask' is registered" in failure_line(ghost)
    alive = app.wait_status(uid, "t_alive#0", "finished")
    assert result(alive) == {"pid": executor.pid}
    assert executor.running


def test_a_task_of_a_module_that_failed_to_import_fails_clearly(app: Pipeline, executor: Proc) -> None:
    # The executor started although one --import failed, and said why.
    executor.wait_log(f"cannot import task module {MISSING_MODULE}")
    uid = "missing-module"
    app.manager(uid).update_configuration({"t_lost": {"after": ["go"], "run": f"{MISSING_MODULE}.Task"}})
    app.manager(uid).fire("go")
    lost = app.wait_status(uid, "t_lost#0", "failed")
    line = failure_line(lost)
    assert f"No TriggerTask named '{MISSING_MODULE}.Task' is registered" in line
    assert f"No module named '{MISSING_MODULE}'" in line
    assert executor.running


def test_an_undecodable_task_run_goes_to_dead_letter_and_the_executor_carries_on(app: Pipeline, executor: Proc) -> None:
    topics = app.topics
    garbage = b"\x00not avro at all"
    wrong = encode("TriggerFired", event_record("TriggerFired", "poison", trigger="x", kwargs_json=jsonx.dumps({})))
    bad_kwargs = encode(
        "TaskRunRequested",
        event_record(
            "TaskRunRequested",
            "poison",
            cause_event_id="-",
            cause_produced_at=0,
            instance="t_x#0",
            task="t_x",
            run=WhoRunsMe.name,
            runner="kafka",
            manager="default",
            kwargs_json="{not json",
            depth=0,
            not_before=0,
        ),
    )
    for value in (garbage, wrong, bad_kwargs):
        app.produce_raw(b"poison", value, topic=topics.task_runs)

    def dead_letters() -> list[Any]:
        return [r for r in read_topic(app.bootstrap, topics.dead_letter) if r.key == b"poison"]

    letters = wait_until(lambda: len(dead_letters()) >= 3 and dead_letters(), "three dead letters")
    by_value = {letter["value"]: letter for letter in letters}
    assert by_value[garbage]["reason"] == "undecodable"
    assert by_value[wrong]["reason"] == "unexpected_record"
    assert by_value[bad_kwargs]["reason"] == "invalid_payload"
    # Dead-lettered requests are committed past, like any other.
    group, poisoned = executor.option("--group"), by_value[bad_kwargs]["partition"]
    last = max(letter["offset"] for letter in letters)
    wait_until(lambda: committed_offset(app.bootstrap, topics.task_runs, group, poisoned) > last, "commit past them")
    for letter in letters:
        assert letter.type == "DeadLetter"
        assert letter["topic"] == topics.task_runs
        assert letter["session_uid"] == "poison"
        assert letter["event_id"] == f"executor:{letter['partition']}:{letter['offset']}:dead-letter"

    uid = "after-poison"
    app.manager(uid).update_configuration({"t_alive": {"after": ["go"], "run": WhoRunsMe.name}})
    app.manager(uid).fire("go")
    assert result(app.wait_status(uid, "t_alive#0", "finished")) == {"pid": executor.pid}
    assert executor.running


def test_the_kafka_storage_reads_what_the_worker_committed(app: Pipeline) -> None:
    """Reads through the kafka storage (the admin side) see results, failures and unresolved tasks."""
    uid = "admin-view"
    app.manager(uid).update_configuration(
        {
            "t_flaky": {"after": ["go"], "run": FailsOnce.name},
            "t_ok": {"after": ["go"], "run": WhoRunsMe.name},
        }
    )
    app.manager(uid).fire("go")
    app.wait_status(uid, "t_flaky#0", "failed")
    app.wait_status(uid, "t_ok#0", "finished")
    storage = app.storage(uid)
    assert [t.name for t in storage.get_unresolved_tasks()] == ["t_flaky"]
    assert [i.name for i in storage.get_unresolved_instances()] == ["t_flaky#0"]
    assert storage.latest_kwargs["go"] == {}
    assert storage.instances["t_ok#0"].metadata[TaskInstance.META_RESULT]["pid"] > 0
