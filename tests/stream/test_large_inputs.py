"""Inputs that would make a session or a record too large: dead letters, and the partition keeps flowing.

Before the limits, each of these made a changelog record pass the broker's 1 MB limit:
the produce failed, the worker exited, and every restart failed on the same batch.
Since format 4 a session is stored in parts (a header, one record per instance), so
the limit that protects a record is per part; a session as a whole may be larger.
"""

from __future__ import annotations

import json
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
from tests.support import App, Readers, wait_until, worker_in_thread

KB = 1024


@pytest.fixture
def worker(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StreamWorker]:
    settings = WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"large-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
        **getattr(request, "param", {}),
    )
    with worker_in_thread(settings) as running:
        yield running


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
    app.configure(uid, {"t": {"after": ["a", "b", "c", "d"], "run": "x"}})
    app.fire(uid, "a", {"blob": "x" * 400 * KB})  # the header (latest kwargs) and t#0 hold it once each
    app.fire(uid, "b", {"blob": "y" * 400 * KB})  # 800 KB in the header and in t#0: still fits a part
    app.fire(uid, "c", {"blob": "z" * 200 * KB})  # 1 MB: past the limit of a part
    # Past the payload limit on its own: the kafka storage refuses to publish that, so it
    # is produced as another producer (not this product's) might send it.
    record = event_record("TriggerFired", uid, trigger="d", kwargs_json=json.dumps({"blob": "w" * 600 * KB}))
    app.produce_raw(uid.encode(), encode("TriggerFired", record))
    wait_until(lambda: len(reasons(readers, uid)) == 2, "two dead letters")
    # (Each dead letter names its input's offset; the native engine may publish a rejection
    # it decides itself before one the Python engine decides for an earlier input.)
    assert sorted(reasons(readers, uid)) == ["payload_too_large", "session_too_large"]
    still_flows(app, worker, readers)
    state = app.manager(uid).storage.state
    assert set(state.latest_kwargs) == {"a", "b"}, "the refused inputs changed nothing"


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
    # ~240 KB: the report fits, and the state holds it four times (result, latest kwargs,
    # t2's and t3's kwargs) - in four parts, each far below the limit of a part.
    app.finished(uid, "t1#0", {"blob": "s" * 240 * KB})
    readers["task-runs"].wait_for(lambda _records: len(readers["task-runs"].of(uid)) == 3, "t2's and t3's runs")
    still_flows(app, worker, readers)
    assert reasons(readers, uid) == ["payload_too_large"]
    assert str(app.manager(uid).storage.state.instances["t1#0"].status) == "finished"


@pytest.mark.slow
@pytest.mark.broker
def test_thousands_of_and_every_instances_fit_in_parts(app: App, worker: StreamWorker, readers: Readers) -> None:
    """~1 MB of instances: one whole-session record could not hold them, one record each can."""
    uid = "many-instances"
    app.configure(uid, {"each": {"after": [], "andEvery": "tick", "run": "x"}})
    at = datetime(2026, 1, 1)
    app.publish_many((uid, TriggerFired("tick", {"n": n, "pad": "p" * 120}, at)) for n in range(4_650))
    readers["task-runs"].wait_for(lambda _records: len(readers["task-runs"].of(uid)) == 4_650, "4,650 runs", 120)
    still_flows(app, worker, readers)
    assert len(app.manager(uid).storage.state.instances) == 4_650
    assert not reasons(readers, uid)


@pytest.mark.broker
@pytest.mark.parametrize("worker", [{"max_session_bytes": 256 * KB}], indirect=True)
def test_a_session_past_its_limit(app: App, worker: StreamWorker, readers: Readers) -> None:
    uid = "many-instances"
    app.configure(uid, {"each": {"after": [], "andEvery": "tick", "run": "x"}})
    at = datetime(2026, 1, 1)
    app.publish_many((uid, TriggerFired("tick", {"n": n, "pad": "p" * 120}, at)) for n in range(4_650))
    wait_until(lambda: reasons(readers, uid), "the session to reach its limit", timeout=120)
    assert set(reasons(readers, uid)) == {"session_too_large"}
    still_flows(app, worker, readers)
    assert worker.stats.dead_letters == {"session_too_large": len(reasons(readers, uid))}
