"""The test broker: one embedded Tansu per test session, topics under a prefix of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker

PARTITIONS = 4
"""Partitions of every topic the tests create."""


@contextmanager
def running_broker(log_path: Path) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free loopback port (in-memory: a fresh cluster every run).

    The kafka storage's process-wide producers are closed before it stops, so they do
    not keep reconnecting (and Tansu does not wait for them).
    """
    with EmbeddedBroker(log_path=log_path) as running:
        try:
            yield running
        finally:
            drop_shared_producers()


def drop_shared_producers() -> None:
    from stream_triggers.storages import kafka

    for producer in kafka._producers.values():
        producer.flush(10)
    kafka._producers.clear()


def fresh_topics(bootstrap: str, letter: str = "t", partitions: int = PARTITIONS) -> Topics:
    """The six topics under a new prefix (``letter`` + random hex), created on the broker."""
    names = Topics(prefix=f"{letter}{uuid.uuid4().hex[:12]}")
    create_topics(bootstrap, names, partitions=partitions)
    return names
