"""Fixtures for the stream worker's acceptance tests, against the real (Tansu) broker.

Workers run as subprocesses of the real CLI (``stream-triggers worker``) with the CLI's
own group session timeout, each with a state dir of its own, stopped by PID only.  The
application (``app``) publishes through the same pipeline object that started them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from tests.support import Pipeline, Readers


@pytest.fixture
def workers(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    """Starts this test's workers (``workers.worker(...)``); whatever still runs at teardown is killed."""
    with Pipeline(broker.bootstrap, topics, tmp_path, session_timeout_ms=None) as started:
        yield started
        print(started.report())  # shown by pytest when the test failed


@pytest.fixture
def app(workers: Pipeline) -> Pipeline:
    """The application side of this test's pipeline."""
    return workers


@pytest.fixture
def readers(broker: EmbeddedBroker, topics: Topics) -> Iterator[Readers]:
    opened = Readers(broker.bootstrap, topics)
    try:
        yield opened
    finally:
        opened.close()
