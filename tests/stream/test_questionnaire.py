"""The getting-started questionnaire through a real stream worker, end to end.

Sessions fire their triggers in shuffled (seeded) orders, interleaved with each other;
a fake executor answers every ``task-runs`` record with running + finished (or failed)
reports through ``TriggerManager(KafkaStorage(...))``, and support replays or skips the
failed imports.  Afterwards every output topic is checked record by record against
what the original framework's semantics prescribe, and the committed state is read
back through the kafka storage.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from stream_triggers.runners.base import merge_dict_recursive
from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound
from tests.support import App, Pipeline, Readers, Record, kwargs_of, wait_until

SUBJECT, RESPONSES, BROWSER = "t_importSubject", "t_importResponses", "t_importBrowserMetadata"
SUBJECT_PARAMS = {"firstPageReceived": {"source": "web"}, "questionnaireComplete": {"notify": False}}
BROWSER_PARAMS = {"pageReceived": {"lookup": "geoip"}}
CONFIGURATION = {
    SUBJECT: {
        "after": ["firstPageReceived", "questionnaireComplete"],
        "run": "questionnaire.ImportSubject",
        "withParams": SUBJECT_PARAMS,
    },
    RESPONSES: {"after": [SUBJECT], "andEvery": "pageReceived", "run": "questionnaire.ImportResponses"},
    BROWSER: {
        "after": [SUBJECT, "pageReceived"],
        "unless": ["isEmbeddedApplication"],
        "run": "questionnaire.ImportBrowserMetadata",
        "withParams": BROWSER_PARAMS,
    },
}
RUN = {name: config["run"] for name, config in CONFIGURATION.items()}
AGENTS = ("Firefox/120.0", "Chrome/119.0", "Safari/17.1", "Edge/118.0")


@dataclass
class Scenario:
    uid: str
    pages: int
    embedded: bool = False
    subject: str = "finish"  # or "replay" / "skip": the first import fails, support steps in
    late_page: bool = False  # one more page after the session was finalized
    order: tuple[tuple[str, int], ...] = ()  # the shuffled (trigger, page number) order

    @property
    def subject_id(self) -> int:
        return 1000 + int(self.uid.rsplit("-", 1)[1])

    def first(self) -> dict[str, Any]:
        return {"name": f"Subject {self.uid}", "birthday": "1990-04-01"}

    def page(self, number: int) -> dict[str, Any]:
        return {"number": number, "responses": {f"q{number}": "yes"}, "userAgent": AGENTS[number % len(AGENTS)]}

    def arrived_pages(self) -> list[int]:
        return [n for trigger, n in self.order if trigger == "pageReceived"]


SCENARIOS = [
    Scenario("q-1", pages=2),
    Scenario("q-2", pages=3, late_page=True),
    Scenario("q-3", pages=2, embedded=True),
    Scenario("q-4", pages=2, subject="replay"),
    Scenario("q-5", pages=1, subject="skip"),
    Scenario("q-6", pages=3, embedded=True, late_page=True),
]
SKIP_RESULT = {"subjectId": 555, "skipped": True}


def fixed_first_page(scenario: Scenario) -> dict[str, Any]:
    """Replacement kwargs support replays the failed subject import with."""
    return {
        "firstPageReceived": {"responses": {"name": f"Corrected {scenario.uid}", "birthday": "1990-04-01"}},
        "questionnaireComplete": {"completedBy": "support"},
    }


def shuffled_events(rng: random.Random) -> list[tuple[Scenario, str, int]]:
    """Every scenario's triggers, shuffled within the session, sessions interleaved."""
    queues: list[list[tuple[Scenario, str, int]]] = []
    for scenario in SCENARIOS:
        triggers = [("firstPageReceived", 0), ("questionnaireComplete", 0)]
        triggers += [("pageReceived", n) for n in range(1, scenario.pages + 1)]
        if scenario.embedded:
            triggers.append(("isEmbeddedApplication", 0))
        rng.shuffle(triggers)
        scenario.order = tuple(triggers)
        queues.append([(scenario, trigger, n) for trigger, n in triggers])
    merged = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        merged.append(queue.pop(0))
    return merged


