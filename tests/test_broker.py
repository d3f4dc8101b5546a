"""The embedded Tansu broker, its fixture, and topic creation."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream_triggers.events import decode, encode, event_record, jsonx
from stream_triggers.kafka.topics import Topics, TopicsError, create_topics
from stream_triggers.ops.broker import BROKER_BIN_ENV, BrokerError, EmbeddedBroker, resolve_broker_bin

READER = {"session.timeout.ms": 6000, "fetch.wait.max.ms": 50, "enable.auto.commit": False}


def _admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _partition_counts(broker: EmbeddedBroker) -> dict[str, int]:
    return {n: len(t.partitions) for n, t in _admin(broker).list_topics(timeout=10).topics.items()}


def _fresh() -> Topics:
    return Topics(prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.mark.broker
def test_produce_and_consume_through_the_fixture(broker: EmbeddedBroker, topics: Topics) -> None:
    record = event_record("TriggerFired", "session-1", trigger="start", kwargs_json=jsonx.dumps({"n": 1}))
    delivered: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 0})
    producer.produce(
        topics.events,
        key=b"session-1",
        value=encode("TriggerFired", record),
        headers={"origin": b"test"},
        on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset())) if err is None else None,
    )
    assert producer.flush(10) == 0
    assert len(delivered) == 1
    partition, offset = delivered[0]

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused-with-assign", **READER})
    try:
        consumer.assign([TopicPartition(topics.events, partition, OFFSET_BEGINNING)])
        message = None
        for _ in range(100):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        assert (message.key(), message.offset(), message.headers()) == (b"session-1", offset, [("origin", b"test")])
        assert decode(message.value()) == ("TriggerFired", record)
    finally:
        consumer.close()


@pytest.mark.broker
def test_create_topics_makes_six_with_configs_and_is_idempotent(broker: EmbeddedBroker) -> None:
    names = _fresh()
    assert create_topics(broker.bootstrap, names, partitions=3) == dict.fromkeys(names.all, "created")
    counts = _partition_counts(broker)
    assert {name: counts[name] for name in names.all} == {**dict.fromkeys(names.all, 3), names.owners: 1}
    assert names.all == tuple(
        f"{names.prefix}.{suffix}"
        for suffix in ("events", "task-runs", "task-results", "sessions", "changelog", "dead-letter", "owners")
    )

    resources = [ConfigResource(ResourceType.TOPIC, name) for name in (names.events, names.changelog, names.owners)]
    admin = _admin(broker)  # must outlive its futures
    configs = {res.name: future.result() for res, future in admin.describe_configs(resources).items()}
    assert configs[names.changelog]["cleanup.policy"].value == "compact"
    assert configs[names.changelog]["delete.retention.ms"].value == str(7 * 24 * 3600 * 1000)  # purges' tombstones
    assert configs[names.owners]["cleanup.policy"].value == "compact"
    assert configs[names.events]["cleanup.policy"].value == "delete"
    assert configs[names.events]["retention.ms"].value == "-1"

    assert create_topics(broker.bootstrap, names, partitions=3) == dict.fromkeys(names.all, "exists")
    assert {name: _partition_counts(broker)[name] for name in names.all} == {
        **dict.fromkeys(names.all, 3),
        names.owners: 1,
    }


@pytest.mark.broker
def test_changelog_follows_an_existing_events_topic(broker: EmbeddedBroker) -> None:
    names = _fresh()
    admin = _admin(broker)
    admin.create_topics([NewTopic(names.events, 2, 1)])[names.events].result()
    result = create_topics(broker.bootstrap, names, partitions=5)
    assert result[names.events] == "exists" and result[names.changelog] == "created"
    counts = _partition_counts(broker)
    assert (counts[names.events], counts[names.changelog], counts[names.sessions]) == (2, 2, 5)


@pytest.mark.broker
def test_mismatched_existing_changelog_is_refused(broker: EmbeddedBroker) -> None:
    names = _fresh()
    admin = _admin(broker)
    futures = admin.create_topics([NewTopic(names.events, 2, 1), NewTopic(names.changelog, 3, 1)])
    for future in futures.values():
        future.result()
    with pytest.raises(TopicsError, match=r"has 2 partitions but .*changelog has 3.*co-partitioned"):
        create_topics(broker.bootstrap, names)


@pytest.mark.parametrize("prefix", ["", "has space", "x/y", "a" * 201])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topics(prefix)


def test_default_prefix() -> None:
    assert Topics().events == "triggers.events"
    assert Topics().dead_letter == "triggers.dead-letter"


@pytest.mark.broker
def test_start_stop_and_context_manager(tmp_path: Path) -> None:
    broker = EmbeddedBroker()
    with broker:
        assert broker.running and broker.port
        assert re.fullmatch(r"127\.0\.0\.1:\d+", broker.bootstrap)
        log = broker.log_path
        assert log is not None and "ready in" in log.read_text()
        assert _admin(broker).list_topics(timeout=5).cluster_id == broker.cluster_id
        pid = broker.pid
    assert not broker.running and broker.pid is None
    assert not log.exists()  # a temporary log goes with a clean stop
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert broker.stop() is None  # idempotent


@pytest.mark.broker
def test_taken_port_is_refused(broker: EmbeddedBroker, tmp_path: Path) -> None:
    # Tansu would die with AddrInUse (exit code 0) while the first broker answered our probe.
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(port=broker.port, log_path=tmp_path / "second.log").start()


@pytest.mark.broker
def test_bad_binary_override_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BROKER_BIN_ENV, str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match=rf"\${BROKER_BIN_ENV}=.*no-such-tansu.* not an executable file"):
        resolve_broker_bin()
    not_executable = tmp_path / "tansu"
    not_executable.write_text("#!/bin/sh\n")
    monkeypatch.setenv(BROKER_BIN_ENV, str(not_executable))
    with pytest.raises(BrokerError, match="not an executable file"):
        EmbeddedBroker(log_path=tmp_path / "log").start()


@pytest.mark.broker
def test_binary_that_is_not_a_broker_fails_with_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake broker: unsupported flag' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(BROKER_BIN_ENV, str(fake))
    assert resolve_broker_bin() == str(fake)
    with pytest.raises(BrokerError) as info:
        EmbeddedBroker(log_path=tmp_path / "fake.log", startup_timeout=5).start()
    message = str(info.value)
    assert "exited with code 3" in message and "fake broker: unsupported flag" in message
    with pytest.raises(BrokerError, match="cannot run Tansu binary"):
        EmbeddedBroker(binary=str(tmp_path / "missing"), log_path=tmp_path / "m.log").start()


@pytest.mark.broker
def test_run_foreground_prints_bootstrap_and_stops_on_sigint() -> None:
    code = "from stream_triggers.ops.broker import EmbeddedBroker; raise SystemExit(EmbeddedBroker().run_foreground())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        bootstrap = proc.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), bootstrap
        banner = proc.stderr.readline()
        tansu_pid = int(re.search(r"pid (\d+)", banner).group(1))  # type: ignore[union-attr]
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).brokers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert not Path(f"/proc/{tansu_pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
