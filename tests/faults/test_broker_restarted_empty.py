"""Fault: the broker restarted empty (all its data lost: topics, offsets, groups).

Tansu here keeps its data in memory, so stopping it and starting a new one on the same
port is exactly a broker that lost everything (Apache Kafka: lost volumes, a move to
another cluster at the same address).  The operator recreates the topics, as after any
cluster loss.  The worker's RocksDB stores still hold the lost cluster's sessions, and
their checkpoints point into a changelog that no longer exists.

What must hold: the worker says so, rebuilds its stores from the new (empty) changelog,
and serves; nothing it held applies to an input of the new cluster; inputs of the new
cluster are applied (none skipped as "already applied" by an old offset), and every
expected output comes out.
"""

from __future__ import annotations

from typing import Any

import pytest

from stream_triggers.kafka.topics import create_topics
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.kafka import BrokerTimeout, KafkaStorage
from stream_triggers.storages.producers import producer_replacements
from tests.support import (
    App,
    Pipeline,
    Proc,
    Readers,
    RestartableBroker,
    latest_snapshots,
    newest_snapshots,
    read_topic,
    wait_until,
)

PARTITIONS = 4
CONFIGURATION = {"t_a": {"after": ["x", "y"], "run": "faults.A", "using": "noop"}}
REBUILT = "rebuilding the store from the changelog"
EXIT_FAILURE = 1


def _before_the_loss(workers: Pipeline, app: App) -> None:
    """Sessions of the lost cluster, half way: x fired, y not yet (t_a waits)."""
    for k in range(8):
        app.configure(f"old-{k}", CONFIGURATION)
        app.fire(f"old-{k}", "x", {"k": k})
    wait_until(lambda: len(latest_snapshots(app.bootstrap, app.topics)) == 8, "the lost cluster's state committed")


def _check_the_new_cluster(readers: Readers, app: App, supervise: tuple[Pipeline, Proc] | None = None) -> Proc | None:
    """Old sessions start from nothing; new sessions run to the end.

    With ``supervise``, a worker that exits is restarted once on its state dir (as a
    supervisor would); returns the worker serving at the end.
    """
    for k in range(8):
        app.fire(f"old-{k}", "y")  # with the lost state, t_a would run now
        app.configure(f"new-{k}", CONFIGURATION)
        app.fire(f"new-{k}", "x")
        app.fire(f"new-{k}", "y")
    results = readers["task-results"]
    serving = supervise[1] if supervise else None

    def supervised() -> None:
        """A worker that exited (before or after the outputs of its batch left) is restarted once."""
        nonlocal serving
        if supervise and serving is not None and not serving.running and serving is supervise[1]:
            serving = supervise[0].worker("restarted", state_dir=serving.state_dir)

    def done(records: list[Any]) -> bool:
        supervised()
        return {r.session for r in records if r["status"] == "finished"} >= {f"new-{k}" for k in range(8)}

    def applied() -> bool:
        supervised()
        return {f"old-{k}" for k in range(8)} <= set(newest_snapshots(app)[0])

    results.wait_for(done, "every new session's t_a to finish", timeout=120)
    wait_until(applied, "the old sessions' new inputs to be applied", 90)
    snapshots, _stale = newest_snapshots(app)
    for k in range(8):
        state = snapshots[f"old-{k}"]["state"]
        assert not state.instances and "x" not in state.latest_kwargs, f"old-{k} was applied on lost state"
    results.settle(quiet_s=1.0)
    assert not [r for r in results.records if (r.session or "").startswith("old-")], "lost state ran a task"
    assert not readers["dead-letter"].read_to_end()
    return serving


@pytest.mark.broker
@pytest.mark.slow
def test_broker_restarted_empty_under_a_running_worker_is_detected_and_rebuilt(
    cluster: RestartableBroker, on_own_broker: tuple[Pipeline, Readers, App]
) -> None:
    """Fault: the broker loses everything while a worker runs; the worker must rebuild, not reuse.

    The worker's idempotent producer cannot go on against the new cluster (its sequence
    numbers belong to the lost one: a fatal OUT_OF_ORDER_SEQUENCE_NUMBER), so the worker
    may exit with code 1 (README: "1 failure") naming that error, before committing the
    batch; a supervisor's restart on the same state dir must then serve everything.
    """
    workers, readers, app = on_own_broker
    worker = workers.worker("through-the-loss")
    worker.wait_assigned()
    _before_the_loss(workers, app)
    assignments = worker.assignments()

    cluster.restart_empty(app)
    wait_until(lambda: not worker.running or worker.assignments() > assignments, "a rejoin or an exit", 90)
    restarted = _check_the_new_cluster(readers, app, supervise=(workers, worker))
    logs = "".join(w.log() for w in workers.started)
    assert REBUILT in logs, "the worker did not say it rebuilt its stores"
    if restarted is not worker:
        assert worker.process.returncode == EXIT_FAILURE, worker.tail()
        assert "OUT_OF_ORDER_SEQUENCE_NUMBER" in worker.log(), worker.tail()
    assert restarted.terminate() == 0


