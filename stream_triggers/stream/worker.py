"""The stream worker: ``triggers.events`` -> session state -> output topics.

One consumer group; each worker owns some ``events`` partitions and, for each, a
RocksDB store restored from the co-partitioned changelog
(:mod:`~stream_triggers.stream.restore`) before any of the partition's events are
applied.  Per batch: apply each input in partition order
(:mod:`~stream_triggers.stream.inputs`), then make the batch durable in the commit
order written down in :mod:`~stream_triggers.stream.checkpoint`.

This module holds the worker's clients, its poll loop and its rebalance callbacks.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager, trigger_managers
from stream_triggers.ops.lifecycle import Lifecycle
from stream_triggers.stream.changelog_identity import stores_of_another_changelog
from stream_triggers.stream.checkpoint import Checkpoint, PartitionsLost, membership_check
from stream_triggers.stream.native_engine import new_applier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.pace import CheckpointPace, linger_after, take_batch
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.queries import OwnerAdvertiser, ServedState
from stream_triggers.stream.restore import restore
from stream_triggers.stream.retention import RetentionSweep
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import PartitionStore

__all__ = ["StreamWorker", "WorkerSettings", "WorkerStats"]

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0
"""How often the loop refreshes ``WorkerStats.consumer_lag`` (a local lookup per owned partition)."""
RESTORE_FETCH_WAIT_MS = 10
"""The restore's fetch wait, not ``--fetch-wait-ms``: a restore ends with a fetch that finds
nothing, which Apache Kafka holds for the whole wait (500 ms there would add that to each)."""


class StreamWorker(Lifecycle):
    """Applies trigger events to session state and publishes what happened."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        manager_class: type[TriggerManager] | None = None,
        on_batch: Callable[[StreamWorker], None] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.manager_class = manager_class or trigger_managers.get_class(settings.manager)
        self.stats = WorkerStats()
        self.on_batch = on_batch
        self._partitions: dict[int, Partition] = {}
        self._pace = CheckpointPace(settings.checkpoint_interval_s, settings.batch_size)
        self._in_flight: tuple[float, int] = (0.0, 0)
        """When the batches of the pending checkpoint began, and their events."""
        self._generation = -1  # the consumer group generation of the current assignment
        self._sink = OutputSink(self.topics, self.stats.produced)
        self._applier = new_applier(settings, self.manager_class, self.topics, self._sink, self.stats)
        self.stats.engine = self._applier.engine
        os.makedirs(settings.state_dir, exist_ok=True)
        bootstrap, group = settings.bootstrap, settings.group
        # The user's kafka_config reaches every client; consumer_config / producer_config
        # are per-client extras on top of it.
        self._consumer = clients.consumer(
            bootstrap,
            "worker",
            group,
            kafka_config={**settings.kafka_config, **settings.consumer_config},
            **settings.input_consumer_options(),
        )
        self._restorer = clients.consumer(
            bootstrap,
            "worker-restore",
            f"{group}-restore",
            kafka_config=settings.kafka_config,
            enable_partition_eof=True,
            fetch_wait_max_ms=RESTORE_FETCH_WAIT_MS,
        )
        self._producer = clients.producer(
            bootstrap,
            "worker",
            kafka_config={**settings.kafka_config, **settings.producer_config},
            **settings.producer_options(),
        )
        self._checkpoint = Checkpoint(self._producer, self._consumer, self.topics, settings.whole_session_bytes)
        self.served = ServedState()
        """Restored partitions, as the query endpoint reads them (stream/queries.py)."""
        self._advertiser = OwnerAdvertiser(self._producer, self.topics, self.served, settings)
        self._retention = RetentionSweep(settings, self.topics, self._producer, self._checkpoint, self.stats)

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        """Consume until :meth:`stop`; then commit, close the stores and leave the group."""
        settings = self.settings
        # Session states are acyclic, immutable values freed by reference counting; with
        # thousands cached, frequent cyclic-GC passes over them only cost time.
        gc.set_threshold(50_000, 50, 100)
        self._consumer.subscribe(
            [self.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "worker started: group=%s topics=%s engine=%s",
            settings.group,
            self.topics.events,
            self.stats.engine,
            extra={"engine": self.stats.engine},
        )
        lag_due, linger = 0.0, 0.0
        try:
            while not self.stopping:
                self.heartbeat()
                now = self.loop_at
                if now >= lag_due:
                    self.stats.consumer_lag = self.consumer_lag()
                    lag_due = now + LAG_INTERVAL_S
                if self._checkpoint.pending is not None:  # (moved on as the broker acknowledges it)
                    wait = settings.in_flight_wait_s
                else:
                    wait = self._pace.wait_s(now, settings.idle_wait_s, self._retention.due_at)
                messages = take_batch(self._consumer, settings.batch_size, wait, linger)
                busy_from = time.monotonic()
                linger = linger_after(len(messages), settings.batch_size, settings.linger_s)
                if messages:
                    self._process(messages, busy_from)
                if self._checkpoint.pending is not None:
                    self._finish_checkpoint(wait=False)
                pace = self._pace
                if pace.due(time.monotonic()) and (
                    self._checkpoint.pending is None or pace.events >= settings.batch_size
                ):  # (with one still in flight, the batches in hand wait for the next turn, up to batch_size)
                    self._checkpoint_now(wait=False)
                if not self.stopping and self._pace.since is None and self._retention.due(now):
                    lag, settle = self.stats.consumer_lag, self._applier.settle
                    self._retention.tick(
                        now,
                        self._partitions.values(),
                        lag,
                        self._owner_check,
                        settle,
                        lambda: self._finish_checkpoint(wait=True),
                    )  # (retention purges between checkpoints)
                self.stats.loop_busy.observe(time.monotonic() - busy_from)
            self._checkpoint_now()  # SIGTERM: the batches in hand are committed before leaving
        finally:
            self.loop_at = None
            self._close()

    def _close(self) -> None:
        """Flush, close the stores, then leave the group - the last even when the rest fails.

        A store whose directory vanished fails to close; the consumer must still close, or
        the group waits a whole session timeout before it gives the partitions to others.
        """
        self.ready.clear()
        self._pace.take()  # the loop failed before committing these: nothing more is published
        self.served.withdraw(list(self._partitions))  # no query reads a store from here on
        try:
            self._producer.flush(30)
            for partition in self._partitions.values():
                partition.store.close_or_report()
        finally:
            self._partitions.clear()
            self.stats.owned_partitions = 0
            self.stats.consumer_lag = {}
            self._consumer.close()
            self._restorer.close()
            log.info("worker stopped")

    # -- rebalancing ---------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self.ready.clear()
        generation = self._generation = clients.group_generation(consumer)
        for tp in assigned:
            partition = self._partitions.get(tp.partition)
            if partition is None:
                store = PartitionStore(self.settings.state_dir, self.topics.events, tp.partition)
                partition = self._partitions[tp.partition] = Partition(tp.partition, store)
            if partition.epoch != generation:
                partition.sessions.clear()  # their encoded bytes carry the old epoch
            partition.epoch = generation
            partition.restored = False
        partitions = [self._partitions[tp.partition] for tp in assigned]
        self.served.restoring(partitions)
        self._restore(partitions)
        if self.stopping:
            return  # SIGTERM during the restore: leave without serving
        for partition in partitions:
            seen = partition.store.max_epoch
            if partition.epoch < seen:
                # The group's generation went back (a deleted group): epochs must only grow.
                log.warning(
                    "group generation %d is not above epoch %d seen in %s[%d]; using %d",
                    partition.epoch,
                    seen,
                    self.topics.changelog,
                    partition.number,
                    seen + 1,
                )
                partition.epoch = seen + 1
        if assigned:
            for tp in consumer.committed(assigned, timeout=30):
                partition = self._partitions[tp.partition]
                partition.next_offset = partition.committed = tp.offset if tp.offset >= 0 else None
        for partition in partitions:
            partition.restored = True
        self.served.serve(partitions)
        self._advertiser.advertise(partitions)
        self.stats.rebalances += 1
        self.stats.owned_partitions = len(self._partitions)
        numbers = sorted(tp.partition for tp in assigned)
        log.info("assigned partitions %s", numbers, extra={"partitions": numbers})
        if self._partitions:
            self.ready.set()

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        if self._pace.since is not None or self._checkpoint.pending is not None:  # the group moved on: publish nothing
            self._drop_batch(PartitionsLost("partitions lost (the session timed out)"))
        self._on_revoke(consumer, lost)

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._checkpoint_now()  # still the owner: publish the batches in hand first
        self.served.withdraw(tp.partition for tp in revoked)
        for tp in revoked:
            partition = self._partitions.pop(tp.partition, None)
            if partition is not None:
                partition.store.close_or_report()
        self.stats.owned_partitions = len(self._partitions)
        if not self._partitions:
            self.ready.clear()  # owning nothing, the worker serves nothing
        numbers = sorted(tp.partition for tp in revoked)
        log.info("revoked partitions %s", numbers, extra={"partitions": numbers})

    def _restore(self, partitions: list[Partition]) -> None:
        if not partitions:
            return
        changelog = self.topics.changelog
        foreign = stores_of_another_changelog(self._restorer, changelog, partitions, self.settings.restore_timeout_s)
        for partition in partitions:
            if partition.number in foreign:
                log.error(
                    "the local store of partition %d reflects %s up to offset %d, but %s: "
                    "rebuilding the store from the changelog",
                    partition.number,
                    changelog,
                    partition.store.changelog_checkpoint,
                    foreign[partition.number],
                )
                self.stats.stores_rebuilt += 1
                partition.store.close_or_report()
                PartitionStore.wipe(self.settings.state_dir, self.topics.events, partition.number)
                partition.store = PartitionStore(self.settings.state_dir, self.topics.events, partition.number)
                partition.sessions.clear()
        result = restore(
            self._restorer,
            self.topics.changelog,
            partitions,
            self.settings.restore_timeout_s,
            on_progress=self.heartbeat,  # restoring is progress too (liveness)
            should_stop=lambda: self.stopping,
        )
        self.stats.restores += 1
        self.stats.restored_records += result.records
        self.stats.quarantined_sessions += result.quarantined
        self.stats.restore_seconds += result.seconds
        numbers = sorted(p.number for p in partitions)
        log.info(
            "restored partitions %s: %d changelog records in %.3f s%s",
            numbers,
            result.records,
            result.seconds,
            "" if result.complete else " (interrupted by a stop)",
            extra={"partitions": numbers, "records": result.records, "seconds": round(result.seconds, 6)},
        )

    # -- one batch ---------------------------------------------------------------------

    def _process(self, messages: list[Any], batch_began: float) -> None:
        stats = self.stats
        if stats.first_event_at is None:
            stats.first_event_at = time.time()
            stats.cpu_first = time.process_time()
        partitions = self._partitions
        produce = self._producer.produce
        acks = self._checkpoint.outputs
        on_delivery = acks.delivered
        pending: dict[Partition, list[tuple[int, bytes | None, bytes | None]]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            partition = partitions.get(message.partition())
            if partition is None or partition.skip_rest or not partition.restored:
                continue
            offset = message.offset()
            expected = partition.next_offset
            if expected is not None and offset != expected:
                if offset < expected:
                    continue  # re-delivered after a seek: already handled
                # A fetch skipped records (seen on Tansu): read again from the gap.
                stats.offset_gaps += 1
                log.warning("offset gap on partition %d: expected %d, got %d", partition.number, expected, offset)
                self._consumer.seek(TopicPartition(self.topics.events, partition.number, expected))
                partition.skip_rest = True
                continue
            if partition.committed is None:
                partition.committed = offset  # nothing before it is pending: safe to commit (and probe with)
            partition.next_offset = offset + 1
            partition.commit_offset = offset + 1
            records = pending.get(partition)
            if records is None:
                records = pending[partition] = []
            records.append((offset, message.key(), message.value()))
        for partition, records in pending.items():
            outputs = self._applier.apply_batch(partition, records)
            acks.unacked += len(outputs)
            for topic, key, value in outputs:
                produce(topic, value, key, on_delivery=on_delivery)
        stats.last_event_at = time.time()
        stats.cpu_last = time.process_time()
        for partition in partitions.values():
            partition.skip_rest = False  # the re-fetch after a gap starts with the next consume()
        self._pace.applied(batch_began, len(messages))
        self._producer.poll(0)  # outputs leave now (linger.ms); delivery reports are served

    def _checkpoint_now(self, wait: bool = True) -> None:
        """Make the batches in hand durable (checkpoint.py; when: stream/pace.py).

        ``wait=False`` (the loop): the state records are encoded now, and the loop goes on
        applying while the broker acknowledges the outputs and then the state records
        (:meth:`_finish_checkpoint` moves the checkpoint on as they are).
        """
        self._finish_checkpoint(wait=True)  # (one checkpoint in flight at a time)
        taken = self._pace.take()
        if taken is None:
            return
        partitions = self._partitions
        self._applier.encode(partitions.values())
        self._checkpoint.begin(partitions.values(), self._owner_check(taken[0]))
        self._in_flight = taken
        self._finish_checkpoint(wait)

    def _finish_checkpoint(self, wait: bool) -> None:
        """Move the pending checkpoint on as far as the broker acknowledged (``wait``: to its
        end); once complete, the caches are trimmed."""
        try:
            if self._checkpoint.pending is None or not self._checkpoint.complete(wait):
                return
        except PartitionsLost as exc:
            self._drop_batch(exc)
            return
        since, events = self._in_flight
        partitions = self._partitions
        limit = max(100, self.settings.session_cache_size // max(1, len(partitions)))
        for partition in partitions.values():
            partition.trim(limit)
        self._applier.settle(list(partitions.values()))
        self.stats.observe_checkpoint(events, since, self._applier.produced_at)
        if self.on_batch is not None:
            self.on_batch(self)  # (after each checkpoint: the caches are trimmed)

    def _owner_check(self, batch_began: float) -> Callable[[], bool]:
        """Whether the worker still owns its partitions, asked right before publishing state
        (checkpoint.membership_check: a broker round trip only after a slow batch)."""
        return membership_check(
            self._consumer,
            lambda: self._generation,
            self.topics.events,
            self._partitions.values(),  # (a view: the partitions owned when the check is asked)
            batch_began,
            self.settings.session_timeout_ms / 2000,
        )

    def _drop_batch(self, reason: BaseException) -> None:
        """The partitions moved while the batch was in hand: publish nothing, read again."""
        numbers = sorted(self._partitions)
        log.error(
            "dropping the batch in hand, not publishing its state: %s (partitions %s)",
            reason,
            numbers,
            extra={"partitions": numbers},
        )
        self.stats.batches_dropped += 1
        self._checkpoint.discard()
        self._pace.take()  # (batches applied while a refused checkpoint was in flight go too)
        for partition in self._partitions.values():
            partition.drop_batch()
            if partition.committed is not None:
                try:
                    self._consumer.seek(TopicPartition(self.topics.events, partition.number, partition.committed))
                except KafkaException:
                    pass  # no longer assigned: the rebalance callbacks take over
        self._applier.produced_at.clear()

    def consumer_lag(self) -> dict[int, int]:
        """Owned ``events`` partition -> records not yet committed (``clients.consumer_lag``: loop thread only)."""
        owned = self._partitions.items()
        positions = {n: p.next_offset if p.commit_offset is None else p.commit_offset for n, p in owned}
        return clients.consumer_lag(self._consumer, self.topics.events, positions)