class EventIndex:
    """Input events (read back from the events topic) by what they were, to check ``cause_event_id``."""

    def __init__(self, records: list[Record]) -> None:
        self.by_key: dict[tuple[Any, ...], Record] = {}
        for record in records:
            key = self.key(record)
            assert key not in self.by_key, f"two input events {key}"
            self.by_key[key] = record

    @staticmethod
    def key(record: Record) -> tuple[Any, ...]:
        uid, kind = record.session, record.type
        if kind == "TriggerFired":
            kwargs = kwargs_of(record)
            return (uid, "fire", record["trigger"], kwargs.get("number", 0) if isinstance(kwargs, dict) else 0)
        if kind == "InstanceStatusReported":
            return (uid, "report", record["instance"], record["status"])
        if kind in ("ReplayRequested", "SkipRequested"):
            return (uid, kind, record["instance"])
        return (uid, kind)

    def id(self, *key: Any) -> str:
        return self.by_key[key]["event_id"]


@pytest.mark.broker
@pytest.mark.slow
def test_questionnaire_sessions_in_shuffled_orders(workers: Pipeline, readers: Readers, app: App) -> None:
    rng = random.Random(20240501)
    worker = workers.worker()  # default manager: finalizing
    worker.wait_assigned()
    runs, results, sessions = readers["task-runs"], readers["task-results"], readers["sessions"]

    for scenario in SCENARIOS:
        app.configure(scenario.uid, CONFIGURATION)
    for scenario, trigger, number in shuffled_events(rng):
        if trigger == "firstPageReceived":
            kwargs: dict[str, Any] = {"responses": scenario.first()}
        elif trigger == "pageReceived":
            kwargs = scenario.page(number)
        elif trigger == "questionnaireComplete":
            kwargs = {"completedBy": "user"}
        else:
            kwargs = {}
        app.fire(scenario.uid, trigger, kwargs)

    # Nothing but the subject import can run before it finished: one task-run per session.
    runs.wait_count(len(SCENARIOS))
    assert sorted((r.session, r["instance"]) for r in runs.records) == [(s.uid, f"{SUBJECT}#0") for s in SCENARIOS]
    # The committed state says so too (the changelog follows the outputs closely).
    wait_until(lambda: committed_status(app, SCENARIOS[0].uid, f"{SUBJECT}#0") == "scheduled", "SUBJECT#0 scheduled")
    storage = KafkaStorage(SCENARIOS[0].uid, app.bootstrap, app.topics.prefix)
    assert sorted(c.name for c in storage.get_unresolved_tasks()) == sorted(CONFIGURATION)

    # The fake executor and support desk, until every session is finalized.
    late_fired: set[str] = set()
    handled_runs: set[str] = set()
    handled_results: set[str] = set()
    by_uid = {s.uid: s for s in SCENARIOS}
    expected_results = {s.uid: expected_result_count(s) for s in SCENARIOS}
    deadline = time.monotonic() + 90
    while True:
        for reader in (runs, results, sessions):
            reader.poll(0.05)
        for record in list(runs.records):
            if record["event_id"] in handled_runs:
                continue
            handled_runs.add(record["event_id"])
            scenario, instance = by_uid[record.session], record["instance"]
            app.running(scenario.uid, instance, kwargs_of(record))
            if instance == f"{SUBJECT}#0" and scenario.subject != "finish":
                app.failed(scenario.uid, instance, "the first page has no name")
            else:
                app.finished(scenario.uid, instance, fake_result(scenario, record))
        for record in list(results.records):
            if record["event_id"] in handled_results or record["status"] != "failed":
                continue
            handled_results.add(record["event_id"])
            scenario = by_uid[record.session]
            manager = app.manager(scenario.uid)
            if scenario.subject == "replay":
                manager.replay_failed_instance(record["instance"], fixed_first_page(scenario))
            else:
                manager.skip_failed_instance(record["instance"], cascade=True, result=SKIP_RESULT)
        for record in sessions.records:
            scenario = by_uid[record.session]
            if scenario.late_page and scenario.uid not in late_fired:
                late_fired.add(scenario.uid)
                app.fire(scenario.uid, "pageReceived", scenario.page(scenario.pages + 1))
        counts = Counter(r.session for r in results.records)
        if all(counts[uid] >= n for uid, n in expected_results.items()) and len(late_fired) == sum(
            s.late_page for s in SCENARIOS
        ):
            break
        assert time.monotonic() < deadline, f"sessions did not complete: {counts} of {expected_results}"

    for reader in (runs, results, sessions):
        reader.settle(quiet_s=1.0)
    events = EventIndex(readers["events"].read_to_end())

    for scenario in SCENARIOS:
        check_task_runs(scenario, runs.of(scenario.uid), events)
        check_task_results(scenario, results.of(scenario.uid), events)
        check_finalized(scenario, sessions.of(scenario.uid), results.of(scenario.uid))
    for reader in (runs, results, sessions):
        ids = [r["event_id"] for r in reader.records]
        assert len(ids) == len(set(ids)), f"{reader.topic}: duplicate outputs in an uninterrupted run"
        assert all(r.key == r.session.encode() for r in reader.records)
    assert not readers["dead-letter"].read_to_end(), "no input of this test is poison"

    # Reads through the kafka storage return the state the worker committed.
    for scenario in SCENARIOS:
        check_committed_state(app, scenario)
    with pytest.raises(SessionNotFound):
        app.manager("q-never-seen").get_unresolved_tasks()