@pytest.mark.broker
@pytest.mark.slow
def test_broker_restarted_empty_while_the_worker_was_down_is_detected_and_rebuilt(
    cluster: RestartableBroker, on_own_broker: tuple[Pipeline, Readers, App]
) -> None:
    """Fault: the broker loses everything while the worker is stopped; it comes back on its state dir."""
    workers, readers, app = on_own_broker
    worker = workers.worker("before")
    worker.wait_assigned()
    _before_the_loss(workers, app)
    assert worker.terminate() == 0

    cluster.restart_empty(app)
    worker = workers.worker("after", state_dir=worker.state_dir)
    worker.wait_assigned(timeout=90)
    _check_the_new_cluster(readers, app)
    assert REBUILT in worker.log()
    assert worker.terminate() == 0


@pytest.mark.broker
@pytest.mark.slow
def test_broker_restarted_empty_then_its_changelog_grew_past_a_stopped_workers_checkpoint(
    cluster: RestartableBroker, on_own_broker: tuple[Pipeline, Readers, App]
) -> None:
    """Fault: the broker lost everything while worker A was down; B served the new cluster a while; A returns.

    A's stores still hold the lost cluster's sessions, with checkpoints below the new
    changelog's end: nothing marks them as another cluster's.
    """
    workers, readers, app = on_own_broker
    first = workers.worker("before")
    first.wait_assigned()
    _before_the_loss(workers, app)
    assert first.terminate() == 0

    cluster.restart_empty(app)
    other = workers.worker("meanwhile")
    other.wait_assigned()
    for k in range(80):  # about 20 changelog records per partition, far past A's checkpoints (a few)
        app.configure(f"filler-{k}", CONFIGURATION)
    wait_until(lambda: len(newest_snapshots(app)[0]) == 80, "the new cluster's changelog to grow")
    assert other.terminate() == 0

    back = workers.worker("back", state_dir=first.state_dir)
    back.wait_assigned()
    _check_the_new_cluster(readers, app)
    assert back.terminate() == 0


@pytest.mark.broker
@pytest.mark.slow
def test_broker_restarted_empty_the_applications_kafka_storage_publishes_again(cluster: RestartableBroker) -> None:
    """Fault: the broker loses everything under a running application (the kafka storage's producer).

    The process-wide idempotent producer is bound to the lost cluster (a producer id the
    new one does not know): its first publish there cannot be acknowledged and fails with
    a clear BrokerTimeout saying the producer was replaced; from then on the same manager
    publishes again, without an application restart (storages/producers.py).
    """
    manager = TriggerManager(KafkaStorage("app-session", cluster.bootstrap, cluster.topics.prefix, timeout_s=5))
    manager.fire("before")
    replaced = producer_replacements()
    cluster.broker.stop(remove_log=False)
    cluster.generation += 1
    cluster.broker = cluster._start()
    create_topics(cluster.bootstrap, cluster.topics, partitions=PARTITIONS)
    try:
        manager.fire("first-after")
    except BrokerTimeout as exc:  # the lost cluster's producer: replaced, said so
        assert "The producer was replaced" in str(exc), exc
        assert producer_replacements() == replaced + 1
    for attempt in range(2):  # the same manager and new ones publish, each acknowledged
        manager.fire(f"after-{attempt}")
        TriggerManager(KafkaStorage("app-session", cluster.bootstrap, cluster.topics.prefix, timeout_s=5)).fire(
            f"other-{attempt}"
        )
    fired = [r.value.get("trigger") for r in read_topic(cluster.bootstrap, cluster.topics.events)]
    assert {"after-0", "after-1", "other-0", "other-1"} <= set(fired), fired
    assert "before" not in fired
