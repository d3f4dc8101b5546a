"""Prometheus metrics and health endpoints for a worker or an executor process.

Why a custom collector: the worker's hot loop only bumps plain integers, dicts and
bucket lists (its ``WorkerStats``, the executor's ``ExecutorStats``); this module reads
them when Prometheus scrapes and builds the metric families then, so a busy worker pays
no per-event price for being observable.  It reads both processes through the small
protocols :class:`WorkerView` and :class:`ExecutorView` and never imports them.

Why an explicit registry: nothing here touches prometheus-client's global
``REGISTRY`` and importing the module has no side effect, so tests (and a process
embedding two workers) build as many independent registries as they like.

One small HTTP server per process (a daemon thread, stdlib ``http.server``) serves

* ``/metrics`` - the Prometheus text format;
* ``/healthz`` and ``/readyz`` - the liveness and readiness probes of
  :mod:`stream_triggers.ops.health` (200 or 503 with a JSON reason);
* further ``routes`` by path prefix: a worker's ``/sessions/<uid>`` (ops/queries.py).

Every metric name starts with ``stream_triggers_worker_`` or ``stream_triggers_executor_``;
:data:`WORKER_METRICS` and :data:`EXECUTOR_METRICS` list them (the Grafana dashboard
under ``deploy/grafana`` is tested against these lists).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from stream_triggers.ops.health import DEFAULT_STALL_AFTER, Health, Probed
from stream_triggers.ops.stats import Buckets

__all__ = [
    "EXECUTOR_METRICS",
    "WORKER_METRICS",
    "ExecutorCollector",
    "ExecutorView",
    "Health",
    "MetricsServer",
    "Route",
    "WorkerCollector",
    "WorkerView",
    "executor_registry",
    "serve_executor_metrics",
    "serve_worker_metrics",
    "worker_registry",
]

log = logging.getLogger(__name__)

Route = Callable[[str, dict[str, list[str]]], tuple[int, str, bytes]]
"""A further endpoint: (path, parsed query) -> (status, content type, body)."""

_W = "stream_triggers_worker_"
_E = "stream_triggers_executor_"

WORKER_METRICS: Mapping[str, tuple[str, str]] = {
    _W + "events": (
        "counter",
        "Input events by record type and outcome: applied, skipped_already_applied, dead_letter.",
    ),
    _W + "batches": ("counter", "Batches processed (one RocksDB write batch and one offset commit each)."),
    _W + "batch_size": ("histogram", "Input events per batch."),
    _W + "batch_duration_seconds": ("histogram", "Seconds from taking a batch to committing it."),
    _W + "event_latency_seconds": (
        "histogram",
        "Seconds from an applied event's produced_at to the commit of its batch (end-to-end).",
    ),
    _W + "loop_busy_seconds": (
        "histogram",
        "Seconds of work per turn of the worker's loop (applying, checkpointing, sweeping; not waiting for input).",
    ),
    _W + "outputs": ("counter", "Output records produced (task-runs, task-results, sessions; not changelog)."),
    _W + "task_runs_requested": ("counter", "TaskRunRequested records produced (instances handed to executors)."),
    _W + "instance_outcomes": ("counter", "InstanceStatusChanged records produced, by new status."),
    _W + "sessions_finalized": ("counter", "SessionFinalized records produced."),
    _W + "dead_letters": ("counter", "Inputs sent to the dead-letter topic, by reason."),
    _W + "restores": ("counter", "Changelog restore passes (one per partition assignment)."),
    _W + "restored_records": ("counter", "Changelog records replayed into RocksDB while restoring."),
    _W + "restore_seconds": ("counter", "Seconds spent restoring partitions from the changelog."),
    _W + "quarantined_sessions": (
        "counter",
        "Sessions whose changelog record could not be read at restore (their inputs go to dead letters).",
    ),
    _W + "stores_rebuilt": ("counter", "Stores rebuilt because they reflect another changelog (a lost broker)."),
    _W + "rebalances": ("counter", "Partition assignments received from the consumer group."),
    _W + "owned_partitions": ("gauge", "Events partitions this worker owns now."),
    _W + "consumer_lag": ("gauge", "Events records not yet committed, per owned partition (high watermark - commit)."),
    _W + "sessions_purged": ("counter", "Sessions purged (every changelog key tombstoned), by reason: retention, ttl."),
    _W + "live_sessions": ("gauge", "Sessions in the RocksDB store, per owned partition (refreshed every sweep)."),
    _W + "offset_gaps": ("counter", "Fetches that skipped events offsets and were re-read from the gap."),
    _W + "ready": ("gauge", "1 once the worker owns its partitions and has restored them, else 0."),
    _W + "last_event_timestamp_seconds": ("gauge", "Unix time the worker last finished applying a batch."),
    _W + "info": ("gauge", "Always 1; the label engine says which engine applies inputs (native or python)."),
    _W + "engine_fallbacks": (
        "counter",
        "Inputs a native worker handed to the Python engine, by reason (0 with the built-in managers).",
    ),
}
"""Metric name (as in PromQL, without ``_total``/``_bucket`` suffixes) -> (type, help)."""

EXECUTOR_METRICS: Mapping[str, tuple[str, str]] = {
    _E + "tasks_running": ("gauge", "Tasks inside their _run now."),
    _E + "requests_in_flight": ("gauge", "Requests taken and not yet reported (queued, running or cooling down)."),
    _E + "requests_waiting": ("gauge", "Requests waiting for their cooldown (not_before) to pass."),
    _E + "tasks_started": ("counter", "Tasks started."),
    _E + "task_outcomes": (
        "counter",
        "Task outcomes by TriggerTask name: finished, failed, retried, status_changed, unknown_task, "
        "outcome_not_published (reported as failed: the outcome did not fit in an event).",
    ),
    _E + "task_duration_seconds": ("histogram", "Seconds a task's _run took, by TriggerTask name."),
    _E + "dead_letters": ("counter", "task-runs records sent to the dead-letter topic, by reason."),
    _E + "report_errors": (
        "counter",
        "Report attempts the broker did not acknowledge (retried; the request stays uncommitted meanwhile).",
    ),
    _E + "import_errors": ("gauge", "Task modules (--import) that failed to import."),
    _E + "ready": ("gauge", "1 once the executor owns task-runs partitions, else 0."),
}


class WorkerView(Probed, Protocol):
    """What the worker collector reads: ``stats`` (a ``WorkerStats``) and ``ready``."""

    @property
    def stats(self) -> Any: ...


class ExecutorView(Probed, Protocol):
    """What the executor collector reads."""

    @property
    def stats(self) -> Mapping[str, int]:
        """Totals: started, finished, failed, retried, other."""

    @property
    def task_stats(self) -> Any:
        """An ``ExecutorStats``."""

    @property
    def import_errors(self) -> Mapping[str, str]: ...

    def in_flight(self) -> int: ...

    def waiting(self) -> int: ...


def _counter(metrics: Mapping[str, tuple[str, str]], name: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, metrics[name][1], labels=labels)


def _gauge(metrics: Mapping[str, tuple[str, str]], name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, metrics[name][1], labels=labels)


def _histogram(
    metrics: Mapping[str, tuple[str, str]], name: str, labels: list[str] | None = None
) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, metrics[name][1], labels=labels)


def _add_buckets(family: HistogramMetricFamily, labels: list[str], buckets: Buckets) -> None:
    cumulative = buckets.cumulative()
    family.add_metric(labels, [(floatToGoString(le), count) for le, count in cumulative], buckets.total)


def _single(family: CounterMetricFamily | GaugeMetricFamily, value: float) -> Metric:
    family.add_metric([], value)
    return family


class WorkerCollector(Collector):
    """Reads a stream worker's stats at scrape time (any :class:`WorkerView`; tests pass a stand-in).
    It never calls the worker's Kafka clients: the consumer lag is the one the
      worker's loop refreshes every second (librdkafka blocks a watermark lookup from
      another thread while the loop is inside ``consume()``).
    """

    def __init__(self, worker: WorkerView) -> None:
        self.worker = worker

    def describe(self) -> list[Metric]:
        return []  # names are fixed (WORKER_METRICS); no need to collect at registration

    def collect(self) -> Iterator[Metric]:
        m = WORKER_METRICS
        stats = self.worker.stats
        events = _counter(m, _W + "events", ["type", "outcome"])
        for outcome, counts in (
            ("applied", stats.applied_by_type),
            ("skipped_already_applied", stats.skipped_by_type),
            ("dead_letter", stats.dead_letters_by_type),
        ):
            for type_name, count in sorted(counts.copy().items()):
                events.add_metric([type_name, outcome], count)
        yield events
        yield _single(_counter(m, _W + "batches"), stats.batches)
        for name, buckets in (
            ("batch_size", stats.batch_size),
            ("batch_duration_seconds", stats.batch_seconds),
            ("event_latency_seconds", stats.event_latency),
            ("loop_busy_seconds", stats.loop_busy),
        ):
            family = _histogram(m, _W + name)
            _add_buckets(family, [], buckets)
            yield family
        yield _single(_counter(m, _W + "outputs"), stats.outputs)
        produced = stats.produced
        yield _single(_counter(m, _W + "task_runs_requested"), produced.task_runs)
        outcomes = _counter(m, _W + "instance_outcomes", ["status"])
        for status, count in sorted(produced.statuses.copy().items()):
            outcomes.add_metric([status], count)
        yield outcomes
        yield _single(_counter(m, _W + "sessions_finalized"), produced.sessions_finalized)
        dead = _counter(m, _W + "dead_letters", ["reason"])
        for reason, count in sorted(stats.dead_letters.copy().items()):
            dead.add_metric([reason], count)
        yield dead
        yield _single(_counter(m, _W + "restores"), stats.restores)
        yield _single(_counter(m, _W + "restored_records"), stats.restored_records)
        yield _single(_counter(m, _W + "restore_seconds"), stats.restore_seconds)
        yield _single(_counter(m, _W + "quarantined_sessions"), getattr(stats, "quarantined_sessions", 0))
        yield _single(_counter(m, _W + "stores_rebuilt"), getattr(stats, "stores_rebuilt", 0))
        yield _single(_counter(m, _W + "rebalances"), stats.rebalances)
        yield _single(_gauge(m, _W + "owned_partitions"), stats.owned_partitions)
        lag = _gauge(m, _W + "consumer_lag", ["partition"])
        for partition, value in sorted(stats.consumer_lag.copy().items()):
            lag.add_metric([str(partition)], value)
        yield lag
        purged = _counter(m, _W + "sessions_purged", ["reason"])
        for reason, count in sorted(getattr(stats, "sessions_purged", {}).copy().items()):
            purged.add_metric([reason], count)
        yield purged
        live = _gauge(m, _W + "live_sessions", ["partition"])
        for partition, count in sorted(getattr(stats, "live_sessions", {}).copy().items()):
            live.add_metric([str(partition)], count)
        yield live
        yield _single(_counter(m, _W + "offset_gaps"), stats.offset_gaps)
        yield _single(_gauge(m, _W + "ready"), 1 if self.worker.ready.is_set() else 0)
        if stats.last_event_at is not None:
            yield _single(_gauge(m, _W + "last_event_timestamp_seconds"), stats.last_event_at)
        info = _gauge(m, _W + "info", ["engine"])
        info.add_metric([getattr(stats, "engine", "python")], 1)
        yield info
        fallbacks = _counter(m, _W + "engine_fallbacks", ["reason"])
        for reason, count in sorted(getattr(stats, "engine_fallbacks", {}).copy().items()):
            fallbacks.add_metric([reason], count)
        yield fallbacks


class ExecutorCollector(Collector):
    """Reads a task executor's stats at scrape time (any :class:`ExecutorView`)."""

    def __init__(self, executor: ExecutorView) -> None:
        self.executor = executor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = EXECUTOR_METRICS
        executor = self.executor
        stats = executor.task_stats
        yield _single(_gauge(m, _E + "tasks_running"), stats.running)
        yield _single(_gauge(m, _E + "requests_in_flight"), executor.in_flight())
        yield _single(_gauge(m, _E + "requests_waiting"), executor.waiting())
        yield _single(_counter(m, _E + "tasks_started"), executor.stats.get("started", 0))
        outcomes = _counter(m, _E + "task_outcomes", ["task", "outcome"])
        for task, by_outcome in sorted(stats.outcomes.copy().items()):
            for outcome, count in sorted(by_outcome.copy().items()):
                outcomes.add_metric([task, outcome], count)
        yield outcomes
        durations = _histogram(m, _E + "task_duration_seconds", ["task"])
        for task, buckets in sorted(stats.durations.copy().items()):
            _add_buckets(durations, [task], buckets)
        yield durations
        dead = _counter(m, _E + "dead_letters", ["reason"])
        for reason, count in sorted(stats.dead_letters.copy().items()):
            dead.add_metric([reason], count)
        yield dead
        yield _single(_counter(m, _E + "report_errors"), stats.report_errors)
        yield _single(_gauge(m, _E + "import_errors"), len(executor.import_errors))
        yield _single(_gauge(m, _E + "ready"), 1 if executor.ready.is_set() else 0)


