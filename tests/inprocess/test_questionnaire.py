"""The getting-started questionnaire, end to end in process, with its tasks defined here."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.task import TaskContext, TriggerTask
from tests.support import Session


class Database:
    """Stands in for the SQL and document databases the tasks write to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.subjects: dict[int, dict[str, Any]] = {}
        self.responses: list[tuple[int, int, dict[str, Any]]] = []
        self.browsers: list[tuple[int, str]] = []
        self._ids = itertools.count(1)

    def new_subject(self, data: dict[str, Any]) -> int:
        with self.lock:
            subject_id = next(self._ids)
            self.subjects[subject_id] = data
            return subject_id


DB = Database()


class ImportSubject(TriggerTask):
    """Creates the subject from the first page, once the questionnaire is complete."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        page = context.trigger_kwargs["firstPageReceived"]["responses"]
        if not page.get("name"):
            raise ValueError("The first page has no name.")
        return {"subjectId": DB.new_subject({"name": page["name"], "birthday": page["birthday"]})}


class ImportResponses(TriggerTask):
    """Stores one page of responses for the subject."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        subject_id = context.trigger_kwargs["t_importSubject"]["subjectId"]
        page = context.trigger_kwargs["pageReceived"]
        with DB.lock:
            DB.responses.append((subject_id, page["number"], page["responses"]))
        return {"page": page["number"]}


