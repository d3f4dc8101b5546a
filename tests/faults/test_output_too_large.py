"""Fault: an input whose output record would pass the broker's record limit.

With the default limits an output cannot outgrow the record limit before the session
limit refuses the input, so the worker here (in a thread) is told the broker takes only
100 KB records: a 150 KB trigger kwargs makes a task-run request of that size.  What
must hold: the input is dead-lettered ``output_too_large`` before anything is produced
(no task run, no state change), and the partition keeps flowing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import App, Readers, wait_until, worker_in_thread

RECORD_LIMIT = 100_000


@pytest.fixture
def small_records_worker(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[StreamWorker]:
    settings = WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"small-records-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
        max_record_bytes=RECORD_LIMIT,
    )
    with worker_in_thread(settings) as running:
        yield running


@pytest.mark.broker
@pytest.mark.slow
def test_output_record_above_the_broker_limit_is_dead_lettered_and_the_partition_flows(
    app: App, readers: Readers, small_records_worker: StreamWorker
) -> None:
    """Fault: a fire whose task-run request would be larger than the broker accepts."""
    config = {"t": {"after": ["go"], "run": "x", "using": "kafka"}}
    app.configure("big-output", config)
    app.fire("big-output", "go", {"blob": "b" * 150_000})
    dead = readers["dead-letter"]
    dead.wait_for(lambda _records: dead.of("big-output"), "the dead letter")
    assert [r["reason"] for r in dead.of("big-output")] == ["output_too_large"]

    # The same partition (the same session, even) keeps flowing: a small fire runs the task.
    app.fire("big-output", "go", {"blob": "small"})
    runs = readers["task-runs"]
    runs.wait_for(lambda _records: runs.of("big-output"), "the small fire's task run")
    assert [r["instance"] for r in runs.of("big-output")] == ["t#0"]
    wait_until(lambda: small_records_worker.stats.dead_letters == {"output_too_large": 1}, "the dead letter counted")
    state = app.manager("big-output").storage.state
    assert state.latest_kwargs["go"] == {"blob": "small"}