def worker_registry(worker: WorkerView, *, process: bool = True) -> CollectorRegistry:
    """A fresh registry with the worker's collector (and ``process_*`` metrics from /proc)."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(worker))
    if process:
        ProcessCollector(registry=registry)
    return registry


def executor_registry(executor: ExecutorView, *, process: bool = True) -> CollectorRegistry:
    """A fresh registry with the executor's collector (and ``process_*`` metrics from /proc)."""
    registry = CollectorRegistry()
    registry.register(ExecutorCollector(executor))
    if process:
        ProcessCollector(registry=registry)
    return registry


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            self._status(*self.server.health.alive())
        elif path == "/readyz":
            self._status(*self.server.health.ready())
        elif route := next((r for prefix, r in self.server.routes.items() if path.startswith(prefix)), None):
            query = urllib.parse.parse_qs(self.path.partition("?")[2])
            self._send(*route(path, query))  # e.g. /sessions/<uid> (ops/queries.py)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

    def _status(self, ok: bool, why: str) -> None:
        body = json.dumps({"status": "ok" if ok else "unavailable", "detail": why}).encode() + b"\n"
        self._send(200 if ok else 503, "application/json", body)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class MetricsServer(ThreadingHTTPServer):
    """``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread; :meth:`close` stops it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Health,
        port: int,
        host: str = "0.0.0.0",
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.routes = dict(routes or {})
        """Path prefix -> handler of further endpoints (the worker's ``/sessions/``)."""
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        self.thread = threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("serving /metrics, /healthz and /readyz on port %d", self.port, extra={"port": self.port})
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def serve_worker_metrics(
    worker: WorkerView,
    port: int,
    host: str = "0.0.0.0",
    stall_after: float = DEFAULT_STALL_AFTER,
    routes: Mapping[str, Route] | None = None,
) -> MetricsServer:
    """Serve a worker's metrics, probes and ``routes`` on ``port`` (0: a free one; see ``.port``)."""
    return MetricsServer(worker_registry(worker), Health(worker, stall_after), port, host, routes).start()


def serve_executor_metrics(
    executor: ExecutorView, port: int, host: str = "0.0.0.0", stall_after: float = DEFAULT_STALL_AFTER
) -> MetricsServer:
    """Serve an executor's metrics and probes on ``port`` (0: a free one; see ``.port``)."""
    return MetricsServer(executor_registry(executor), Health(executor, stall_after), port, host).start()
