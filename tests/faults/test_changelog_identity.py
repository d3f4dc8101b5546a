"""Which changelog a local store reflects (stream/restore.py, ``stores_of_another_changelog``).

A store is reused only when the changelog record its checkpoint names is still there,
byte for byte.  The test drives the three answers against the real broker: the same
changelog (reused, no rebuild), a record that is not the one applied (rebuilt) and a
store of an earlier version without an identity (rebuilt once).  The lost-cluster case
itself is tests/faults/test_broker_restarted_empty.py.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.changelog_identity import CHANGELOG_RECORD
from stream_triggers.stream.store import PartitionStore
from stream_triggers.stream.worker import WorkerSettings
from tests.support import App, wait_until
from tests.support.inthread import worker_in_thread

PARTITIONS = 4
REBUILT = "rebuilding the store from the changelog"
CONFIGURATION = {"t": {"after": ["a", "b"], "run": "x", "using": "noop"}}


def _settings(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"identity-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
    )


def _committed_store(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> tuple[WorkerSettings, int]:
    """A worker applies a session's inputs and stops: its store reflects the changelog."""
    settings = _settings(broker, topics, tmp_path)
    app = App(broker.bootstrap, topics)
    with worker_in_thread(settings) as worker:
        app.configure("kept", CONFIGURATION)
        app.fire("kept", "a")
        wait_until(lambda: worker.stats.events_applied == 2, "the worker to apply two inputs")
    app.close()
    return settings, partition_for(b"kept", PARTITIONS)


def _restart(settings: WorkerSettings, caplog: pytest.LogCaptureFixture) -> int:
    """Start a worker on the same state dir: how many stores it rebuilt."""
    with caplog.at_level(logging.ERROR, logger="stream_triggers.stream.worker"), worker_in_thread(settings) as worker:
        assert worker.stats.stores_rebuilt == caplog.text.count(REBUILT)
        return worker.stats.stores_rebuilt


def _set_identity(settings: WorkerSettings, topic: str, number: int, identity: bytes | None) -> bytes | None:
    """Overwrite (None: delete) the store's changelog identity; returns the one it had."""
    store = PartitionStore(settings.state_dir, topic, number)
    try:
        had = store.get_raw(CHANGELOG_RECORD)
        store.write_parts([(CHANGELOG_RECORD, identity)], None)
        return had
    finally:
        store.close()


@pytest.mark.broker
def test_a_store_is_reused_only_while_the_record_its_checkpoint_names_is_this_changelogs(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same changelog: reused.  Another record at that offset, or no identity (an earlier version): rebuilt."""
    settings, number = _committed_store(broker, topics, tmp_path)
    true = _set_identity(settings, topics.events, number, b"\x00" * 8 + b"another record..")
    assert true is not None
    _set_identity(settings, topics.events, number, true)
    assert _restart(settings, caplog) == 0, "an ordinary restart rebuilt its store"

    for identity in (b"\x00" * 8 + b"another record..", None):
        _set_identity(settings, topics.events, number, identity)
        caplog.clear()
        assert _restart(settings, caplog) == 1, identity
        store = PartitionStore(settings.state_dir, topics.events, number)
        try:  # rebuilt from the changelog: the session is there, with a true identity again
            assert store.read_session("kept") is not None
            assert store.get_raw(CHANGELOG_RECORD) not in (None, identity)
        finally:
            store.close()
