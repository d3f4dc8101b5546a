"""Kafka clients with the project's settings, and the two I/O patterns everyone shares.

Every process and command builds its consumers, producers and admin clients here, so
that the user's client settings (``kafka_config``: security, timeouts, anything
librdkafka takes) reach every one of them, and the project's own settings are written
down once:

- :func:`consumer` / :func:`producer` / :func:`admin` - a client for one purpose;
- :func:`read_to_end` - read partitions from given offsets up to their end, found by
  fetching to EOF (not ListOffsets: Tansu's high watermark can be wrong);
- :func:`publish_and_wait` - produce records and wait until the broker acknowledged
  every one, or raise.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_triggers.exceptions import StreamTriggersError

__all__ = [
    "KafkaConfig",
    "ReadTimeout",
    "admin",
    "group_generation",
    "consumer",
    "consumer_lag",
    "producer",
    "publish_and_wait",
    "read_to_end",
]

KafkaConfig = Mapping[str, Any]
"""librdkafka settings given by the user (``-X key=value``, ``--kafka-config FILE``)."""

_RECORD_BATCH = 10_000


class ReadTimeout(StreamTriggersError, KafkaException):
    """Partitions did not reach their end in time."""


# Settings the project's correctness rests on: a user's kafka_config cannot change them.
_FIXED = frozenset({"enable.auto.commit", "enable.partition.eof", "enable.idempotence", "group.id"})


def _config(
    bootstrap: str,
    role: str,
    defaults: Mapping[str, Any],
    settings: Mapping[str, Any],
    kafka_config: KafkaConfig | None,
) -> dict[str, Any]:
    """Project defaults and this client's settings, then the user's (except :data:`_FIXED`)."""
    user = {k: v for k, v in (kafka_config or {}).items() if k not in _FIXED}
    return {
        "bootstrap.servers": bootstrap,
        "client.id": f"stream-triggers-{role}-{os.getpid()}",
        **defaults,
        **_dotted(settings),
        **user,
    }


def consumer(
    bootstrap: str,
    role: str,
    group: str | None = None,
    *,
    kafka_config: KafkaConfig | None = None,
    **settings: Any,
) -> Consumer:
    """A consumer that never commits on its own; ``settings`` use ``_`` for ``.``.

    Without ``group`` it is a reader (assigned partitions, a throw-away group id).
    """
    # Prefetch at most 16 MB (librdkafka's default, 64 MB, is most of a worker's memory on a backlog),
    # and fetch again soon after the queue drains below it: librdkafka's default back-off (1 s)
    # left a worker on a backlog starved for input a third of the time.
    defaults = {
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "queued.max.messages.kbytes": 16384,
        "fetch.queue.backoff.ms": 10,
    }
    settings = {
        "group_id": group or f"stream-triggers-{role}-{os.getpid()}-{time.monotonic_ns()}",
        "enable_auto_commit": False,
        **settings,
    }
    return Consumer(_config(bootstrap, role, defaults, settings, kafka_config))


def producer(bootstrap: str, role: str, *, kafka_config: KafkaConfig | None = None, **settings: Any) -> Producer:
    """An idempotent producer (acks=all) that places records where the caller says."""
    defaults = {"linger.ms": 1, "partitioner": "murmur2_random", "allow.auto.create.topics": False}
    settings = {"enable_idempotence": True, "acks": "all", **settings}
    return Producer(_config(bootstrap, role, defaults, settings, kafka_config))


def admin(bootstrap: str, *, kafka_config: KafkaConfig | None = None, **settings: Any) -> AdminClient:
    return AdminClient(_config(bootstrap, "admin", {}, settings, kafka_config))


def _dotted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``fetch_wait_max_ms=10`` -> ``{"fetch.wait.max.ms": 10}`` (keys with dots pass as they are)."""
    return {key.replace("_", "."): value for key, value in settings.items()}


def read_to_end(
    client: Consumer,
    topic: str,
    start: Mapping[int, int],
    timeout_s: float,
    *,
    on_progress: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[list[Any]]:
    """Yield batches of messages of ``topic``'s partitions from ``start`` to their end.

    ``client`` must have ``enable.partition.eof`` on.  Raises :class:`ReadTimeout`
    when a partition does not reach its end within ``timeout_s``; a broker error
    raises :class:`KafkaException`.  ``should_stop`` ends the read early (e.g. on
    SIGTERM), ``on_progress`` is called each turn (liveness).
    """
    pending = set(start)
    if not pending:
        return
    client.assign([TopicPartition(topic, number, offset) for number, offset in start.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            if should_stop is not None and should_stop():
                return
            if on_progress is not None:
                on_progress()
            if time.monotonic() > deadline:
                raise ReadTimeout(f"reading {topic} partitions {sorted(pending)}: no end within {timeout_s} s")
            batch = []
            for message in client.consume(_RECORD_BATCH, 0.05):
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise KafkaException(error)
            if batch:
                yield batch
    finally:
        client.unassign()


def publish_and_wait(
    client: Producer,
    records: Iterable[tuple[str, bytes | None, bytes | None, int]],
    timeout_s: float,
    what: str = "records",
) -> None:
    """Produce ``(topic, key, value, partition)`` records; return once all are acknowledged.

    Raises :class:`KafkaException` with the first delivery error, or when the broker
    did not acknowledge everything within ``timeout_s``.
    """
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    for topic, key, value, partition in records:
        client.produce(topic, value, key, partition, on_delivery=delivered)
    remaining = client.flush(timeout_s)
    if errors:
        raise KafkaException(errors[0])
    if remaining:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{what} not acknowledged within {timeout_s} s"))


_CGMD_MAGIC = b"CGMDv2:"


def group_generation(consumer: Consumer) -> int:
    """The consumer group generation this consumer is in (-1: none), from librdkafka's group metadata.

    librdkafka serialises it as ``CGMDv2:`` then the generation id (int32, host order).
    """
    metadata = consumer.consumer_group_metadata()
    if not isinstance(metadata, bytes) or not metadata.startswith(_CGMD_MAGIC):
        return -1
    return struct.unpack_from("=i", metadata, len(_CGMD_MAGIC))[0]


def consumer_lag(consumer: Consumer, topic: str, positions: Mapping[int, int | None]) -> dict[int, int]:
    """Partition -> records past its position (high watermark - position; None: from the low watermark).

    Reads librdkafka's cached watermarks (no broker round trip; fetches keep them
    current, and Tansu reports them right there).  Only the thread that polls the
    consumer may call it: ``get_watermark_offsets`` blocks while another thread is inside
    ``consume()``, so the worker's loop refreshes ``stats.consumer_lag`` every
    ``LAG_INTERVAL_S`` and the metrics thread reads that.  A partition whose watermark
    is not known yet is left out.
    """
    lag = {}
    for number, position in positions.items():
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), cached=True)
        except (KafkaException, RuntimeError):
            continue
        if high >= 0:
            lag[number] = max(0, high - (low if position is None or position < 0 else position))
    return lag
