"""Inputs that would make a session or a record too large: dead letters, and the partition keeps flowing.

Before the limits, each of these made a changelog record pass the broker's 1 MB limit:
the produce failed, the worker exited, and every restart failed on the same batch.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from stream_triggers.engine import TriggerFired
from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import App, Readers, wait_until

KB = 1024


@pytest.fixture
def worker(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[StreamWorker]:
    settings = WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"large-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
    )
    running = StreamWorker(settings)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        assert running.ready.wait(45)
        yield running
    finally:
        running.stop()
        thread.join(60)
        assert not thread.is_alive()


def reasons(readers: Readers, uid: str) -> list[str]:
    readers["dead-letter"].poll()
    return [record["reason"] for record in readers["dead-letter"].of(uid)]


def still_flows(app: App, worker: StreamWorker, readers: Readers) -> None:
    """A small session applies after the large inputs: the worker runs, its partitions move on."""
    uid = f"small-{uuid.uuid4().hex[:6]}"
    app.configure(uid, {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    app.fire(uid, "go")
    readers["task-results"].wait_for(lambda _records: readers["task-results"].of(uid), f"{uid} to finish")


@pytest.mark.broker
def test_large_fires_to_one_session(app: App, worker: StreamWorker, readers: Readers) -> None:
    uid = "large-fires"
    app.configure(uid, {"t": {"after": ["a", "b", "c"], "run": "x"}})
    app.fire(uid, "a", {"blob": "x" * 400 * KB})  # 2 copies (latest kwargs, instance kwargs): fits
    app.fire(uid, "b", {"blob": "y" * 400 * KB})  # 4 copies: past the session limit
    # Past the payload limit on its own: the kafka storage refuses to publish that, so it
    # is produced as another producer (not this product's) might send it.
    record = event_record("TriggerFired", uid, trigger="c", kwargs_json=json.dumps({"blob": "z" * 600 * KB}))
    app.produce_raw(uid.encode(), encode("TriggerFired", record))
    wait_until(lambda: len(reasons(readers, uid)) == 2, "two dead letters")
    assert reasons(readers, uid) == ["session_too_large", "payload_too_large"]
    still_flows(app, worker, readers)
    state = app.manager(uid).storage.state
    assert set(state.latest_kwargs) == {"a"}, "the refused inputs changed nothing"


@pytest.mark.broker
def test_a_large_task_result(app: App, worker: StreamWorker, readers: Readers) -> None:
    uid = "large-result"
    app.configure(
        uid,
        {
            "t1": {"after": ["go"], "run": "x"},
            "t2": {"after": ["t1"], "run": "x"},
            "t3": {"after": ["t1"], "run": "x"},
        },
    )
    app.fire(uid, "go")
    readers["task-runs"].wait_for(lambda _records: readers["task-runs"].of(uid), "t1's task run")
    app.running(uid, "t1#0")
    # ~400 KB: the report carries it twice (result, cascade kwargs), past the payload limit.
    app.finished(uid, "t1#0", {"blob": "r" * 400 * KB})
    wait_until(lambda: reasons(readers, uid) == ["payload_too_large"], "a payload_too_large dead letter")
    # ~240 KB: the report fits, but the state would hold it four times (result, latest
    # kwargs, t2's and t3's kwargs): past the session limit.
    app.finished(uid, "t1#0", {"blob": "s" * 240 * KB})
    wait_until(lambda: len(reasons(readers, uid)) == 2, "a second dead letter")
    assert reasons(readers, uid) == ["payload_too_large", "session_too_large"]
    still_flows(app, worker, readers)
    assert str(app.manager(uid).storage.state.instances["t1#0"].status) == "running"


@pytest.mark.broker
def test_thousands_of_and_every_instances(app: App, worker: StreamWorker, readers: Readers) -> None:
    uid = "many-instances"
    app.configure(uid, {"each": {"after": [], "andEvery": "tick", "run": "x"}})
    at = datetime(2026, 1, 1)
    app.publish_many((uid, TriggerFired("tick", {"n": n, "pad": "p" * 120}, at)) for n in range(4_650))
    wait_until(lambda: reasons(readers, uid), "the session to reach its limit", timeout=120)
    assert set(reasons(readers, uid)) == {"session_too_large"}
    still_flows(app, worker, readers)
    assert worker.stats.dead_letters == {"session_too_large": len(reasons(readers, uid))}
