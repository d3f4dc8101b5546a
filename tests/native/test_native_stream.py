"""A native worker against the real broker: the stream workload applied natively, nothing handed to Python.

The worker runs in a thread (so its stats and metrics can be read); the workload and its
checks are the stream tests' own (tests/stream/workload.py): every output exactly as an
uninterrupted run makes it, and every committed state what the inputs make of it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.ops.metrics import worker_registry
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.stream import workload
from tests.support import App, Pipeline, Readers, latest_snapshots

pytest.importorskip("stream_triggers_native")

SESSIONS = 120


@pytest.fixture
def app(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[App]:
    with Pipeline(broker.bootstrap, topics, tmp_path / "app", session_timeout_ms=None) as pipeline:
        yield pipeline


@pytest.fixture
def readers(broker: EmbeddedBroker, topics: Topics) -> Iterator[Readers]:
    opened = Readers(broker.bootstrap, topics)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.broker
@pytest.mark.parametrize("manager", ["finalizing", "default"])
def test_the_stream_workload_runs_natively_with_no_fallback(
    broker: EmbeddedBroker,
    topics: Topics,
    tmp_path: Path,
    app: App,
    readers: Readers,
    manager: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"native-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
        manager=manager,
        engine="native",
        session_cache_size=200,  # (fewer than the sessions: some come back from the store)
    )
    caplog.set_level(logging.INFO, logger="stream_triggers.stream.worker")
    worker = StreamWorker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(45)
        workload.publish(app, workload.schedule(SESSIONS), rate=5_000)
        results = readers["task-results"]
        results.wait_count(SESSIONS * 5, timeout=90)
        results.settle(quiet_s=0.5)
        finalized = readers["sessions"]
        if manager == "finalizing":  # (the workload's checks expect the finalizing manager)
            finalized.wait_count(SESSIONS, timeout=60)
            workload.check_outputs(SESSIONS, results.records, finalized.records)
            events = readers["events"].read_to_end()
            workload.check_state(SESSIONS, latest_snapshots(app.bootstrap, app.topics), events)
    finally:
        worker.stop()
        thread.join(60)
    stats = worker.stats
    assert stats.engine == "native"
    assert stats.engine_fallbacks == {}
    assert stats.events_applied == SESSIONS * workload.STEPS
    assert "engine=native" in caplog.text
    registry = worker_registry(worker, process=False)
    assert registry.get_sample_value("stream_triggers_worker_info", {"engine": "native"}) == 1
    assert not next(m for m in registry.collect() if m.name == "stream_triggers_worker_engine_fallbacks").samples
