"""The fault suite's fixtures, built on ``tests.support`` and the root conftest's broker:
the processes and readers of a test on the shared broker, and a broker of the test's own
for the broker faults.

Every test here names one fault; docs/faults.md has the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from tests.support import App, Pipeline, Readers, RestartableBroker


@pytest.fixture
def workers(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """Workers with the CLI's own group session timeout (``workers.worker(...)``); killed at teardown."""
    with Pipeline(broker.bootstrap, topics, tmp_path, session_timeout_ms=None) as started:
        yield started
        print(started.report())  # shown by pytest when the test failed


@pytest.fixture
def app(workers: Pipeline) -> Pipeline:
    """The application side of this test's pipeline."""
    return workers


@pytest.fixture
def pipeline(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """Workers and executors with the tests' short group session timeout; killed at teardown."""
    with Pipeline(broker.bootstrap, topics, tmp_path) as started:
        yield started
        print(started.report())


@pytest.fixture
def readers(broker: EmbeddedBroker, topics: Topics) -> Iterator[Readers]:
    opened = Readers(broker.bootstrap, topics)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RestartableBroker]:
    running = RestartableBroker(tmp_path)
    try:
        yield running
    finally:
        running.forget_application_producer()
        running.stop()


@pytest.fixture
def on_own_broker(cluster: RestartableBroker, tmp_path: Path) -> Iterator[tuple[Pipeline, Readers, App]]:
    """Workers, readers and the application side (the workers' pipeline) on the restartable broker."""
    opened = Readers(cluster.bootstrap, cluster.topics)
    with Pipeline(cluster.bootstrap, cluster.topics, tmp_path, session_timeout_ms=None) as started:
        try:
            yield started, opened, started
        finally:
            opened.close()
            print(started.report())
