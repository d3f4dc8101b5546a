"""Task executor: runs TriggerTasks requested on ``triggers.task-runs`` and reports back.

The Kafka replacement for the original framework's Celery workers.  For each
request routed to a runner this executor serves: report ``running`` (with the
actual kwargs), run ``_run(context)`` in a thread pool, report the outcome
(``finished`` with the cascade kwargs, ``failed`` with the exception, a status the
task chose, or a retry) to ``triggers.events``, where the stream worker owning the
session applies it.

Offsets are committed only up to the lowest request whose outcome is not yet
acknowledged by the broker, so a crash re-runs at most the requests in flight
(at-least-once execution; the worker ignores a duplicate report).  A request whose
``not_before`` is in the future waits in a timer heap, not in a pool thread, so a
cooldown never blocks other tasks.  Executors serving different runners use
different consumer groups (``stream-triggers-executor-<runner>`` by default), so
each sees every request and takes only its own.
"""

from __future__ import annotations

import heapq
import importlib
import logging
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream_triggers.engine import Input, StatusReported
from stream_triggers.events import jsonx
from stream_triggers.events.codec import CodecError, decode, encode
from stream_triggers.events.records import datetime_from_us, dead_letter_record, record_from_input
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import failure_metadata, trigger_managers
from stream_triggers.ops.stats import TASK_SECONDS_BUCKETS, Buckets
from stream_triggers.registry import RegistryKeyError
from stream_triggers.storages.kafka import KafkaStorage
from stream_triggers.task import (
    Changed,
    Failed,
    Finished,
    Retried,
    TaskContext,
    UnknownTask,
    execute,
    outcome_input,
    resolve_task,
    running_input,
)
from stream_triggers.types import Status, TaskInstance

__all__ = ["ExecutorSettings", "ExecutorStats", "TaskExecutor", "import_task_modules"]

log = logging.getLogger(__name__)


@dataclass
class ExecutorSettings:
    bootstrap: str
    imports: list[str] = field(default_factory=list)
    runner: str = "kafka"
    group: str | None = None
    topic_prefix: str = "triggers"
    concurrency: int = 4
    max_in_flight: int = 1_000
    """Requests taken and not yet reported (queued for the pool, running, cooling down)
    beyond which fetching pauses; queued ones are handed back on revoke and shutdown."""
    session_timeout_ms: int = 6_000
    fetch_wait_ms: int = 10
    max_poll_interval_ms: int = 300_000
    kafka_config: dict[str, Any] = field(default_factory=dict)
    """The user's librdkafka settings (security, timeouts...), for every client the executor builds."""
    consumer_config: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return self.group or f"stream-triggers-executor-{self.runner}"


def import_task_modules(modules: Iterable[str]) -> dict[str, str]:
    """Import the modules defining tasks; returns module -> error for those that failed."""
    errors = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            errors[module] = "".join(traceback.format_exception_only(exc)).strip()
            log.error("cannot import task module %s: %s", module, errors[module])
    return errors


@dataclass
class ExecutorStats:
    """Per-task counters the metrics endpoint reads; pool threads update them under a lock.

    ``outcomes``: TriggerTask name -> outcome (``finished``, ``failed``, ``retried``,
    ``status_changed``, ``unknown_task``) -> count; ``durations``: TriggerTask name ->
    seconds its ``_run`` took.
    """

    running: int = 0  # tasks inside _run right now
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    durations: dict[str, Buckets] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    report_errors: int = 0  # requests whose outcome could not be reported (left uncommitted)


_OUTCOMES = {Finished: "finished", Failed: "failed", Retried: "retried", Changed: "status_changed"}


@dataclass
class _Request:
    partition: int
    offset: int
    record: dict[str, Any]
    kwargs: dict[str, Any]


