"""Duplicate and late status reports (an executor re-ran a task, a report arrived late) change nothing."""

from __future__ import annotations

import pytest

from stream_triggers.storages.kafka import KafkaStorage
from tests.support import App, Pipeline, Readers, kwargs_of, wait_until

UID = "dup-1"
CONFIGURATION = {
    "t_a": {"after": ["start"], "run": "A"},
    "t_b": {"after": ["t_a"], "run": "B"},
    "t_every": {"after": ["begin"], "andEvery": "t_a", "run": "E"},
}


@pytest.mark.broker
@pytest.mark.slow
def test_a_second_finished_report_changes_nothing(workers: Pipeline, readers: Readers, app: App) -> None:
    workers.worker().wait_assigned()
    runs, results, sessions = readers["task-runs"], readers["task-results"], readers["sessions"]
    app.configure(UID, CONFIGURATION)
    app.fire(UID, "begin")
    app.fire(UID, "start", {"n": 1})
    runs.wait_count(1)
    app.running(UID, "t_a#0")
    app.finished(UID, "t_a#0", {"first": True})
    runs.wait_count(3)
    results.wait_count(1)

    # The executor re-ran t_a#0 (at least once delivery) and reports again, plus stragglers.
    app.running(UID, "t_a#0")
    app.finished(UID, "t_a#0", {"first": False})
    app.failed(UID, "t_a#0", "a late failure")
    app.reported(UID, "t_a#0", "skipped")
    # Then the rest of the session, as a barrier: its outputs come after anything the duplicates caused.
    for instance in ("t_b#0", "t_every#0"):
        app.running(UID, instance)
        app.finished(UID, instance, {"of": instance})
    sessions.wait_count(1)
    for reader in (runs, results, sessions):
        reader.settle(quiet_s=1.0)

    got = [(r["instance"], kwargs_of(r)) for r in runs.records]
    assert got[0] == ("t_a#0", {"start": {"n": 1}})
    assert sorted(got[1:], key=repr) == [  # one cascade of t_a, whatever the order within it
        ("t_b#0", {"t_a": {"first": True}}),
        ("t_every#0", {"begin": {}, "t_a": {"first": True}}),
    ]
    assert [(r["instance"], r["status"]) for r in results.records] == [
        ("t_a#0", "finished"),
        ("t_b#0", "finished"),
        ("t_every#0", "finished"),
    ]
    assert len(sessions.records) == 1
    assert not readers["dead-letter"].read_to_end(), "duplicate reports are ignored, not dead-lettered"

    def committed() -> KafkaStorage:
        return KafkaStorage(UID, app.bootstrap, app.topics.prefix)

    wait_until(lambda: "sessionFinalized" in committed().latest_kwargs, "the finalized state committed")
    storage = committed()
    assert {n: str(i.status) for n, i in storage.instances.items()} == {
        "t_a#0": "finished",
        "t_b#0": "finished",
        "t_every#0": "finished",
    }
    assert storage.instances["t_a#0"].metadata["result"] == {"first": True}
    assert storage.latest_kwargs["t_a"] == {"first": True}
