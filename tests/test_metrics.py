"""Metrics: the collectors over hand-filled stats, the probes, the HTTP server, and (broker)
real worker and executor processes whose /readyz, /healthz and /metrics are scraped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
from confluent_kafka import Producer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_triggers.engine import Fired, InstanceChanged
from stream_triggers.events.codec import decode
from stream_triggers.executor import ExecutorStats
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.health import Health
from stream_triggers.ops.metrics import (
    EXECUTOR_METRICS,
    WORKER_METRICS,
    MetricsServer,
    executor_registry,
    serve_executor_metrics,
    serve_worker_metrics,
    worker_registry,
)
from stream_triggers.ops.stats import TASK_SECONDS_BUCKETS, Buckets
from stream_triggers.stream.session import OutputSink
from stream_triggers.stream.worker import WorkerStats
from stream_triggers.types import TaskConfig, TaskInstance

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def scrape(registry: prometheus_client.CollectorRegistry) -> Samples:
    return samples(generate_latest(registry).decode())


def family_names(registry: prometheus_client.CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


# -- fakes -------------------------------------------------------------------------------


def fake_worker(stats: WorkerStats | None = None) -> Any:
    return SimpleNamespace(stats=stats or WorkerStats(), ready=threading.Event(), loop_at=None)


def fake_executor(stats: ExecutorStats | None = None) -> Any:
    return SimpleNamespace(
        stats={"started": 0, "finished": 0, "failed": 0, "retried": 0, "other": 0},
        task_stats=stats or ExecutorStats(),
        ready=threading.Event(),
        import_errors={},
        in_flight=lambda: 3,
        waiting=lambda: 1,
        loop_at=None,
    )


# -- Buckets ----------------------------------------------------------------------------


def test_buckets_follow_prometheus_le_semantics() -> None:
    buckets = Buckets((1.0, 2.0, 5.0))
    for v in (0.5, 1.0, 1.5, 2.0, 7.0):
        buckets.observe(v)
    assert buckets.counts == [2, 2, 0, 1]
    assert buckets.cumulative() == [(1.0, 2), (2.0, 4), (5.0, 4), (float("inf"), 5)]
    assert buckets.count == 5
    assert buckets.total == pytest.approx(12.0)


def test_buckets_reject_unsorted_bounds_and_wrong_counts() -> None:
    with pytest.raises(ValueError):
        Buckets((2.0, 1.0))
    with pytest.raises(ValueError):
        Buckets((1.0,), counts=[0, 0, 0])


# -- the worker collector ----------------------------------------------------------------


def filled_worker_stats() -> WorkerStats:
    stats = WorkerStats()
    stats.applied_by_type.update({"TriggerFired": 7, "ConfigurationUpdated": 2})
    stats.skipped_by_type["TriggerFired"] = 1
    stats.dead_letters_by_type["unknown"] = 2
    stats.dead_letters.update({"undecodable": 2})
    stats.batches = 4
    stats.outputs = 11
    for size in (1, 3, 5, 10_000):
        stats.batch_size.observe(size)
    stats.batch_seconds.observe(0.004)
    stats.event_latency.observe(0.02)
    stats.event_latency.observe(0.3)
    stats.loop_busy.observe(0.0003)
    stats.loop_busy.observe(0.04)
    stats.produced.task_runs = 5
    stats.produced.sessions_finalized = 1
    stats.produced.statuses.update({"finished": 4, "failed": 1})
    stats.restores = 2
    stats.restored_records = 40
    stats.restore_seconds = 1.5
    stats.rebalances = 3
    stats.owned_partitions = 2
    stats.offset_gaps = 1
    stats.last_event_at = 1_700_000_000.5
    stats.consumer_lag = {0: 0, 3: 17}
    stats.sessions_purged = {"retention": 5, "ttl": 2}
    stats.live_sessions = {0: 120, 3: 80}
    return stats


def test_worker_collector_reads_the_stats_at_scrape_time() -> None:
    worker = fake_worker(filled_worker_stats())
    registry = worker_registry(worker, process=False)
    found = scrape(registry)
    w = "stream_triggers_worker_"
    assert value(found, w + "events_total", type="TriggerFired", outcome="applied") == 7
    assert value(found, w + "events_total", type="ConfigurationUpdated", outcome="applied") == 2
    assert value(found, w + "events_total", type="TriggerFired", outcome="skipped_already_applied") == 1
    assert value(found, w + "events_total", type="unknown", outcome="dead_letter") == 2
    assert value(found, w + "dead_letters_total", reason="undecodable") == 2
    assert value(found, w + "sessions_purged_total", reason="retention") == 5
    assert value(found, w + "sessions_purged_total", reason="ttl") == 2
    assert value(found, w + "live_sessions", partition="3") == 80
    assert value(found, w + "batches_total") == 4
    assert value(found, w + "outputs_total") == 11
    assert value(found, w + "batch_size_bucket", le="1.0") == 1
    assert value(found, w + "batch_size_bucket", le="5.0") == 3
    assert value(found, w + "batch_size_bucket", le="+Inf") == 4
    assert value(found, w + "batch_size_count") == 4
    assert value(found, w + "batch_size_sum") == 10_009
    assert value(found, w + "batch_duration_seconds_count") == 1
    assert value(found, w + "event_latency_seconds_bucket", le="0.025") == 1
    assert value(found, w + "event_latency_seconds_count") == 2
    assert value(found, w + "loop_busy_seconds_bucket", le="0.0005") == 1
    assert value(found, w + "loop_busy_seconds_bucket", le="0.05") == 2
    assert value(found, w + "task_runs_requested_total") == 5
    assert value(found, w + "instance_outcomes_total", status="finished") == 4
    assert value(found, w + "instance_outcomes_total", status="failed") == 1
    assert value(found, w + "sessions_finalized_total") == 1
    assert value(found, w + "restores_total") == 2
    assert value(found, w + "restored_records_total") == 40
    assert value(found, w + "restore_seconds_total") == 1.5
    assert value(found, w + "rebalances_total") == 3
    assert value(found, w + "owned_partitions") == 2
    assert value(found, w + "consumer_lag", partition="3") == 17
    assert value(found, w + "consumer_lag", partition="0") == 0
    assert value(found, w + "offset_gaps_total") == 1
    assert value(found, w + "ready") == 0
    assert value(found, w + "last_event_timestamp_seconds") == 1_700_000_000.5

    # Nothing is cached: the next scrape sees the counters move.
    worker.stats.applied_by_type["TriggerFired"] += 1
    worker.ready.set()
    found = scrape(registry)
    assert value(found, w + "events_total", type="TriggerFired", outcome="applied") == 8
    assert value(found, w + "ready") == 1


def test_worker_metric_names_are_the_documented_ones() -> None:
    registry = worker_registry(fake_worker(filled_worker_stats()), process=False)
    assert family_names(registry) == set(WORKER_METRICS)


def test_registries_are_explicit_and_independent() -> None:
    first, second = fake_worker(), fake_worker()
    first.stats.batches = 1
    second.stats.batches = 2
    assert value(scrape(worker_registry(first, process=False)), "stream_triggers_worker_batches_total") == 1
    assert value(scrape(worker_registry(second, process=False)), "stream_triggers_worker_batches_total") == 2
    global_names = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("stream_triggers_") for name in global_names)


def test_process_metrics_are_included_by_default() -> None:
    names = family_names(worker_registry(fake_worker()))
    if sys.platform.startswith("linux"):
        assert "process_cpu_seconds" in names


# -- the executor collector --------------------------------------------------------------


def test_executor_collector_reads_per_task_stats() -> None:
    stats = ExecutorStats(running=2, report_errors=1)
    stats.outcomes["demo.Ok"] = {"finished": 3, "retried": 1}
    stats.outcomes["demo.Bad"] = {"failed": 2}
    stats.durations["demo.Ok"] = Buckets(TASK_SECONDS_BUCKETS)
    for seconds in (0.001, 0.2, 4.0):
        stats.durations["demo.Ok"].observe(seconds)
    stats.dead_letters["undecodable"] = 1
    executor = fake_executor(stats)
    executor.stats["started"] = 6
    executor.import_errors = {"missing.module": "ModuleNotFoundError"}
    found = scrape(executor_registry(executor, process=False))
    e = "stream_triggers_executor_"
    assert value(found, e + "tasks_running") == 2
    assert value(found, e + "requests_in_flight") == 3
    assert value(found, e + "requests_waiting") == 1
    assert value(found, e + "tasks_started_total") == 6
    assert value(found, e + "task_outcomes_total", task="demo.Ok", outcome="finished") == 3
    assert value(found, e + "task_outcomes_total", task="demo.Ok", outcome="retried") == 1
    assert value(found, e + "task_outcomes_total", task="demo.Bad", outcome="failed") == 2
    assert value(found, e + "task_duration_seconds_bucket", task="demo.Ok", le="0.005") == 1
    assert value(found, e + "task_duration_seconds_bucket", task="demo.Ok", le="+Inf") == 3
    assert value(found, e + "task_duration_seconds_sum", task="demo.Ok") == pytest.approx(4.201)
    assert value(found, e + "dead_letters_total", reason="undecodable") == 1
    assert value(found, e + "report_errors_total") == 1
    assert value(found, e + "import_errors") == 1
    assert value(found, e + "ready") == 0


def test_executor_metric_names_are_the_documented_ones() -> None:
    assert family_names(executor_registry(fake_executor(), process=False)) == set(EXECUTOR_METRICS)


# -- the output sink's counts --------------------------------------------------------------


def test_sink_counts_outputs_and_uncounts_a_discarded_input() -> None:
    topics = Topics("m")
    sink = OutputSink(topics)
    config = TaskConfig(name="t_a", after=["a"], run="demo.Ok")

    def emit() -> None:
        sink.begin("s1", b"s1", "cause", 1, "0:1", 2)
        sink.effects([InstanceChanged(TaskInstance("t_a#0", config, status="finished"), "running")])
        sink.effects([Fired("sessionFinalized", ())])

    emit()
    assert (sink.counts.statuses, sink.counts.sessions_finalized) == ({"finished": 1}, 1)
    assert [decode(value)[0] for _, _, value in sink.outputs] == ["InstanceStatusChanged", "SessionFinalized"]
    emit()
    sink.discard()
    assert sink.outputs == []
    assert (sink.counts.statuses, sink.counts.sessions_finalized, sink.counts.task_runs) == ({"finished": 1}, 1, 0)


# -- probes ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_starting_running_stalled_and_stopped() -> None:
    clock = Clock()
    target = fake_worker()
    health = Health(target, stall_after=60, clock=clock)
    assert health.alive() == (True, "starting")
    assert health.ready()[0] is False
    clock.now += 61
    assert health.alive()[0] is False  # the loop never started
    target.loop_at = clock.now
    assert health.alive() == (True, "ok")
    assert health.ready() == (False, "serving no partitions (none assigned, or not restored yet)")
    target.ready.set()
    assert health.ready() == (True, "ready")
    target.ready.clear()  # lost its partitions: read afresh on every probe, never cached
    assert health.ready() == (False, "serving no partitions (none assigned, or not restored yet)")
    target.ready.set()
    clock.now += 61
    assert health.alive()[0] is False and "stalled" in health.alive()[1]
    assert health.ready()[0] is False
    target.loop_at = None  # run() returned: shutting down
    assert health.alive() == (False, "stopped")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def test_server_serves_metrics_and_probes() -> None:
    worker = fake_worker(filled_worker_stats())
    server = serve_worker_metrics(worker, 0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, content_type, body = http_get(base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert value(samples(body.decode()), "stream_triggers_worker_batches_total") == 4
        status, content_type, body = http_get(base + "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert http_get(base + "/readyz")[0] == 503
        worker.loop_at = time.monotonic()
        worker.ready.set()
        assert http_get(base + "/readyz")[0] == 200
        assert http_get(base + "/nope")[0] == 404
    finally:
        server.close()
    assert not server.thread.is_alive()


def test_executor_server_and_busy_port() -> None:
    server = serve_executor_metrics(fake_executor(), 0, host="127.0.0.1")
    try:
        body = http_get(f"http://127.0.0.1:{server.port}/metrics")[2].decode()
        assert value(samples(body), "stream_triggers_executor_requests_in_flight") == 3
        with pytest.raises(OSError, match="cannot serve metrics"):
            holder = socket.socket()
            try:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                MetricsServer(executor_registry(fake_executor()), Health(fake_executor()), holder.getsockname()[1])
            finally:
                holder.close()
    finally:
        server.close()


# -- real processes (broker) -----------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    if script.exists():
        return [str(script)]
    found = shutil.which("stream-triggers")
    return [found] if found else [sys.executable, "-m", "stream_triggers.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A CLI subprocess with its metrics port; stopped by PID."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = _free_port()
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*_cli(), "--json-logs", *args, "--metrics-port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def get(self, path: str) -> tuple[int, bytes] | None:
        """(status, body), or None while nothing listens yet."""
        try:
            status, _, body = http_get(f"http://127.0.0.1:{self.port}{path}", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return status, body

    def metrics(self) -> Samples:
        got = self.get("/metrics")
        assert got is not None and got[0] == 200, self.tail()
        return samples(got[1].decode())

    def wait_ready(self, timeout: float = 60.0) -> list[int]:
        """Poll /readyz until 200; returns the statuses seen (503s first)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.tail()}"
            got = self.get("/readyz")
            if got is not None:
                if not seen or seen[-1] != got[0]:
                    seen.append(got[0])
                if got[0] == 200:
                    return seen
            time.sleep(0.05)
        raise AssertionError(f"/readyz never answered 200 (saw {seen}):\n{self.tail()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"ignored SIGTERM:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()
        for process in started:
            print(f"--- {process.process.args} ---\n{process.tail()}")


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.broker
@pytest.mark.slow
def test_worker_and_executor_processes_expose_moving_metrics(
    broker: Any, topics: Topics, tmp_path: Path, processes: list[Process]
) -> None:
    from stream_triggers.manager import TriggerManager
    from stream_triggers.storages.kafka import KafkaStorage

    common = ["--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix]
    group = f"metrics-{uuid.uuid4().hex[:8]}"
    worker_args = ["worker", *common, "--group", group]
    worker = Process([*worker_args, "--state-dir", str(tmp_path / "w1")], tmp_path / "worker1.log")
    processes.append(worker)
    executor = Process(
        ["executor", *common, "--import", "stream_triggers.testing", "--group", f"{group}-exec"],
        tmp_path / "executor.log",
    )
    processes.append(executor)

    # Not ready while the group join (and restore) is under way, then ready.
    assert worker.wait_ready() == [503, 200]
    assert 200 in executor.wait_ready()
    assert worker.get("/healthz")[0] == 200
    assert executor.get("/healthz")[0] == 200
    before = worker.metrics()
    assert value(before, "stream_triggers_worker_ready") == 1
    assert value(before, "stream_triggers_worker_owned_partitions") == 4
    assert value(before, "stream_triggers_worker_restores_total") >= 1

    ok, bad = f"ok-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    manager = TriggerManager(KafkaStorage(ok, broker.bootstrap, topics.prefix))
    manager.update_configuration({"t_pass": {"after": ["a"], "run": "stream_triggers.testing.PassThruTask"}})
    manager.fire("a", {"n": 1})
    manager = TriggerManager(KafkaStorage(bad, broker.bootstrap, topics.prefix))
    manager.update_configuration({"t_fail": {"after": ["a"], "run": "stream_triggers.testing.FailingTask"}})
    manager.fire("a", {"n": 2})
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topics.events, b"not avro", b"garbage-session")
    assert producer.flush(10) == 0

    w = "stream_triggers_worker_"

    def worker_done() -> Samples | None:
        found = worker.metrics()
        finished = value(found, w + "instance_outcomes_total", status="finished") or 0
        failed = value(found, w + "instance_outcomes_total", status="failed") or 0
        dead = value(found, w + "dead_letters_total", reason="undecodable") or 0
        # Outputs count as they are produced; batches and latencies once their checkpoint completes.
        checkpointed = (value(found, w + "event_latency_seconds_count") or 0) >= 8
        return found if finished >= 1 and failed >= 1 and dead >= 1 and checkpointed else None

    found = wait_for(worker_done, 60, "the worker to apply both sessions, dead-letter the garbage and checkpoint")
    assert value(found, w + "events_total", type="ConfigurationUpdated", outcome="applied") == 2
    assert value(found, w + "events_total", type="TriggerFired", outcome="applied") == 2
    assert value(found, w + "events_total", type="InstanceStatusReported", outcome="applied") >= 4
    assert value(found, w + "events_total", type="unknown", outcome="dead_letter") == 1
    assert value(found, w + "task_runs_requested_total") == 2
    assert value(found, w + "sessions_finalized_total") == 1
    assert value(found, w + "batches_total") > value(before, w + "batches_total")
    assert value(found, w + "event_latency_seconds_count") >= 8
    assert value(found, w + "batch_size_sum") >= 9

    def caught_up() -> bool:
        lags = [v for (name, _), v in worker.metrics().items() if name == w + "consumer_lag"]
        return len(lags) == 4 and sum(lags) == 0

    wait_for(caught_up, 10, "the consumer lag (refreshed every second) to reach 0 on all 4 partitions")

    e = "stream_triggers_executor_"
    ran = executor.metrics()
    assert value(ran, e + "tasks_started_total") == 2
    assert value(ran, e + "task_outcomes_total", task="stream_triggers.testing.PassThruTask", outcome="finished") == 1
    assert value(ran, e + "task_outcomes_total", task="stream_triggers.testing.FailingTask", outcome="failed") == 1
    assert value(ran, e + "task_duration_seconds_count", task="stream_triggers.testing.PassThruTask") == 1
    assert value(ran, e + "tasks_running") == 0
    assert value(ran, e + "ready") == 1

    # The task failure is logged as JSON with the session and the instance.
    failures = [json.loads(line) for line in executor.log_path.read_text().splitlines() if "failed" in line]
    assert any(doc.get("session_uid") == bad and doc.get("instance") == "t_fail#0" for doc in failures)

    # A second worker with an empty state dir takes over after the first leaves: it
    # restores from the changelog before it says it is ready.
    assert worker.stop() == 0
    successor = Process([*worker_args, "--state-dir", str(tmp_path / "w2")], tmp_path / "worker2.log")
    processes.append(successor)
    assert successor.wait_ready() == [503, 200]
    restored = successor.metrics()
    assert value(restored, w + "restored_records_total") >= 2
    assert value(restored, w + "restores_total") >= 1
    assert successor.stop() == 0
    assert executor.stop() == 0


def test_metrics_and_health_never_import_the_processes_they_read() -> None:
    """They read the worker and the executor through protocols (imports run one way)."""
    import ast

    import stream_triggers.ops.health as health_module
    import stream_triggers.ops.metrics as metrics_module

    for module in (metrics_module, health_module):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        upward = sorted(m for m in imported if m.startswith(("stream_triggers.stream", "stream_triggers.executor")))
        assert upward == [], f"{module.__name__} imports {upward}"
