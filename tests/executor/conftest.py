"""Fixtures for the executor suite: real workers and executors (CLI subprocesses) on the test broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Pipeline

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker

PARTITIONS = 4


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """An empty pipeline on this test's topics; every process it started is killed at teardown."""
    started = Pipeline(broker.bootstrap, topics, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        print(started.report())  # shown when the test failed


@pytest.fixture(scope="module")
def module_pipeline(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """An empty pipeline on topics of its own that a module's tests share (each uses its own sessions)."""
    topics = Topics(prefix=f"m{uuid.uuid4().hex[:12]}")
    create_topics(broker.bootstrap, topics, partitions=PARTITIONS)
    started = Pipeline(broker.bootstrap, topics, tmp_path_factory.mktemp("pipeline"))
    try:
        yield started
    finally:
        started.stop_all()