class ImportBrowserMetadata(TriggerTask):
    """Looks up the browser behind one (any) page's user agent."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        subject_id = context.trigger_kwargs["t_importSubject"]["subjectId"]
        agent = context.trigger_kwargs["pageReceived"]["userAgent"]
        with DB.lock:
            DB.browsers.append((subject_id, agent))
        return {"browser": agent.split("/")[0]}


CONFIGURATION = {
    "t_importSubject": {
        "after": ["firstPageReceived", "questionnaireComplete"],
        "run": ImportSubject.name,
    },
    "t_importResponses": {
        "after": ["t_importSubject"],
        "andEvery": "pageReceived",
        "run": ImportResponses.name,
    },
    "t_importBrowserMetadata": {
        "after": ["t_importSubject", "pageReceived"],
        "unless": ["isEmbeddedApplication"],
        "run": ImportBrowserMetadata.name,
    },
}

MARCUS = {"name": "Marcus", "birthday": "1990-04-01"}


@pytest.fixture
def questionnaire(make_session: Any) -> Iterator[Session]:
    """A freshly started questionnaire session (and an empty database)."""
    DB.reset()
    session = make_session("questionnaire-1")
    session.manager.update_configuration(CONFIGURATION)
    yield session


def page(session: Session, number: int, agent: str = "Firefox/120.0", first: dict | None = None) -> None:
    """What the responses view does for one page."""
    responses = first if first is not None else {f"q{number}": "yes"}
    if number == 1:
        session.manager.fire("firstPageReceived", {"responses": responses})
    session.manager.fire(
        trigger_name="pageReceived",
        trigger_kwargs={"number": number, "responses": responses, "userAgent": agent},
    )


def test_a_web_questionnaire_from_start_to_finish(questionnaire: Session) -> None:
    page(questionnaire, 1, first=MARCUS)
    page(questionnaire, 2, agent="Chrome/119.0")
    ThreadingTaskRunner.join_all()

    # Nothing is imported before the questionnaire is complete.
    questionnaire.assertInstanceUnstarted("t_importSubject#0")
    questionnaire.assertInstanceMissing("t_importBrowserMetadata#1")
    questionnaire.assertUnresolvedTasks(["t_importBrowserMetadata", "t_importResponses", "t_importSubject"])
    assert DB.subjects == {}

    questionnaire.fire("questionnaireComplete")
    questionnaire.assertInstanceFinished("t_importSubject#0", {"subjectId": 1})
    assert DB.subjects == {1: MARCUS}
    # One import per page received so far...
    questionnaire.assertInstanceFinished("t_importResponses#0", {"page": 1})
    questionnaire.assertInstanceFinished("t_importResponses#1", {"page": 2})
    # ... but the browser metadata only once, from the first page that arrived.
    questionnaire.assertInstanceFinished("t_importBrowserMetadata#0", {"browser": "Firefox"})
    questionnaire.assertInstanceMissing("t_importBrowserMetadata#1")

    # A page arriving after completion is imported at once.
    page(questionnaire, 3)
    ThreadingTaskRunner.join_all()
    questionnaire.assertInstanceFinished("t_importResponses#2", {"page": 3})
    questionnaire.assertInstanceMissing("t_importBrowserMetadata#1")

    assert sorted((s, n) for s, n, _ in DB.responses) == [(1, 1), (1, 2), (1, 3)]
    assert DB.browsers == [(1, "Firefox/120.0")]
    questionnaire.assertUnresolvedTasks([])
    questionnaire.assertUnresolvedInstances([])


def test_an_embedded_questionnaire_skips_the_browser_lookup(questionnaire: Session) -> None:
    page(questionnaire, 1, first=MARCUS)
    questionnaire.manager.fire("isEmbeddedApplication")
    page(questionnaire, 2)
    questionnaire.manager.fire("questionnaireComplete")
    ThreadingTaskRunner.join_all()

    questionnaire.assertInstanceFinished("t_importSubject#0", {"subjectId": 1})
    questionnaire.assertInstanceFinished("t_importResponses#0", {"page": 1})
    questionnaire.assertInstanceFinished("t_importResponses#1", {"page": 2})
    questionnaire.assertInstanceAbandoned("t_importBrowserMetadata#0")
    questionnaire.assertInstanceMissing("t_importBrowserMetadata#1")
    assert DB.browsers == []
    questionnaire.assertUnresolvedTasks([])


def test_embedded_detected_before_any_page(questionnaire: Session) -> None:
    questionnaire.fire("isEmbeddedApplication")
    questionnaire.assertInstanceAbandoned("t_importBrowserMetadata#0")

    page(questionnaire, 1, first=MARCUS)
    questionnaire.fire("questionnaireComplete")
    questionnaire.assertInstanceAbandoned("t_importBrowserMetadata#0")
    questionnaire.assertInstanceMissing("t_importBrowserMetadata#1")
    questionnaire.assertInstanceFinished("t_importResponses#0", {"page": 1})
    assert DB.browsers == []


def test_an_abandoned_questionnaire_imports_nothing(questionnaire: Session) -> None:
    page(questionnaire, 1, first=MARCUS)
    page(questionnaire, 2)
    ThreadingTaskRunner.join_all()

    questionnaire.assertUnresolvedTasks(["t_importBrowserMetadata", "t_importResponses", "t_importSubject"])
    questionnaire.assertUnresolvedInstances(
        ["t_importBrowserMetadata#0", "t_importResponses#0", "t_importResponses#1", "t_importSubject#0"]
    )
    assert DB.subjects == {} and DB.responses == [] and DB.browsers == []


def test_a_failed_subject_import_is_replayed_with_corrected_responses(questionnaire: Session) -> None:
    page(questionnaire, 1, first={"name": "", "birthday": "1990-04-01"})
    questionnaire.fire("questionnaireComplete")
    questionnaire.assertInstanceFailed("t_importSubject#0", ValueError)
    questionnaire.assertInstanceUnstarted("t_importResponses#0")
    questionnaire.assertInstanceUnstarted("t_importBrowserMetadata#0")

    # Support fixes the responses and replays the import with them.
    failed = questionnaire.storage["t_importSubject#0"]
    replacement = dict(failed.kwargs)
    replacement["firstPageReceived"] = {"responses": MARCUS}
    questionnaire.manager.replay_failed_instance(failed, replacement)
    ThreadingTaskRunner.join_all()

    questionnaire.assertInstanceReplayed("t_importSubject#0")
    questionnaire.assertInstanceFinished("t_importSubject#1", {"subjectId": 1})
    questionnaire.assertInstanceFinished("t_importResponses#0", {"page": 1})
    questionnaire.assertInstanceFinished("t_importBrowserMetadata#0", {"browser": "Firefox"})
    questionnaire.assertUnresolvedTasks([])


def test_two_questionnaires_do_not_mix(make_session: Any) -> None:
    DB.reset()
    first, second = make_session("questionnaire-a"), make_session("questionnaire-b")
    for session in (first, second):
        session.manager.update_configuration(CONFIGURATION)
    page(first, 1, first=MARCUS)
    page(second, 1, first={"name": "Ada", "birthday": "1815-12-10"})
    second.manager.fire("isEmbeddedApplication")
    first.manager.fire("questionnaireComplete")
    ThreadingTaskRunner.join_all()

    first.assertInstanceFinished("t_importBrowserMetadata#0", {"browser": "Firefox"})
    second.assertInstanceAbandoned("t_importBrowserMetadata#0")
    second.assertInstanceUnstarted("t_importSubject#0")
    assert list(DB.subjects.values()) == [MARCUS]
