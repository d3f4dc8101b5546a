"""What ``inspect`` and ``tail`` print, on states and records built in process (no broker)."""

from __future__ import annotations

import json
import re

import pytest

from stream_triggers.cli.demo_tasks import QUESTIONNAIRE, FailsOnce, WarnsOnOddAnswers
from stream_triggers.cli.inspect import render_session, session_document
from stream_triggers.cli.tail import format_record, resolve_topic
from stream_triggers.events import jsonx
from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.events.state_format import encode_state
from stream_triggers.manager import FinalizingTriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.memory import MemoryStorage, MemoryStore


@pytest.fixture
def manager() -> FinalizingTriggerManager:
    """A questionnaire with an extra task that fails and one that warns, run in process."""
    manager = FinalizingTriggerManager(MemoryStorage("s-1", MemoryStore()))
    manager.update_configuration(
        {
            **QUESTIONNAIRE,
            "t_flaky": {"after": ["questionnaireComplete"], "run": FailsOnce.name},
            "t_check": {"after": ["pageReceived"], "run": WarnsOnOddAnswers.name},
        }
    )
    manager.fire("firstPageReceived", {"responses": {"name": "Marcus"}})
    manager.fire("pageReceived", {"number": 1, "responses": {"q1": "maybe"}, "userAgent": "Firefox/126.0"})
    manager.fire("questionnaireComplete")
    ThreadingTaskRunner.join_all()
    manager.storage.invalidate_cache()
    return manager


def test_the_document_is_json_with_results_failures_and_log_levels(manager: FinalizingTriggerManager) -> None:
    document = session_document("s-1", manager.storage.state)
    assert json.loads(json.dumps(document)) == document  # plain JSON all the way down
    assert document["finalized"] is False
    assert document["unresolved_tasks"] == ["t_flaky"]
    assert document["unresolved_instances"] == ["t_flaky#0"]
    instances = {i["name"]: i for i in document["instances"]}
    flaky = instances["t_flaky#0"]
    assert flaky["status"] == "failed"
    assert flaky["failure"]["type"] == "builtins.ValueError"
    assert flaky["failure"]["message"] == "ValueError: t_flaky#0 fails on its first attempt."
    assert flaky["failure"]["traceback"].startswith("Traceback (most recent call last):")
    assert flaky["result"] is None
    check = instances["t_check#0"]
    assert (check["log_level"], check["log_level_name"], check["result"]) == (30, "WARNING", {"odd": ["q1"]})
    subject = instances["t_importSubject#0"]
    assert subject["kwargs"]["firstPageReceived"] == {"responses": {"name": "Marcus"}}
    assert set(subject["timestamps"]) == {"created", "lastModified", "scheduled", "running", "finished"}
    assert document["tasks"]["t_importBrowserMetadata"]["unless"] == ["isEmbeddedApplication"]
    assert "using" not in document["tasks"]["t_importSubject"]  # unset directives are left out


def test_an_unstarted_instance_says_what_it_waits_for() -> None:
    manager = FinalizingTriggerManager(MemoryStorage("s-2", MemoryStore()))
    manager.update_configuration(QUESTIONNAIRE)
    manager.fire("firstPageReceived", {"responses": {"name": "Ada"}})
    document = session_document("s-2", manager.storage.state)
    [subject] = document["instances"]
    assert subject["waiting_for"] == ["questionnaireComplete"]
    text = render_session("s-2", manager.storage.state)
    assert re.search(r"^  t_importSubject#0 +unstarted +- +\S+ \S+ +waiting for questionnaireComplete$", text, re.M)


def test_the_text_has_a_summary_and_a_table_per_part(manager: FinalizingTriggerManager) -> None:
    text = render_session("s-1", manager.storage.state)
    lines = text.splitlines()
    assert lines[0] == "session s-1: 5 task(s), 1 failed, 4 finished"
    for heading in ("tasks", "instances", "latest trigger kwargs"):
        assert heading in lines
    assert "unresolved tasks: t_flaky" in lines
    [flaky] = [line for line in lines if line.strip().startswith("t_flaky#0")]
    assert flaky.split()[:2] == ["t_flaky#0", "failed"]
    assert flaky.endswith("ValueError: t_flaky#0 fails on its first attempt.")
    [check] = [line for line in lines if line.strip().startswith("t_check#0")]
    assert check.split()[:3] == ["t_check#0", "finished", "WARNING"]
    assert all(len(line) < 200 for line in lines)  # long cells are cut


def test_tail_lines_show_json_fields_as_json_and_never_fail() -> None:
    record = event_record("TriggerFired", "s 1", event_id="e1", produced_at_us=0, trigger="go", kwargs_json="{}")
    record["kwargs_json"] = jsonx.dumps({"page": 2, "note": "a b"})
    line = format_record(3, 17, b"s 1", encode("TriggerFired", record))
    assert line == (
        '3:17 key="s 1" TriggerFired event_id=e1 produced_at=0 trigger=go kwargs_json={"page":2,"note":"a b"}'
    )
    assert format_record(0, 1, None, None) == "0:1 key=- <tombstone>"
    assert format_record(0, 2, b"\xff", b"junk").startswith("0:2 key=b'\\xff' <undecodable undecodable: ")


def test_tail_summarises_a_changelog_snapshot(manager: FinalizingTriggerManager) -> None:
    state = manager.storage.state
    snapshot = {
        "session_uid": "s-1",
        "produced_at": 1_700_000_000_000_000,
        "state": encode_state(state),
        "input_partition": 2,
        "applied_offset": 41,
    }
    line = format_record(2, 9, b"s-1", encode("SessionSnapshot", snapshot))
    assert line.startswith("2:9 key=s-1 SessionSnapshot produced_at=2023-11-14T22:13:20.000000Z state=<")
    assert "applied_offset=41 | state: 5 task(s); instances: 1 failed, 4 finished; unresolved: t_flaky;" in line


def test_tail_takes_short_or_full_names_and_refuses_others() -> None:
    existing = {"p.events", "p.task-runs", "other"}
    assert resolve_topic("events", "p", existing) == "p.events"
    assert resolve_topic("p.task-runs", "p", existing) == "p.task-runs"
    assert resolve_topic("other", "p", existing) == "other"
    with pytest.raises(LookupError, match=r"no topic 'p.sessions'.*topics under that prefix: p.events, p.task-runs"):
        resolve_topic("sessions", "p", existing)