def committed_status(app: App, uid: str, instance: str) -> str | None:
    try:
        return str(KafkaStorage(uid, app.bootstrap, app.topics.prefix).instances[instance].status)
    except (SessionNotFound, KeyError):
        return None


def fake_result(scenario: Scenario, run: Record) -> dict[str, Any]:
    kwargs = kwargs_of(run)
    task = run["task"]
    if task == SUBJECT:
        return {"subjectId": scenario.subject_id}
    if task == RESPONSES:
        return {"page": kwargs["pageReceived"]["number"]}
    return {"browser": kwargs["pageReceived"]["userAgent"].split("/")[0]}


def expected_result_count(scenario: Scenario) -> int:
    subject = {"finish": 1, "replay": 3, "skip": 2}[scenario.subject]  # failed, replayed/skipped, finished
    return subject + scenario.pages + scenario.late_page + 1  # + browser finished or abandoned


def subject_result(scenario: Scenario) -> dict[str, Any]:
    return SKIP_RESULT if scenario.subject == "skip" else {"subjectId": scenario.subject_id}


def subject_cause(scenario: Scenario, events: EventIndex) -> str:
    """The input whose cascade released the responses and browser imports."""
    uid = scenario.uid
    if scenario.subject == "finish":
        return events.id(uid, "report", f"{SUBJECT}#0", "finished")
    if scenario.subject == "replay":
        return events.id(uid, "report", f"{SUBJECT}#1", "finished")
    return events.id(uid, "SkipRequested", f"{SUBJECT}#0")


def check_task_runs(scenario: Scenario, records: list[Record], events: EventIndex) -> None:
    uid = scenario.uid
    complete = [t for t, _ in scenario.order if t in ("firstPageReceived", "questionnaireComplete")][-1]
    subject_kwargs = {
        "firstPageReceived": {"responses": scenario.first()},
        "questionnaireComplete": {"completedBy": "user"},
    }
    expected: list[tuple[Any, ...]] = [
        (
            f"{SUBJECT}#0",
            SUBJECT,
            0,
            merge_dict_recursive(SUBJECT_PARAMS, subject_kwargs),
            events.id(uid, "fire", complete, 0),
        )
    ]
    if scenario.subject == "replay":
        replacement = fixed_first_page(scenario)
        expected.append(
            (
                f"{SUBJECT}#1",
                SUBJECT,
                1,
                merge_dict_recursive(SUBJECT_PARAMS, replacement),
                events.id(uid, "ReplayRequested", f"{SUBJECT}#0"),
            )
        )
    cascade = subject_cause(scenario, events)
    arrived = scenario.arrived_pages()
    for index, number in enumerate(arrived):
        kwargs = {SUBJECT: subject_result(scenario), "pageReceived": scenario.page(number)}
        expected.append((f"{RESPONSES}#{index}", RESPONSES, 0, kwargs, cascade))
    if not scenario.embedded:
        kwargs = {SUBJECT: subject_result(scenario), "pageReceived": scenario.page(arrived[0])}
        expected.append((f"{BROWSER}#0", BROWSER, 0, merge_dict_recursive(BROWSER_PARAMS, kwargs), cascade))
    if scenario.late_page:
        late = scenario.pages + 1
        kwargs = {SUBJECT: subject_result(scenario), "pageReceived": scenario.page(late)}
        expected.append(
            (f"{RESPONSES}#{scenario.pages}", RESPONSES, 0, kwargs, events.id(uid, "fire", "pageReceived", late))
        )

    got = [(r["instance"], r["task"], r["depth"], kwargs_of(r), r["cause_event_id"]) for r in records]
    assert sorted(got, key=repr) == sorted(expected, key=repr), uid
    for record in records:
        assert record.type == "TaskRunRequested"
        assert (record["run"], record["runner"], record["manager"], record["not_before"]) == (
            RUN[record["task"]],
            "kafka",
            "finalizing",
            0,
        )
        cause = next(e for e in events.by_key.values() if e["event_id"] == record["cause_event_id"])
        assert record["cause_produced_at"] == cause["produced_at"]
    # The subject import (and its replay) are requested before anything it releases.
    assert [r["task"] for r in records[: 1 + (scenario.subject == "replay")]] == [SUBJECT] * (
        1 + (scenario.subject == "replay")
    )


