"""Worker paths against the real broker (worker in a thread): dead-letter reasons, cache eviction, a lost state dir."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import stream_triggers.stream.worker as worker_module
from stream_triggers.engine import ConfigurationUpdated, TriggerFired
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import FinalizingTriggerManager, TriggerManager
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.store import PartitionStore
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import App, Readers, wait_until

Start = Callable[..., StreamWorker]


@pytest.fixture
def start(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Start]:
    running: list[tuple[StreamWorker, threading.Thread]] = []

    def start_worker(manager_class: type[TriggerManager] | None = None, **settings: object) -> StreamWorker:
        worker = StreamWorker(
            WorkerSettings(
                bootstrap=broker.bootstrap,
                state_dir=str(tmp_path / "state"),
                group=f"paths-{uuid.uuid4().hex[:8]}",
                topic_prefix=topics.prefix,
                **settings,
            ),
            manager_class=manager_class,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        assert worker.ready.wait(45)
        return worker

    yield start_worker
    for worker, thread in running:
        worker.stop()
        thread.join(60)


def dead_letters(readers: Readers, uid: str) -> list[str]:
    readers["dead-letter"].poll()
    return [record["reason"] for record in readers["dead-letter"].of(uid)]


class Take(NamedTuple):
    wait_s: float
    linger_s: float
    taken: int


def record_takes(monkeypatch: pytest.MonkeyPatch) -> list[Take]:
    """Every take of the worker's loop from now on: its waits and how many records it returned."""
    takes: list[Take] = []
    real_take = worker_module.take_batch

    def recording_take(consumer: Any, max_messages: int, wait_s: float, linger_s: float = 0.0) -> list[Any]:
        messages = real_take(consumer, max_messages, wait_s, linger_s)
        takes.append(Take(wait_s, linger_s, len(messages)))
        return messages

    monkeypatch.setattr(worker_module, "take_batch", recording_take)
    return takes


class ExplodingHook(FinalizingTriggerManager):
    def _post_fire(self, trigger_name: str, tasks_scheduled: list) -> None:
        if trigger_name == "boom":
            raise RuntimeError("a hook that fails")
        super()._post_fire(trigger_name, tasks_scheduled)


