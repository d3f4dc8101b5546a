"""A worker killed at each step of the batch's commit order (stream/checkpoint.py), then restarted.

The kill is injected (``STREAM_TRIGGERS_FAULTS``) at the 5th batch reaching the step, with
input still arriving; a worker restarted on the same state dir goes on.  Whatever the
step, every session ends exactly as an uninterrupted run leaves it: outputs at least once
(re-sent with the same event ids), no input applied twice, no state lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.faults import POINTS
from tests.support import CRASH_SESSION_TIMEOUT_MS, App, Pipeline, Readers, newest_snapshots

from . import workload

SESSIONS = 100
RATE = 150.0
BATCH = ["--batch-size", "16"]


@pytest.fixture
def workers(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """The short crash session timeout: the restarted worker need not wait out the CLI's 6 s twice."""
    with Pipeline(broker.bootstrap, topics, tmp_path, session_timeout_ms=CRASH_SESSION_TIMEOUT_MS) as started:
        yield started
        print(started.report())  # shown by pytest when the test failed


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_each_step_of_the_commit_order_loses_nothing(
    point: str, workers: Pipeline, readers: Readers, app: App
) -> None:
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))
    crashing = workers.worker("crashing", extra=BATCH, env={"STREAM_TRIGGERS_FAULTS": f"{point}=kill@5"})
    crashing.wait_assigned()
    publisher = workload.Publisher(app, workload.schedule(SESSIONS), RATE)
    assert crashing.process.wait(60) == -9, f"the fault at {point} did not fire:\n{crashing.tail()}"

    restarted = workers.worker("restarted", state_dir=crashing.state_dir, extra=BATCH)
    restarted.wait_assigned()
    publisher.finish()
    results.wait_count(expected, timeout=90)
    finalized.wait_count(SESSIONS, timeout=60)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert restarted.terminate() == 0
    workload.check_outputs(SESSIONS, results.records, finalized.records)
    snapshots, _stale = newest_snapshots(app)
    workload.check_state(SESSIONS, snapshots, readers["events"].read_to_end())
    assert not readers["dead-letter"].read_to_end()
