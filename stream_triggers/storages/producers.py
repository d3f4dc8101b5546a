"""The ``kafka`` storage's process-wide producers, and their replacement when one is broken.

One idempotent producer per (bootstrap, client settings, timeout) serves every storage
of a process.  An idempotent producer is bound to the cluster that gave it its producer
id: after the broker lost its data (restarted empty, another cluster at the same
address), librdkafka keeps retrying with an id the new cluster does not know
(``UNKNOWN_PRODUCER_ID``, epoch bumps it does not know either) and never reports more
than a delivery timeout, so every publish would wait its timeout and fail until the
application restarts.  A publish that fails that way (a delivery timeout, or a fatal
or producer-id error) therefore retires the producer: the next publish builds a new
one, which asks the cluster for a new producer id.  A paused broker costs the same: a
new producer once it answers again.  docs/faults.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from stream_triggers.kafka import clients

__all__ = ["producer_replacements", "retire_if_broken", "shared_producer"]

log = logging.getLogger(__name__)

_producers: dict[tuple[Any, ...], Producer] = {}
_guard = threading.Lock()
_replaced = 0

_BROKEN = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._FATAL,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
    }
)
"""Publish errors after which a producer is not trusted again: it may be bound to a lost cluster."""


def _config_key(kafka_config: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (kafka_config or {}).items()))


def shared_producer(bootstrap: str, kafka_config: Mapping[str, Any] | None = None, *, timeout_s: float) -> Producer:
    """One idempotent producer per (bootstrap, client settings, timeout) for the whole process.

    Its ``message.timeout.ms`` is the storage's timeout, so a record the broker did not
    take in time fails then, instead of being delivered later behind the caller's back.
    """
    key = (bootstrap, _config_key(kafka_config), timeout_s)
    with _guard:
        producer = _producers.get(key)
        if producer is None:
            producer = _producers[key] = clients.producer(
                bootstrap, "app", kafka_config=kafka_config, message_timeout_ms=max(1, int(timeout_s * 1000))
            )
        return producer


def is_broken(error: KafkaError | None) -> bool:
    """Whether a publish that failed with ``error`` leaves its producer unusable (or suspect)."""
    return error is not None and (error.fatal() or error.code() in _BROKEN)


def retire_if_broken(producer: Producer, error: KafkaError | None, what: str) -> bool:
    """Retire ``producer`` if it is a shared one and ``error`` says it is broken; True if retired.

    Only the first caller retires it (others that failed on it at the same time find it
    gone).  Its queued records are purged (their publishes have already failed) and it
    is flushed and closed in the background, so the caller's error is not delayed.
    """
    global _replaced
    if not is_broken(error):
        return False
    with _guard:
        key = next((key for key, shared in _producers.items() if shared is producer), None)
        if key is None:
            return False
        del _producers[key]
        _replaced += 1
    log.warning(
        "the kafka storage's producer for %s is replaced after %s failed (%s): the next publish uses a new "
        "producer, with a new producer id (a broker that lost its data, another cluster, or a broker that did "
        "not answer in time)",
        key[0],
        what,
        error,
    )
    threading.Thread(target=_close, args=(producer, key[2]), name="retire-producer", daemon=True).start()
    return True


def _close(producer: Producer, timeout_s: float) -> None:
    """Drop what the retired producer still queues, let in-flight requests end, release it."""
    try:
        producer.purge(in_queue=True, in_flight=False)
        producer.flush(timeout_s)
    except Exception as exc:  # a retired producer must never fail anything else
        log.debug("closing a retired producer: %s", exc)


def producer_replacements() -> int:
    """How many shared producers were retired as broken in this process."""
    return _replaced
