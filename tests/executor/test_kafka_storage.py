"""The application-side ``kafka`` storage: client settings, bounded waits, clear errors."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_triggers.engine import OperationNotAllowed, UnknownInstance
from stream_triggers.executor import ExecutorSettings, TaskExecutor
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.manager import TriggerManager
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.storages import kafka as kafka_storage
from stream_triggers.storages import storage_backends
from stream_triggers.storages.kafka import BrokerTimeout, KafkaStorage, RecordTooLarge, UnsupportedEdit
from tests.support import Pipeline, Record, read_topic

pytestmark = pytest.mark.broker

MARK = {"client.rack": "marked-by-the-test"}
"""A harmless librdkafka setting whose presence shows the user's settings reached a client."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every consumer and producer built through kafka.clients: (kind, kafka_config)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    real_consumer, real_producer = clients.consumer, clients.producer

    def consumer(*args: Any, **kwargs: Any) -> Any:
        seen.append(("consumer", dict(kwargs.get("kafka_config") or {})))
        return real_consumer(*args, **kwargs)

    def producer(*args: Any, **kwargs: Any) -> Any:
        seen.append(("producer", dict(kwargs.get("kafka_config") or {})))
        return real_producer(*args, **kwargs)

    monkeypatch.setattr(clients, "consumer", consumer)
    monkeypatch.setattr(clients, "producer", producer)
    return seen


def test_the_registry_builds_a_kafka_storage_whose_clients_get_the_settings(
    broker: EmbeddedBroker, topics: Topics, built: list[tuple[str, dict[str, Any]]]
) -> None:
    storage = storage_backends.get(
        "kafka", uid=f"cfg-{uuid.uuid4().hex[:6]}", bootstrap=broker.bootstrap, kafka_config=MARK
    )
    assert isinstance(storage, KafkaStorage)
    storage.topics = topics  # this test's topics (the registry call takes the default prefix)
    TriggerManager(storage).fire("go")
    assert storage.read_snapshot() is None  # no worker runs: nothing committed, but the read ended
    assert {kind for kind, _ in built} == {"producer", "consumer"}
    assert all(config == MARK for _, config in built)
    # The producer is shared per bootstrap and settings: another session reuses it, other settings do not.
    other = KafkaStorage("another", broker.bootstrap, kafka_config=MARK)
    assert other._producer is storage._producer
    assert KafkaStorage("another", broker.bootstrap)._producer is not storage._producer


def test_the_executor_gives_the_settings_to_every_client(
    broker: EmbeddedBroker, topics: Topics, built: list[tuple[str, dict[str, Any]]]
) -> None:
    TaskExecutor(ExecutorSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix, kafka_config=MARK))
    assert sorted(kind for kind, _ in built) == ["consumer", "producer"]
    assert all(config == MARK for _, config in built)


def test_settings_that_break_the_connection_give_a_clear_error_in_bounded_time(
    broker: EmbeddedBroker, topics: Topics
) -> None:
    storage = KafkaStorage(
        "tls", broker.bootstrap, topics.prefix, timeout_s=2, kafka_config={"security.protocol": "ssl"}
    )
    with pytest.raises(BrokerTimeout, match="did not answer within 2 s"):
        TriggerManager(storage).fire("go")
    with pytest.raises(BrokerTimeout, match="did not answer within 2 s"):
        storage.read_snapshot()


def test_an_event_above_the_record_limit_is_refused_before_anything_is_sent(
    broker: EmbeddedBroker, topics: Topics
) -> None:
    storage = KafkaStorage("huge", broker.bootstrap, topics.prefix)
    # Within the payload rules (200,000 characters), but JSON escapes each control
    # character to six bytes: the record would be 1.2 MB.
    with pytest.raises(RecordTooLarge, match="above the 998,976-byte record limit"):
        TriggerManager(storage).fire("go", {"blob": "\x01" * 200_000})


@pytest.fixture
def frozen_broker(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, Topics]]:
    """A broker of this test's own, with topics; the test may SIGSTOP it (resumed and stopped after)."""
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as own:
        names = Topics(prefix=f"f{uuid.uuid4().hex[:8]}")
        create_topics(own.bootstrap, names, partitions=2)
        try:
            yield own, names
        finally:
            assert own.pid is not None
            os.kill(own.pid, signal.SIGCONT)
            for key in [k for k in kafka_storage._producers if k[0] == own.bootstrap]:
                kafka_storage._producers.pop(key).flush(0)


