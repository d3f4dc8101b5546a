"""The worker's side of interactive queries: serve committed state, advertise where.

:class:`ServedState` is what the HTTP thread reads (ops/queries.py's ``SessionSource``):
the partitions the worker restored, under a lock that the loop thread also takes
before it closes a store, so a query never reads a closed RocksDB.  It serves only the
store - written after the changelog acknowledged each state - never the batch in hand.

:class:`OwnerAdvertiser` writes, once a newly assigned partition is restored, that
this worker now serves it, with its owner epoch, to ``<prefix>.owners``
(kafka/owners.py says why a topic).  It does so before the assignment's first batch
is applied, so once the new owner committed any newer state, the owners topic already
names it, and readers never take an older owner's (committed, but older) answer for
the newest one.  A missing owners topic (created before it
existed) or a failed write only costs readers their fast path: they fall back to
the changelog; the worker logs it and carries on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from confluent_kafka import KafkaException, Producer

from stream_triggers.kafka.owners import publish_owners
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.queries import CommittedSession, NotOwner, Restoring
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.settings import WorkerSettings

__all__ = ["OwnerAdvertiser", "ServedState"]

log = logging.getLogger(__name__)


class ServedState:
    """Owned partitions as the query endpoint sees them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: dict[int, int] = {}  # partition -> owner epoch, restored or not
        self._served: dict[int, Partition] = {}  # restored partitions
        self.partition_count: int | None = None
        """The ``events`` partition count, once known (a reader may pass it too)."""

    def restoring(self, partitions: Iterable[Partition]) -> None:
        with self._lock:
            for partition in partitions:
                self._served.pop(partition.number, None)
                self._owned[partition.number] = partition.epoch

    def serve(self, partitions: Iterable[Partition]) -> None:
        with self._lock:
            for partition in partitions:
                self._owned[partition.number] = partition.epoch
                self._served[partition.number] = partition

    def withdraw(self, numbers: Iterable[int]) -> None:
        """Stop serving ``numbers``; call before their stores close."""
        with self._lock:
            for number in numbers:
                self._owned.pop(number, None)
                self._served.pop(number, None)

    def committed_session(self, uid: str, partitions: int | None) -> CommittedSession:
        count = partitions or self.partition_count
        if count is None:
            raise NotOwner("this worker does not know the events partition count yet: pass ?partitions=N")
        number = partition_for(uid.encode(), count)
        with self._lock:
            partition = self._served.get(number)
            if partition is None:
                if number in self._owned:
                    raise Restoring(f"partition {number} is being restored on this worker")
                raise NotOwner(f"this worker does not own partition {number} (it owns {sorted(self._owned)})")
            stored = partition.store.get(uid)
            epoch = partition.epoch
        if stored is None:
            return CommittedSession(number, epoch)
        return CommittedSession(number, epoch, stored[0], stored[1])


class OwnerAdvertiser:
    """Learns the partition count and advertises ``settings.advertise`` for restored partitions."""

    def __init__(
        self,
        producer: Producer,
        topics: Topics,
        served: ServedState,
        settings: WorkerSettings,
        timeout_s: float = 30.0,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.served = served
        self.settings = settings
        self.timeout_s = timeout_s
        self._owners_topic: bool | None = None  # None: not looked up yet

    @property
    def endpoint(self) -> str | None:
        """Read at each assignment: the CLI learns it once its HTTP server listens."""
        return self.settings.advertise

    def _look_up(self) -> None:
        # All topics, never list_topics(topic=...): naming a missing topic may create it.
        metadata = self.producer.list_topics(timeout=self.timeout_s)
        events = metadata.topics.get(self.topics.events)
        if events is not None and events.error is None and events.partitions:
            self.served.partition_count = len(events.partitions)
        owners = metadata.topics.get(self.topics.owners)
        self._owners_topic = owners is not None and owners.error is None and bool(owners.partitions)
        if self.endpoint and not self._owners_topic:
            log.warning(
                "topic %s does not exist: this worker cannot advertise its query endpoint %s, so readers "
                "scan the changelog (run `stream-triggers topics create` to add it)",
                self.topics.owners,
                self.endpoint,
            )

    def advertise(self, partitions: Iterable[Partition]) -> None:
        """Tell readers that ``partitions`` (restored) are served here now, with their epochs."""
        epochs = {p.number: p.epoch for p in partitions}
        try:
            if self._owners_topic is None or self.served.partition_count is None:
                self._look_up()
            if not self.endpoint or not self._owners_topic or not epochs:
                return
            publish_owners(
                self.producer, self.topics.owners, epochs, self.endpoint, self.settings.group, self.timeout_s
            )
        except KafkaException as exc:
            log.warning("could not advertise %s for partitions %s: %s", self.endpoint, sorted(epochs), exc)
            return
        log.info(
            "advertised %s as the owner of partitions %s",
            self.endpoint,
            sorted(epochs),
            extra={"partitions": sorted(epochs), "endpoint": self.endpoint},
        )
