"""Fixtures for the executor suite: real workers and executors (CLI subprocesses) on the test broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from tests.support import Pipeline, fresh_topics


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """An empty pipeline on this test's topics; every process it started is killed at teardown."""
    with Pipeline(broker.bootstrap, topics, tmp_path) as started:
        yield started
        print(started.report())  # shown when the test failed


@pytest.fixture(scope="module")
def module_pipeline(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """An empty pipeline on topics of its own that a module's tests share (each uses its own sessions)."""
    topics = fresh_topics(broker.bootstrap, "m")
    with Pipeline(broker.bootstrap, topics, tmp_path_factory.mktemp("pipeline")) as started:
        yield started
