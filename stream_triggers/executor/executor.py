"""Task executor: runs TriggerTasks requested on ``triggers.task-runs`` and reports back.

The Kafka replacement for the original framework's Celery workers.  For each
request routed to a runner this executor serves: report ``running`` (with the
actual kwargs), run ``_run(context)`` in a thread pool, report the outcome
(``finished`` with the cascade kwargs, ``failed`` with the exception, a status the
task chose, or a retry) to ``triggers.events``, where the stream worker owning the
session applies it.

Offsets are committed only up to the lowest request whose outcome is not yet
acknowledged by the broker (:mod:`.offsets`), so a crash re-runs at most the requests
in flight (at-least-once execution; the worker ignores a duplicate report).  A request
whose ``not_before`` is in the future waits in a timer heap, not in a pool thread, so a
cooldown never blocks other tasks.  Executors serving different runners use different
consumer groups (``stream-triggers-executor-<runner>`` by default), so each sees every
request and takes only its own.

Every step of a revoke or a shutdown is bounded by ``shutdown_timeout_s`` (see
:mod:`.shutdown`), so SIGTERM ends the process even while the broker does not answer.
"""

from __future__ import annotations

import heapq
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream_triggers.events import jsonx
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.records import datetime_from_us
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.lifecycle import Lifecycle
from stream_triggers.storages.kafka import KafkaStorage

from .offsets import OffsetTracker
from .reports import Reporter
from .run import run_request
from .settings import ExecutorSettings, import_task_modules
from .shutdown import bounded
from .stats import ExecutorStats, TaskCounters

__all__ = ["TaskExecutor"]

log = logging.getLogger(__name__)


@dataclass
class Request:
    partition: int
    offset: int
    record: dict[str, Any]
    kwargs: dict[str, Any]