@pytest.mark.broker
def test_an_input_whose_manager_hook_fails_is_dead_lettered_apply_failed(
    start: Start, app: App, readers: Readers
) -> None:
    start(ExplodingHook)
    app.configure("s", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    app.fire("s", "boom")
    app.fire("s", "go")
    readers["task-results"].wait_for(lambda _r: readers["task-results"].of("s"), "the next input to apply")
    assert dead_letters(readers, "s") == ["apply_failed"]
    assert "boom" not in app.manager("s").storage.state.latest_kwargs, "the failed input changed nothing"


@pytest.mark.broker
def test_an_input_for_a_session_whose_stored_state_is_corrupt_is_dead_lettered(
    start: Start, app: App, readers: Readers, tmp_path: Path, topics: Topics
) -> None:
    number = partition_for(b"broken", 4)
    store = PartitionStore(str(tmp_path / "state"), topics.events, number)
    store.write([("broken", 0, b"\x03garbage")], None)
    store.close()
    start()
    app.fire("broken", "go")
    app.configure("fine", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    app.fire("fine", "go")
    readers["task-results"].wait_for(lambda _r: readers["task-results"].of("fine"), "another session to apply")
    wait_until(lambda: dead_letters(readers, "broken") == ["corrupt_state"], "a corrupt_state dead letter")


@pytest.mark.broker
def test_more_sessions_than_the_cache_holds_are_evicted_and_reloaded_from_the_store(
    start: Start, app: App, readers: Readers
) -> None:
    sessions = 600  # the cache holds 100 per partition: most are evicted, then used again
    worker = start(session_cache_size=100)
    largest: list[int] = []
    # (after each checkpoint; sessions changed since, by batches applied while it was in flight, stay too)
    worker.on_batch = lambda w: largest.append(max(len(p.sessions) - len(p.dirty) for p in w._partitions.values()))
    at = datetime(2026, 1, 1)
    config = {"each": {"after": [], "andEvery": "go", "run": "x", "using": "noop"}}
    uids = [f"cache-{i}" for i in range(sessions)]
    app.publish_many((uid, ConfigurationUpdated(config, at)) for uid in uids)
    app.publish_many((uid, TriggerFired("go", {}, at)) for uid in uids)
    app.publish_many((uid, TriggerFired("go", {}, at)) for uid in uids)
    results = readers["task-results"]
    results.wait_count(2 * sessions, timeout=90)
    results.settle(quiet_s=1.0)
    finished = {(r.session, r["instance"]) for r in results.records if r["status"] == "finished"}
    assert finished == {(uid, f"each#{n}") for uid in uids for n in (0, 1)}, "an evicted session lost its state"
    assert len(results.records) == 2 * sessions
    assert max(largest) <= 100


@pytest.mark.broker
def test_a_worker_whose_state_dir_vanished_still_leaves_the_group(
    start: Start, app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = start()
    app.configure("s", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    wait_until(lambda: worker.stats.events_applied == 1, "the worker to apply an input")
    shutil.rmtree(tmp_path / "state")
    with caplog.at_level(logging.INFO, logger="stream_triggers.stream.worker"):
        worker.stop()
        wait_until(lambda: "worker stopped" in caplog.text, "the worker to close its consumer")
    assert "could not close the store" in caplog.text


@pytest.mark.broker
def test_a_store_checkpoint_past_the_changelog_end_is_detected_and_rebuilt(
    start: Start, app: App, readers: Readers, tmp_path: Path, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    """As after a recreated changelog: the worker says so, rebuilds from the changelog and serves."""
    first = start()
    app.configure("kept", {"t": {"after": ["a", "b"], "run": "x", "using": "noop"}})
    app.fire("kept", "a")
    wait_until(lambda: first.stats.events_applied == 2, "the first worker to apply two inputs")
    first.stop()
    wait_until(lambda: first.loop_at is None, "the first worker to stop")
    number = partition_for(b"kept", 4)
    store = PartitionStore(str(tmp_path / "state"), topics.events, number)
    store.write([], 1_000)  # far past the changelog's end
    store.close()
    with caplog.at_level(logging.ERROR, logger="stream_triggers.stream.worker"):
        start()  # ready: the restore ended
    assert "rebuilding the store from the changelog" in caplog.text
    app.fire("kept", "b")
    readers["task-results"].wait_for(lambda _r: readers["task-results"].of("kept"), "the session to finish")
    # (state follows outputs by up to one checkpoint interval)
    wait_until(
        lambda: str(app.manager("kept").storage.state.instances["t#0"].status) == "finished", "the state to follow"
    )


@pytest.mark.broker
def test_batches_share_a_checkpoint_and_a_stop_commits_the_ones_in_hand(
    start: Start, app: App, readers: Readers
) -> None:
    """Outputs leave as each batch is applied; the state follows at the checkpoint pace, at the latest on stop."""
    worker = start(checkpoint_interval_s=3600.0)  # no checkpoint falls due while the worker runs
    app.configure("paced", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    app.fire("paced", "go")
    results = readers["task-results"]
    results.wait_for(lambda _r: results.of("paced"), "the output, before any checkpoint")
    assert worker.stats.batches == 0, "no checkpoint yet"
    assert app.state("paced") is None, "no state was published before a checkpoint"
    worker.stop()
    wait_until(lambda: worker.loop_at is None, "the worker to stop")
    state = app.state("paced")
    assert state is not None and str(state.instances["t#0"].status) == "finished"
    assert worker.stats.batches == 1 and worker.stats.batch_size.count == 1
    assert worker.stats.loop_busy.count > 0, "every loop turn's work is timed"


@pytest.mark.broker
def test_a_long_input_fetch_wait_does_not_hold_the_restore(start: Start) -> None:
    """A restore ends with a fetch that finds nothing, which the broker holds for the whole
    wait: the restore fetches with its own short wait and no minimum, so ``--fetch-wait-ms
    500`` (right on Apache Kafka) or a ``--fetch-min-bytes`` does not add that to every rebalance."""
    worker = start(fetch_wait_ms=4000, fetch_min_bytes=1_000_000)
    assert worker.stats.restores >= 1
    assert worker.stats.restore_seconds < 2.0, f"restore took {worker.stats.restore_seconds:.2f} s"


@pytest.mark.broker
def test_after_a_take_that_emptied_the_queue_the_next_one_lingers(
    start: Start, app: App, readers: Readers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``linger_s`` reaches the loop: a take that found records and emptied the queue makes the
    next one wait for more; a take that found nothing does not, so a lone event is applied at once."""
    takes = record_takes(monkeypatch)
    start(linger_s=0.25)
    app.configure("lingering", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    results = readers["task-results"]
    app.fire("lingering", "go")
    results.wait_for(lambda _r: results.of("lingering"), "the output")
    first = next(i for i, take in enumerate(takes) if take.taken)
    wait_until(lambda: len(takes) > first + 1, "the next take (recorded when it returns, after its linger)")
    assert takes[first].linger_s == 0.0, "the first event, on an idle worker, was taken without lingering"
    assert takes[first + 1].linger_s == 0.25, "the take after it lingered"


@pytest.mark.broker
def test_an_idle_take_waits_long_and_one_with_batches_in_hand_only_until_their_checkpoint(
    start: Start, app: App, readers: Readers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing to do the loop waits up to ``idle_wait_s`` for a record (which ends the wait
    at once); with batches in hand only until their checkpoint falls due, so it is not late."""
    takes = record_takes(monkeypatch)
    start(idle_wait_s=2.0, checkpoint_interval_s=0.2, purge_interval_s=3600.0)
    wait_until(lambda: any(take.wait_s == 2.0 for take in takes), "an idle take")
    app.configure("idle", {"t": {"after": ["go"], "run": "x", "using": "noop"}})
    app.fire("idle", "go")
    readers["task-results"].wait_for(lambda _r: readers["task-results"].of("idle"), "the output")
    wait_until(lambda: app.state("idle") is not None, "the state, at the checkpoint")
    first = next(i for i, take in enumerate(takes) if take.taken)
    assert 0.0 <= takes[first + 1].wait_s <= 0.2, "with a batch in hand, the take waited only until its checkpoint"