def check_task_results(scenario: Scenario, records: list[Record], events: EventIndex) -> None:
    uid = scenario.uid

    def finished(instance: str) -> tuple[str, str, str, str]:
        return (instance, "finished", "running", events.id(uid, "report", instance, "finished"))

    expected: list[tuple[str, str, str, str]] = []
    if scenario.embedded:
        expected.append((f"{BROWSER}#0", "abandoned", "unstarted", events.id(uid, "fire", "isEmbeddedApplication", 0)))
    first = f"{SUBJECT}#0"
    if scenario.subject == "finish":
        expected.append(finished(first))
    else:
        expected.append((first, "failed", "running", events.id(uid, "report", first, "failed")))
        if scenario.subject == "replay":
            expected.append((first, "replayed", "failed", events.id(uid, "ReplayRequested", first)))
            expected.append(finished(f"{SUBJECT}#1"))
        else:
            expected.append((first, "skipped", "failed", events.id(uid, "SkipRequested", first)))
    # The rest finish in the order the fake executor saw their task-runs.
    released = [f"{RESPONSES}#{i}" for i in range(scenario.pages)] + ([] if scenario.embedded else [f"{BROWSER}#0"])
    got = [(r["instance"], r["status"], r["previous_status"], r["cause_event_id"]) for r in records]
    head = got[: len(expected)]
    assert head == expected, uid
    tail = got[len(expected) :]
    assert sorted(tail) == sorted(
        [finished(i) for i in released] + ([finished(f"{RESPONSES}#{scenario.pages}")] if scenario.late_page else [])
    ), uid
    for record in records:
        assert record.type == "InstanceStatusChanged"
        assert record["task"] == record["instance"].split("#")[0]


def check_finalized(scenario: Scenario, finalized: list[Record], results: list[Record]) -> None:
    """Exactly one SessionFinalized, caused by the input that resolved the last task."""
    assert [r.type for r in finalized] == ["SessionFinalized"], scenario.uid
    late = f"{RESPONSES}#{scenario.pages}" if scenario.late_page else None
    resolved = [r for r in results if r["status"] in ("finished", "skipped", "abandoned") and r["instance"] != late]
    assert finalized[0]["cause_event_id"] == resolved[-1]["cause_event_id"], scenario.uid


def check_committed_state(app: App, scenario: Scenario) -> None:
    expected = {f"{RESPONSES}#{i}": "finished" for i in range(scenario.pages + scenario.late_page)}
    expected[f"{BROWSER}#0"] = "abandoned" if scenario.embedded else "finished"
    expected.update(
        {
            "finish": {f"{SUBJECT}#0": "finished"},
            "replay": {f"{SUBJECT}#0": "replayed", f"{SUBJECT}#1": "finished"},
            "skip": {f"{SUBJECT}#0": "skipped"},
        }[scenario.subject]
    )
    deadline = time.monotonic() + 30
    while True:  # the changelog is written right after the outputs
        manager = app.manager(scenario.uid)
        statuses = {name: str(i.status) for name, i in manager.storage.instances.items()}
        if statuses == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert statuses == expected, scenario.uid
    assert manager.get_unresolved_tasks() == []
    assert manager.get_unresolved_instances() == []
    assert "sessionFinalized" in manager.storage.latest_kwargs
    instances = manager.storage.instances
    assert instances[f"{RESPONSES}#0"].kwargs[SUBJECT] == subject_result(scenario)
    if not scenario.embedded:
        assert instances[f"{BROWSER}#0"].metadata["result"]["browser"] in {a.split("/")[0] for a in AGENTS}
    if scenario.subject == "replay":
        assert instances[f"{SUBJECT}#1"].depth == 1
        assert instances[f"{SUBJECT}#1"].kwargs == fixed_first_page(scenario)
