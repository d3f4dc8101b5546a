"""The frozen worker: it wakes up after the group gave its partitions to another worker.

Worker A is frozen (SIGSTOP, injected right before it publishes a batch's state) for
longer than the group's session timeout; worker B takes every partition over, restores
and applies the later events; then A resumes (SIGCONT).  In the variant A is killed
right after it resumed.  Whatever A does, no session's state may go back: every reader
of the changelog (here :class:`ChangelogReader`, the one the worker's restore, the
``kafka`` storage and ``inspect`` follow) ends with each session's full state, and every
expected output is there at least once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support import App, Pipeline, Proc, Readers, newest_snapshots, wait_until

from . import workload

SESSIONS = 200
RATE = 100.0
BATCH = ["--batch-size", "32"]
FROZEN_AT = "before-changelog=stop@3"


def _stopped(worker: Proc) -> bool:
    """Whether the process is in the stopped state (SIGSTOP), from /proc."""
    stat = Path(f"/proc/{worker.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _run(workers: Pipeline, readers: Readers, app: App, *, kill_on_wake: bool) -> None:
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))

    frozen = workers.worker("frozen", extra=BATCH, env={"STREAM_TRIGGERS_FAULTS": FROZEN_AT})
    frozen.wait_assigned()
    publisher = workload.Publisher(app, workload.schedule(SESSIONS), RATE)
    wait_until(lambda: _stopped(frozen), "the worker to freeze before publishing a batch's state", timeout=60)

    taker = workers.worker("taker", extra=BATCH)
    wait_until(lambda: taker.owned() == {0, 1, 2, 3}, "the second worker to take every partition", timeout=60)
    # The new owner applies every later event: the sessions the frozen batch touched move on.
    publisher.finish()
    results.wait_count(expected, timeout=120)
    finalized.wait_count(SESSIONS, timeout=60)

    before = len(frozen.log())
    os.kill(frozen.pid, signal.SIGCONT)
    # It finishes its batch (publishing its state, or not), then learns it lost its partitions.
    wait_until(lambda: "revoked partitions" in frozen.log()[before:], "the woken worker to finish its batch")
    if kill_on_wake:
        frozen.kill()
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    workload.check_outputs(SESSIONS, results.records, finalized.records)
    for worker in (frozen, taker):
        if worker.running:
            assert worker.terminate() == 0
    snapshots, stale = newest_snapshots(app)
    workload.check_state(SESSIONS, snapshots, readers["events"].read_to_end())
    assert not readers["dead-letter"].read_to_end()
    print(f"stale changelog records ignored by the reader: {stale}")


@pytest.mark.broker
@pytest.mark.slow
def test_a_frozen_worker_that_wakes_after_losing_its_partitions_rolls_nothing_back(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    _run(workers, readers, app, kill_on_wake=False)


@pytest.mark.broker
@pytest.mark.slow
def test_a_frozen_worker_killed_right_after_it_wakes_rolls_nothing_back(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    _run(workers, readers, app, kill_on_wake=True)