def test_a_frozen_broker_makes_fire_fail_clearly_within_the_timeout(
    frozen_broker: tuple[EmbeddedBroker, Topics],
) -> None:
    own, names = frozen_broker
    manager = TriggerManager(KafkaStorage("paused", own.bootstrap, names.prefix, timeout_s=2))
    manager.fire("before")  # answered: metadata and producer are warm
    assert own.pid is not None
    os.kill(own.pid, signal.SIGSTOP)
    with pytest.raises(BrokerTimeout, match=r"TriggerFired for session 'paused'.*did not answer within 2 s"):
        manager.fire("during")
    with pytest.raises(BrokerTimeout):
        manager.storage.read_snapshot()


# -- direct edits and early refusals (issue 15) -----------------------------------------------

NEVER = {"t_a": {"after": ["go", "never"], "run": "stream_triggers.testing.DevNullTask"}}


def configured(pipeline: Pipeline, uid: str) -> KafkaStorage:
    """A session whose committed state holds the unstarted ``t_a#0`` (a worker runs)."""
    pipeline.worker()
    pipeline.manager(uid).update_configuration(NEVER)
    pipeline.manager(uid).fire("go")  # creates t_a#0, which waits for "never"
    pipeline.wait_status(uid, "t_a#0", "unstarted")
    return pipeline.storage(uid)


def published(pipeline: Pipeline, uid: str, type_name: str) -> list[Record]:
    return [
        r
        for r in read_topic(pipeline.bootstrap, pipeline.topics.events)
        if r.key == uid.encode()
        if r.type == type_name
    ]


def test_edits_under_the_lock_are_published_by_save(pipeline: Pipeline) -> None:
    storage = configured(pipeline, "edits")
    with storage.acquire_lock():
        storage.instances["t_a#0"].metadata["note"] = "hello"
        storage.save()
    state = pipeline.wait_session("edits", lambda s: s.instances["t_a#0"].metadata.get("note") == "hello", "note")
    assert state.instances["t_a#0"].status == "unstarted"

    with storage.acquire_lock():
        instance = storage.instances["t_a#0"]
        instance.status = "failed"
        instance.metadata["why"] = "set by hand"
        storage.save()
    failed = pipeline.wait_status("edits", "t_a#0", "failed")
    assert failed.metadata["why"] == "set by hand" and failed.metadata["note"] == "hello"


def test_edits_no_event_carries_raise_and_publish_nothing(pipeline: Pipeline) -> None:
    storage = configured(pipeline, "refused-edits")
    with storage.acquire_lock():
        with pytest.raises(UnsupportedEdit, match=r"create_instance\('t_a'\)"):
            storage.create_instance("t_a")
        with pytest.raises(UnsupportedEdit, match="create_instance"):
            storage.clone_instance("t_a#0")
        instance = storage.instances["t_a#0"]
        instance.metadata["note"] = "kept back"
        instance.kwargs["extra"] = 1
        with pytest.raises(UnsupportedEdit, match="changed kwargs"):
            storage.save()  # every edit is checked before any is sent: the note is not sent either
    assert published(pipeline, "refused-edits", "InstanceMetadataUpdateRequested") == []
    assert published(pipeline, "refused-edits", "InstanceStatusUpdateRequested") == []


def test_operations_the_committed_state_refuses_raise_at_once(pipeline: Pipeline) -> None:
    configured(pipeline, "refused-ops")
    manager = pipeline.manager("refused-ops")
    with pytest.raises(OperationNotAllowed, match="unstarted state cannot be replayed"):
        manager.replay_failed_instance("t_a#0")
    with pytest.raises(UnknownInstance):
        manager.skip_failed_instance("t_zzz#0")
    with pytest.raises(UnknownInstance):
        manager.update_instance_metadata("t_zzz#0", {"note": 1})
    with pytest.raises(UnknownInstance):
        manager.update_instance_status("t_zzz#0", "failed")
    for type_name in ("ReplayRequested", "SkipRequested", "InstanceMetadataUpdateRequested"):
        assert published(pipeline, "refused-ops", type_name) == []
    # A valid one passes the check and is applied.
    manager.update_instance_metadata("t_a#0", {"note": 1})
    pipeline.wait_session("refused-ops", lambda s: s.instances["t_a#0"].metadata.get("note") == 1, "note")


def test_a_storage_told_not_to_check_publishes_what_the_worker_will_refuse(pipeline: Pipeline) -> None:
    configured(pipeline, "unchecked")
    storage = KafkaStorage("unchecked", pipeline.bootstrap, pipeline.topics.prefix, check_committed=False)
    TriggerManager(storage.fresh()).replay_failed_instance("t_a#0")  # (fresh() keeps the choice)
    assert len(published(pipeline, "unchecked", "ReplayRequested")) == 1


def test_without_committed_state_the_worker_has_the_last_word(pipeline: Pipeline) -> None:
    manager = pipeline.manager("never-committed")
    manager.replay_failed_instance("t_a#0")  # nothing to check against: published
    assert len(published(pipeline, "never-committed", "ReplayRequested")) == 1