class TaskExecutor(Lifecycle):
    """Consumes task-run requests for one runner name and executes them in a pool."""

    def __init__(self, settings: ExecutorSettings) -> None:
        super().__init__()
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.import_errors = import_task_modules(settings.imports)
        self.counters = TaskCounters()
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="task")
        self._tracker = OffsetTracker()
        self._timers: list[tuple[float, int, Request]] = []
        self._timer_seq = 0
        self._paused = False
        self._owned: set[int] = set()
        self._closing = False
        self._committed: dict[int, int] = {}  # partition -> offset last committed
        self._futures: dict[tuple[int, int], Future[None]] = {}  # (partition, offset) -> submitted
        self._consumer = clients.consumer(
            settings.bootstrap,
            "executor",
            settings.group_id,
            kafka_config=settings.kafka_config,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(300, settings.session_timeout_ms // 6),
            max_poll_interval_ms=settings.max_poll_interval_ms,
            fetch_wait_max_ms=settings.fetch_wait_ms,
            **settings.consumer_config,
        )
        self._producer = clients.producer(
            settings.bootstrap,
            "executor",
            kafka_config=settings.kafka_config,
            message_timeout_ms=max(1, int(settings.report_timeout_s * 1000)),
        )
        self._reporter = Reporter(settings, self._producer, self.counters, self._stop.wait, _now)

    # -- what metrics read ------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Totals: started, finished, failed, retried, other."""
        return self.counters.stats

    @property
    def task_stats(self) -> ExecutorStats:
        return self.counters.task_stats

    def waiting(self) -> int:
        """Requests held back until their cooldown ends (``not_before``)."""
        return len(self._timers)

    def in_flight(self) -> int:
        """Requests taken and not yet reported: queued for the pool, running, or waiting."""
        return len(self._futures) + len(self._timers)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until :meth:`stop`; then finish the tasks in flight, commit, leave."""
        self._consumer.subscribe(
            [self.topics.task_runs], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("executor started: runner=%s group=%s", self.settings.runner, self.settings.group_id)
        try:
            while not self.stopping:
                self.heartbeat()
                self._release_due_timers()
                capacity = self.settings.max_in_flight - self.in_flight()
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

    def _shutdown(self) -> None:
        """Hand back what waits, let what runs finish and report, commit, leave.

        All within ``shutdown_timeout_s``: the commit may take half of what the tasks in
        hand left, leaving the group the rest (each given up, with a warning, when the
        broker does not answer).
        """
        deadline = time.monotonic() + self.settings.shutdown_timeout_s

        def left(share: float = 1.0) -> float:
            return max(0.1, (deadline - time.monotonic()) * share)

        self._timers.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wait_for(self._futures_of(None), left())
        self._producer.flush(left(0.5))
        self._commit_now(left(0.5))
        self._closing = True  # close() revokes the partitions: nothing left to do for them
        if not bounded(self._consumer.close, left(), "leaving the consumer group"):
            log.warning("left without a clean group exit: the next executor waits a session timeout")
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

    # -- the group --------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        self._owned.update(numbers)
        if self._owned:
            self.ready.set()
        log.info("assigned task-runs partitions %s", numbers, extra={"partitions": numbers})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish what runs for these partitions (bounded), commit, then let them go.

        Requests waiting for their cooldown or for a pool thread are handed back: they stay
        pending in the tracker, so the commit stops before them and the next owner runs them.
        """
        numbers = sorted(tp.partition for tp in partitions)
        log.info("revoked task-runs partitions %s", numbers, extra={"partitions": numbers})
        self._owned.difference_update(numbers)
        if not self._owned:
            self.ready.clear()  # readiness tells the truth: nothing to serve now
        if self._closing:
            return
        self._timers = [t for t in self._timers if t[2].partition not in numbers]
        heapq.heapify(self._timers)
        limit = self.settings.shutdown_timeout_s
        for future in self._futures_of(numbers):
            future.cancel()
        self._wait_for(self._futures_of(numbers), limit)
        self._producer.flush(limit)
        # In the thread that serves the callback (the consumer is inside a rebalance): a
        # rebalance means the coordinator answers, so this commit does not hang.
        self._send_commit(self._tracker.committable(), asynchronous=False)
        self._tracker.forget(numbers)
        for number in numbers:
            self._committed.pop(number, None)

    def _futures_of(self, partitions: list[int] | None) -> list[Future[None]]:
        """Submitted requests of these partitions (None: all) not finished yet (queued or running)."""
        return [f for (p, _), f in list(self._futures.items()) if partitions is None or p in partitions]

    @staticmethod
    def _wait_for(futures: list[Future[None]], limit: float) -> None:
        deadline = time.monotonic() + limit
        for future in futures:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%d task(s) still running after %s s: their requests run again elsewhere", len(futures), limit
                )
                return
            try:
                future.result(remaining)
            except Exception:  # cancelled, or its report failed: counted and logged already
                pass

    def _commit(self) -> None:
        """The loop's asynchronous commit of the offsets that moved."""
        positions = {p: o for p, o in self._tracker.committable().items() if self._committed.get(p) != o}
        self._send_commit(positions, asynchronous=True)

    def _commit_now(self, limit: float) -> None:
        """A synchronous commit of every committable offset, given up after ``limit`` seconds."""
        positions = self._tracker.committable()
        if positions and not bounded(lambda: self._send_commit(positions, asynchronous=False), limit, "committing"):
            log.warning("offsets %s not committed: those requests may run again", positions)

    def _send_commit(self, positions: dict[int, int], asynchronous: bool) -> None:
        offsets = [TopicPartition(self.topics.task_runs, p, o) for p, o in positions.items()]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
                self._committed.update(positions)
            except Exception as exc:  # nothing to commit / rebalancing: retried next loop
                log.debug("commit skipped: %s", exc)

    # -- requests ---------------------------------------------------------------------------

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
            if self._reporter.dead_letter(message, exc.reason, str(exc), self.topics.dead_letter):
                self._tracker.done(partition, offset)
            return
        if record["runner"] != self.settings.runner:
            self._tracker.done(partition, offset)  # another runner's executors take it
            return
        request = Request(partition, offset, record, kwargs)
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

    def _submit(self, request: Request) -> None:
        key = (request.partition, request.offset)
        future: Future[None] = self._pool.submit(self._execute, request)
        self._futures[key] = future
        future.add_done_callback(lambda f: self._finished(request, f))

    def _finished(self, request: Request, future: Future[None]) -> None:
        self._futures.pop((request.partition, request.offset), None)
        if future.cancelled():
            return  # handed back before it started: stays pending, never committed past
        if future.exception() is not None:
            # Could not report (the executor is stopping): left uncommitted, it runs again elsewhere.
            log.error(
                "request %s:%d not reported: %s",
                request.partition,
                request.offset,
                future.exception(),
                extra={"session_uid": request.record["session_uid"], "instance": request.record["instance"]},
            )
            return
        self._tracker.done(request.partition, request.offset)

    def _execute(self, request: Request) -> None:
        settings = self.settings
        storage = KafkaStorage(
            request.record["session_uid"],
            settings.bootstrap,
            self.topics.prefix,
            producer=self._producer,
            timeout_s=settings.report_timeout_s,
            kafka_config=settings.kafka_config,
        )
        run_request(request.record, request.kwargs, storage, self._reporter, self.counters, self.import_errors, _now)


def _now() -> Any:
    return datetime_from_us(time.time_ns() // 1000)