class _OffsetTracker:
    """Per partition: which requests are done, so commits never pass an unfinished one."""

    def __init__(self) -> None:
        self._pending: dict[int, set[int]] = {}
        self._highest: dict[int, int] = {}
        self._lock = threading.Lock()

    def started(self, partition: int, offset: int) -> None:
        with self._lock:
            self._pending.setdefault(partition, set()).add(offset)
            self._highest[partition] = max(self._highest.get(partition, -1), offset)

    def done(self, partition: int, offset: int) -> None:
        with self._lock:
            self._pending.get(partition, set()).discard(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> next offset to commit (lowest pending, or one past the highest seen)."""
        with self._lock:
            return {
                p: (min(self._pending[p]) if self._pending.get(p) else highest + 1)
                for p, highest in self._highest.items()
            }

    def forget(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._pending.pop(p, None)
                self._highest.pop(p, None)


class TaskExecutor:
    """Consumes task-run requests for one runner name and executes them in a pool."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.import_errors = import_task_modules(settings.imports)
        self.ready = threading.Event()
        self.stats: dict[str, int] = {"started": 0, "finished": 0, "failed": 0, "retried": 0, "other": 0}
        self.task_stats = ExecutorStats()
        self._stats_lock = threading.Lock()
        self.loop_at: float | None = None  # time.monotonic() of the last loop turn; None unless running
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="task")
        self._tracker = _OffsetTracker()
        self._timers: list[tuple[float, int, _Request]] = []
        self._timer_seq = 0
        self._paused = False
        self._committed: dict[int, int] = {}  # partition -> offset last committed
        self._running = 0
        self._futures: dict[tuple[int, int], Future[None]] = {}  # (partition, offset) -> submitted
        self._running_lock = threading.Lock()
        client = f"stream-triggers-executor-{os.getpid()}"
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "client.id": client,
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(300, settings.session_timeout_ms // 6),
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "fetch.wait.max.ms": settings.fetch_wait_ms,
                **settings.consumer_config,
            }
        )
        self._producer = Producer(
            {
                "bootstrap.servers": settings.bootstrap,
                "client.id": client,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "partitioner": "murmur2_random",
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self) -> None:
        """Consume until :meth:`stop`; then finish the tasks in flight, commit, leave."""
        self._consumer.subscribe(
            [self.topics.task_runs], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("executor started: runner=%s group=%s", self.settings.runner, self.settings.group_id)
        try:
            while not self._stop.is_set():
                self.loop_at = time.monotonic()
                self._release_due_timers()
                capacity = self.settings.max_in_flight - self._busy()
                self._throttle(capacity <= 0)
                # Every record consume() returns is taken, even past capacity: a record
                # dropped here would be committed past by the next ones, and never run.
                for message in self._consumer.consume(max(1, min(capacity, 500)), 0.05):
                    self._take(message)
                self._commit()
        finally:
            self.loop_at = None
            self.ready.clear()
            self._shutdown()

    def waiting(self) -> int:
        """Requests held back until their cooldown ends (``not_before``)."""
        return len(self._timers)

    def in_flight(self) -> int:
        """Requests taken and not yet reported: queued for the pool, running, or waiting."""
        return self._busy()

    def _shutdown(self) -> None:
        # Requests waiting for their cooldown or for a pool thread are handed back (not
        # committed); the running ones finish and report.
        self._timers.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._producer.flush(30)
        self._commit(asynchronous=False)
        self._consumer.close()
        log.info("executor stopped")

    def _throttle(self, full: bool) -> None:
        """At capacity, pause fetching (consume() still serves the group); resume when a slot frees.

        Paused again on every turn while full, so partitions assigned meanwhile are paused too.
        Rarely hit: the pool's queue takes up to ``max_in_flight`` requests, because a resumed
        partition is fetched again only after a delay (about 0.7 s measured on Tansu).
        """
        if full:
            self._consumer.pause(self._consumer.assignment())
        elif self._paused:
            self._consumer.resume(self._consumer.assignment())
        self._paused = full

    def _busy(self) -> int:
        with self._running_lock:
            return self._running + len(self._timers)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.ready.set()
        numbers = sorted(tp.partition for tp in partitions)
        log.info("assigned task-runs partitions %s", numbers, extra={"partitions": numbers})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what runs for these partitions (bounded), commit, then let them go.
        numbers = [tp.partition for tp in partitions]
        log.info("revoked task-runs partitions %s", sorted(numbers), extra={"partitions": sorted(numbers)})
        # Requests waiting for their cooldown or for a pool thread are handed back: they
        # stay pending in the tracker, so the commit stops before them and the next owner
        # runs them.  Only the running ones are waited for.
        self._timers = [t for t in self._timers if t[2].partition not in numbers]
        heapq.heapify(self._timers)
        for future in self._futures_of(numbers):
            future.cancel()
        deadline = time.monotonic() + 30
        while self._futures_of(numbers) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._producer.flush(30)
        self._commit(asynchronous=False)
        self._tracker.forget(numbers)
        for number in numbers:
            self._committed.pop(number, None)

    def _futures_of(self, partitions: list[int]) -> list[Future[None]]:
        """Submitted requests of these partitions not finished yet (queued or running)."""
        with self._running_lock:
            return [f for (partition, _), f in self._futures.items() if partition in partitions]

    def _commit(self, asynchronous: bool = True) -> None:
        """Commit the committable offsets; the loop's asynchronous commits skip unchanged ones."""
        positions = self._tracker.committable()
        if asynchronous:
            positions = {p: o for p, o in positions.items() if self._committed.get(p) != o}
        offsets = [TopicPartition(self.topics.task_runs, p, o) for p, o in positions.items()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
                self._committed.update(positions)
            except Exception as exc:  # nothing to commit / rebalancing: retried next loop
                log.debug("commit skipped: %s", exc)

    # -- requests ------------------------------------------------------------------------

    def _take(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
            return
        partition, offset = message.partition(), message.offset()
        self._tracker.started(partition, offset)
        try:
            type_name, record = decode(message.value() or b"")
            if type_name != "TaskRunRequested":
                raise CodecError("unexpected_record", f"{type_name} records do not belong on {self.topics.task_runs}")
            # Read here, not in the pool: a request that cannot be run must not hold back commits.
            kwargs = jsonx.loads(record["kwargs_json"])
            if not isinstance(kwargs, dict):
                raise CodecError("invalid_payload", f"kwargs_json must be a JSON object, not {type(kwargs).__name__}")
        except CodecError as exc:
            self._dead_letter(message, exc.reason, str(exc))
            self._tracker.done(partition, offset)
            return
        if record["runner"] != self.settings.runner:
            self._tracker.done(partition, offset)  # another runner's executors take it
            return
        request = _Request(partition, offset, record, kwargs)
        due = record["not_before"] / 1e6
        if due > time.time():
            self._timer_seq += 1
            heapq.heappush(self._timers, (due, self._timer_seq, request))
        else:
            self._submit(request)

    def _release_due_timers(self) -> None:
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            self._submit(heapq.heappop(self._timers)[2])

    def _submit(self, request: _Request) -> None:
        future: Future[None] = self._pool.submit(self._execute, request)
        with self._running_lock:
            self._running += 1
            self._futures[request.partition, request.offset] = future
        future.add_done_callback(lambda f: self._finished(request, f))

    def _finished(self, request: _Request, future: Future[None]) -> None:
        with self._running_lock:
            self._running -= 1
            self._futures.pop((request.partition, request.offset), None)
        if future.cancelled():
            return  # handed back before it started: stays pending, never committed past
        if future.exception() is not None:
            # Could not even report: leave the offset uncommitted so it is retried.
            with self._stats_lock:
                self.task_stats.report_errors += 1
            log.error(
                "request %s:%d not reported: %s",
                request.partition,
                request.offset,
                future.exception(),
                extra={"session_uid": request.record["session_uid"], "instance": request.record["instance"]},
            )
            return
        self._tracker.done(request.partition, request.offset)

    def _execute(self, request: _Request) -> None:
        record = request.record
        uid = record["session_uid"]
        instance = record["instance"]
        kwargs = request.kwargs
        storage = KafkaStorage(uid, self.settings.bootstrap, self.topics.prefix, producer=self._producer)

        def manager_factory() -> Any:
            try:
                return trigger_managers.get(record["manager"], storage=storage)
            except RegistryKeyError:
                return trigger_managers.get("default", storage=storage)

        self._report(uid, running_input(instance, kwargs, _now()))
        run = record["run"]
        extra = {"session_uid": uid, "instance": instance, "task": run}
        try:
            task_cls = resolve_task(run)
        except UnknownTask as exc:
            if self.import_errors:
                exc = UnknownTask(f"{exc} Task modules that failed to import: {self.import_errors}")
            self._count(run, "unknown_task", None)
            log.error("task %s for %s failed: %s", run, instance, exc, extra=extra)
            self._report(uid, StatusReported(instance, Status.FAILED, failure_metadata(exc), _now()))
            return
        with self._stats_lock:
            self.stats["started"] += 1
            self.task_stats.running += 1
        context = TaskContext(instance, kwargs, manager_factory, session_uid=uid)
        started = time.perf_counter()
        try:
            outcome = execute(task_cls, context, record["depth"])
        finally:
            elapsed = time.perf_counter() - started
            with self._stats_lock:
                self.task_stats.running -= 1
        self._count(run, _OUTCOMES.get(type(outcome), "other"), elapsed)
        if isinstance(outcome, Failed):
            error = outcome.metadata.get(TaskInstance.META_EXCEPTION_TYPE)
            log.warning("task %s for %s failed: %s", run, instance, error, extra=extra)
        elif isinstance(outcome, Retried):
            log.info("task %s for %s asked to retry (cooldown %s s)", run, instance, outcome.cooldown, extra=extra)
        self._report(uid, outcome_input(instance, outcome, _now()))

    def _count(self, task: str, outcome: str, seconds: float | None) -> None:
        legacy = outcome if outcome in ("finished", "failed", "retried") else "other"
        if outcome == "unknown_task":
            legacy = "failed"
        with self._stats_lock:
            stats = self.task_stats
            self.stats[legacy] += 1
            by_outcome = stats.outcomes.setdefault(task, {})
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
            if seconds is not None:
                durations = stats.durations.get(task)
                if durations is None:
                    durations = stats.durations[task] = Buckets(TASK_SECONDS_BUCKETS)
                durations.observe(seconds)

    def _report(self, uid: str, event: Input) -> None:
        """Publish a status report to the events topic and wait for the broker's ack."""
        type_name, fields = record_from_input(event)
        record = {"event_id": uuid.uuid4().hex, "session_uid": uid, "produced_at": time.time_ns() // 1000, **fields}
        errors: list[Any] = []
        self._producer.produce(
            self.topics.events,
            encode(type_name, record),
            uid.encode(),
            on_delivery=lambda error, _m: errors.append(error) if error else None,
        )
        if self._producer.flush(30) or errors:
            raise RuntimeError(f"report for {uid}/{event} not acknowledged: {errors}")

    def _dead_letter(self, message: Any, reason: str, error: str) -> None:
        key = message.key()
        record = dead_letter_record(
            f"executor:{message.partition()}:{message.offset()}:dead-letter",
            reason,
            error,
            message.topic(),
            message.partition(),
            message.offset(),
            key,
            message.value(),
            time.time_ns() // 1000,
        )
        uid = record["session_uid"]
        with self._stats_lock:
            self.task_stats.dead_letters[reason] = self.task_stats.dead_letters.get(reason, 0) + 1
        log.warning(
            "dead letter %s at %s:%d: %s",
            reason,
            message.partition(),
            message.offset(),
            error,
            extra={"session_uid": uid, "reason": reason, "partition": message.partition(), "offset": message.offset()},
        )
        self._producer.produce(self.topics.dead_letter, encode("DeadLetter", record), key)
        self._producer.flush(30)


def _now() -> Any:
    return datetime_from_us(time.time_ns() // 1000)
