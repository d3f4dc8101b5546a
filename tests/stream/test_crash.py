"""A worker killed with SIGKILL mid-stream, restarted on its state dir and on an empty one.

The restarted worker must go on from the committed offsets with the state the
changelog holds (its RocksDB store is only a cache, written without a WAL, so a
SIGKILL may take its newest writes with it): every session ends exactly as an
uninterrupted run would leave it, and the outputs are the same set, re-sent at most
with identical event ids.

The events are published at a steady rate while the workers come and go, so each one
is stopped with input in flight (arriving live, or a backlog it is catching up on).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from tests.support import (
    CRASH_SESSION_TIMEOUT_MS,
    App,
    Pipeline,
    Proc,
    Readers,
    committed_offsets,
    end_offsets,
    latest_snapshots,
    wait_until,
)

from . import workload

SESSIONS = 300
RATE = 100.0  # events/s: 2100 events last about 20 s, while the workers come and go
BATCH = ["--batch-size", "64"]  # many small batches: many points to be killed between
PROGRESS = 100  # task-results records a worker produces before it is stopped


@pytest.fixture
def workers(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """This module's workers: a short group session timeout, so a killed worker's successor
    is not left waiting the CLI's 6 s (twice) for the group to drop it."""
    with Pipeline(broker.bootstrap, topics, tmp_path, session_timeout_ms=CRASH_SESSION_TIMEOUT_MS) as started:
        yield started
        print(started.report())  # shown by pytest when the test failed


@pytest.mark.broker
@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_on_the_same_and_on_an_empty_state_dir(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))
    stopped_at: list[int] = []

    def run_until_progress(worker: Proc) -> None:
        worker.wait_assigned()
        results.wait_count(len(results.records) + PROGRESS, timeout=60)

    first = workers.worker("first", extra=BATCH)
    first.wait_assigned()
    publisher = workload.Publisher(app, workload.schedule(SESSIONS), RATE)
    results.wait_count(PROGRESS, timeout=60)
    assert first.terminate() == 0  # clean: its stores are flushed, with their changelog checkpoints
    stopped_at.append(len(results.records))

    # (a) The same state dir, after a clean stop: the stores are up to date, nothing to restore.
    second = workers.worker("same-dir", state_dir=first.state_dir, extra=BATCH)
    run_until_progress(second)
    assert second.restored() == 0, "a clean restart on its own state dir should restore nothing"
    second.kill()
    stopped_at.append(len(results.records))

    # (a') The same state dir after SIGKILL: the stores are at an older checkpoint (or lost their
    # unflushed writes); the changelog from there on brings them up to date.
    third = workers.worker("same-dir-again", state_dir=first.state_dir, extra=BATCH)
    run_until_progress(third)
    third.kill()
    stopped_at.append(len(results.records))

    # (b) An empty state dir: everything must come back from the changelog.
    empty = workers.worker("empty-dir", extra=BATCH)
    assert empty.state_dir != first.state_dir
    empty.wait_assigned()
    assert empty.restored() > 0, "the worker on an empty state dir restored nothing"
    publisher.finish()

    results.wait_count(expected, timeout=90)
    finalized.wait_count(SESSIONS, timeout=60)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert empty.terminate() == 0  # a clean stop: its last changelog round is in

    duplicates = workload.check_outputs(SESSIONS, results.records, finalized.records)
    events = readers["events"].read_to_end()
    snapshots = latest_snapshots(app.bootstrap, app.topics)
    workload.check_state(SESSIONS, snapshots, events)
    assert not readers["dead-letter"].read_to_end()
    print(f"stopped at {stopped_at} of {expected} results; duplicates re-sent: {duplicates}")

    # (c) Committed offsets lost: a worker of a new group reads every event again from the start.
    # The restored state knows which inputs it reflects, so none of them may apply twice.
    replay_group = f"{workers.group}-replay"
    replay = workers.worker("offsets-lost", group=replay_group, extra=BATCH)
    replay.wait_assigned()
    ends = end_offsets(events)
    wait_until(
        lambda: committed_offsets(app.bootstrap, app.topics.events, replay_group, ends) == ends,
        "the new group to commit the end of every events partition",
    )
    outputs = (len(results.records), len(finalized.records))
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert replay.terminate() == 0
    assert (len(results.records), len(finalized.records)) == outputs, "re-read events produced outputs"
    after = latest_snapshots(app.bootstrap, app.topics)
    assert {uid: s["changelog_offset"] for uid, s in after.items()} == {
        uid: s["changelog_offset"] for uid, s in snapshots.items()
    }, "re-read events changed the state"
