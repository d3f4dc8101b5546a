"""Fault: the broker paused (SIGSTOP) for 15 s under load, then resumed.

Every client's connection hangs: the worker's fetches, produces and heartbeats, the
application's publishes.  The group's session timeout (6 s) passes on the worker's side
of the clock but not on the frozen coordinator's.  What must hold: nothing lost or
applied twice, every expected output at least once, the worker serving again without a
human, and the application's publishes made during the pause delivered (its kafka
storage waits up to its ``timeout_s``, 30 s here: longer than the pause, which the
default, 10 s, is not).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stream_triggers.storages.kafka import KafkaStorage
from tests.stream import workload
from tests.support import App, Pipeline, Readers, RestartableBroker, committed_offsets, end_offsets, newest_snapshots

SESSIONS = 200
RATE = 100.0
PAUSE_S = 15.0
APP_TIMEOUT_S = 30.0
"""The application's kafka storage ``timeout_s``: how long a publish may wait for the broker."""


class PatientApp(App):
    """The application side, its kafka storage waiting up to ``APP_TIMEOUT_S`` for each publish."""

    def storage(self, uid: str, **options: Any) -> KafkaStorage:
        return super().storage(uid, **{"timeout_s": APP_TIMEOUT_S, **options})


@pytest.mark.broker
@pytest.mark.slow
def test_broker_paused_15_s_under_load_loses_nothing(
    cluster: RestartableBroker, on_own_broker: tuple[Pipeline, Readers, App]
) -> None:
    """Fault: SIGSTOP of the broker for 15 s while a worker applies a steady stream of inputs."""
    workers, readers, app = on_own_broker
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))
    worker = workers.worker("w0", extra=["--batch-size", "64"])
    worker.wait_assigned()
    patient = PatientApp(app.bootstrap, app.topics)
    publisher = workload.Publisher(patient, workload.schedule(SESSIONS), RATE)
    results.wait_count(expected // 4, timeout=90)

    cluster.pause()
    try:
        time.sleep(PAUSE_S)  # the fault itself is a duration: nothing to wait for
    finally:
        cluster.resume()
    paused_at = len(results.records)

    publisher.finish()
    patient.close()
    results.wait_count(expected, timeout=120)
    finalized.wait_count(SESSIONS, timeout=90)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert worker.running, f"the worker exited after the pause:\n{worker.tail()}"
    assert worker.terminate() == 0

    workload.check_outputs(SESSIONS, results.records, finalized.records)
    events = readers["events"].read_to_end()
    snapshots, _stale = newest_snapshots(app)
    workload.check_state(SESSIONS, snapshots, events)
    ends = end_offsets(events)
    assert committed_offsets(app.bootstrap, app.topics.events, workers.group, ends) == ends
    assert not readers["dead-letter"].read_to_end()
    assert paused_at < expected, "the stream ended before the pause"
