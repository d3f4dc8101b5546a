"""Dead letters: list them and replay one once its cause is gone (real broker, worker in a thread)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stream_triggers.cli.dead_letters import DeadLetter, cli, read_dead_letters, replay_dead_letters, select
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import worker_in_thread


def letter(partition: int, offset: int, **record: Any) -> DeadLetter:
    base = {"reason": "unknown_instance", "session_uid": "s", "topic": "t.events", "partition": 0, "offset": 0}
    return DeadLetter(partition, offset, {**base, "error": "e", **record})


def test_select_filters_by_reason_session_topic_and_position() -> None:
    letters = [
        letter(0, 0),
        letter(0, 1, reason="undecodable"),
        letter(1, 0, session_uid="other"),
        letter(1, 1, topic="t.task-runs"),
    ]
    assert [x.position for x in select(letters, reasons=["unknown_instance"])] == ["0:0", "1:0", "1:1"]
    assert [x.position for x in select(letters, sessions=["other"])] == ["1:0"]
    assert [x.position for x in select(letters, source_topics=["t.events"])] == ["0:0", "0:1", "1:0"]
    assert [x.position for x in select(letters, after={0: 0, 1: 0})] == ["0:1", "1:1"]


def test_replay_skips_letters_without_a_value_and_reports_positions() -> None:
    lines: list[str] = []
    letters = [letter(0, 3, value=None), letter(0, 5, value=b"v", key=b"s"), letter(2, 1, value=b"w", key=b"s")]
    assert replay_dead_letters("unused:9092", letters, dry_run=True, echo=lines.append) == {0: 5, 2: 1}
    assert lines[0].startswith("skip 0:3") and lines[1].startswith("would replay 0:5")


def wait_for(condition: Callable[[], Any], timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (SessionNotFound, KeyError):
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def worker(broker: Any, topics: Topics, tmp_path: Path) -> Iterator[StreamWorker]:
    settings = WorkerSettings(
        bootstrap=broker.bootstrap,
        state_dir=str(tmp_path / "state"),
        group=f"dl-{uuid.uuid4().hex[:8]}",
        topic_prefix=topics.prefix,
    )
    with worker_in_thread(settings) as running:
        yield running


@pytest.mark.broker
@pytest.mark.slow
def test_a_dead_letter_replayed_after_its_cause_is_fixed_applies(
    broker: Any, topics: Topics, worker: StreamWorker
) -> None:
    uid = f"dl-{uuid.uuid4().hex[:8]}"
    storage = KafkaStorage(uid, broker.bootstrap, topics.prefix)
    manager = TriggerManager(storage)
    # Too early: the instance does not exist yet, so the worker dead-letters the event.
    manager.mark_instance_logs_resolved("t_a#0")
    found = wait_for(lambda: list(select(read_dead_letters(broker.bootstrap, topics), sessions=[uid])))
    assert [x.record["reason"] for x in found] == ["unknown_instance"]

    runner = CliRunner()
    listed = runner.invoke(cli, ["list", "--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix])
    assert listed.exit_code == 0 and f"unknown_instance session={uid}" in listed.output

    # The cause goes away: t_a#0 now exists (the noop runner finishes it inside the worker).
    config = {"after": ["a"], "run": "stream_triggers.testing.DevNullTask", "using": "noop"}
    manager.update_configuration({"t_a": config})
    manager.fire("a")
    wait_for(lambda: storage.fresh().instances["t_a#0"].status == "finished")

    args = ["replay", "--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix, "--session", uid]
    dry = runner.invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "would replay" in dry.output
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert f"--after {found[0].position}" in done.output
    assert wait_for(lambda: storage.fresh().instances["t_a#0"].metadata.get("logsResolved"))

    # Carrying on from the reported position replays nothing twice.
    again = runner.invoke(cli, [*args, "--after", found[0].position])
    assert again.exit_code == 0 and "nothing to replay" in again.output
