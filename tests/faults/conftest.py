"""The fault suite's fixtures: the stream and executor suites' processes and readers, reused,
and a broker of the test's own for the broker faults.

Every test here names one fault; docs/faults.md has the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from executor.conftest import pipeline  # noqa: F401 - fixture re-exported
from stream.conftest import App, Readers, Workers, _drop_shared_producers, app, readers, workers  # noqa: F401 - fixtures re-exported

from .brokers import RestartableBroker


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RestartableBroker]:
    running = RestartableBroker(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def on_own_broker(cluster: RestartableBroker, tmp_path: Path) -> Iterator[tuple[Workers, Readers, App]]:
    """Workers, readers and the application side on the restartable broker."""
    started = Workers(cluster.bootstrap, cluster.topics, tmp_path)
    opened = Readers(cluster.bootstrap, cluster.topics)
    try:
        yield started, opened, App(cluster.bootstrap, cluster.topics)
    finally:
        started.cleanup()
        opened.close()
        cluster.forget_application_producer()
        print(started.report())
