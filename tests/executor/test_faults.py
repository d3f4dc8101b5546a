"""Executor faults that needed a human (issue 13 §3): an outcome too large for one record,
SIGTERM while the broker does not answer, readiness after losing every partition.

The executors here run in the test process (a thread), so tasks defined in this module run
in them; the stream worker is a real process.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from stream_triggers.executor import ExecutorSettings, OutcomeNotPublishable, OutcomeTooLarge, TaskExecutor
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.task import TaskContext, TriggerTask
from stream_triggers.testing import DevNullTask
from stream_triggers.types import TaskInstance
from tests.support import PARTITIONS, Pipeline, committed_offset, read_topic, uid_on_partition, wait_until

pytestmark = pytest.mark.broker


class BigResult(TriggerTask):
    """Returns a result of ``size`` characters (it travels twice in the report: result and metadata)."""

    name = "tests.executor.BigResult"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"blob": "x" * context.trigger_kwargs["big"]["size"]}


class Started:
    """An executor running in a thread of the test process."""

    def __init__(self, pipeline: Pipeline, **options: Any) -> None:
        self.settings = ExecutorSettings(
            bootstrap=pipeline.bootstrap,
            topic_prefix=pipeline.topics.prefix,
            group=f"executors-inproc-{uuid.uuid4().hex[:8]}",
            session_timeout_ms=3000,
            **options,
        )
        self.executor = TaskExecutor(self.settings)
        self.thread = threading.Thread(target=self.executor.run, name="executor", daemon=True)
        self.thread.start()

    def stop(self, limit: float = 60) -> bool:
        """Ask for a stop (what SIGTERM does); True if ``run()`` returned within ``limit`` seconds."""
        self.executor.stop()
        self.thread.join(limit)
        return not self.thread.is_alive()


@pytest.fixture
def started() -> Iterator[list[Started]]:
    executors: list[Started] = []
    yield executors
    for one in executors:
        one.stop()


def test_an_outcome_above_the_record_limit_is_reported_failed_and_commits_move_on(
    pipeline: Pipeline, started: list[Started]
) -> None:
    pipeline.worker()
    one = Started(pipeline)
    started.append(one)
    big = uid_on_partition("big", PARTITIONS, {0})
    after = uid_on_partition("after-big", PARTITIONS, {0})
    pipeline.manager(big).update_configuration(
        {"t_big": {"after": ["go"], "run": BigResult.name, "withParams": {"big": {"size": 600_000}}}}
    )
    pipeline.manager(big).fire("go")

    instance = pipeline.wait_status(big, "t_big#0", "failed")
    # Too large for a record (or, where the engine weighs payloads, above its payload limit).
    reason = {f"{kind.__module__}.{kind.__name__}" for kind in (OutcomeTooLarge, OutcomeNotPublishable)}
    assert instance.metadata[TaskInstance.META_EXCEPTION_TYPE] in reason
    assert "cannot be published" in instance.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert one.executor.task_stats.outcomes[BigResult.name] == {"outcome_not_published": 1}

    # A later request on the same partition runs, and the commits pass both.
    pipeline.manager(after).update_configuration({"t_small": {"after": ["go"], "run": DevNullTask.name}})
    pipeline.manager(after).fire("go")
    pipeline.wait_status(after, "t_small#0", "finished")
    requests = [r for r in read_topic(pipeline.bootstrap, pipeline.topics.task_runs) if r.partition == 0]
    last = max(r.offset for r in requests)
    wait_until(
        lambda: committed_offset(pipeline.bootstrap, pipeline.topics.task_runs, one.settings.group_id, 0) > last,
        "the executor's commit passing both requests",
    )


class Frozen:
    """A pipeline on a broker of the test's own, which :meth:`freeze` stops answering (SIGSTOP)."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path) -> None:
        self.broker = broker
        topics = Topics(prefix=f"f{uuid.uuid4().hex[:8]}")
        create_topics(broker.bootstrap, topics, partitions=PARTITIONS)
        self.pipeline = Pipeline(broker.bootstrap, topics, tmp_path)
        self.pipeline.worker()

    def run_one_task(self, uid: str) -> None:
        """Run one task to the end, so the executor has offsets to commit when it stops."""
        self.pipeline.manager(uid).update_configuration({"t_done": {"after": ["go"], "run": DevNullTask.name}})
        self.pipeline.manager(uid).fire("go")
        self.pipeline.wait_status(uid, "t_done#0", "finished")

    def freeze(self) -> None:
        assert self.broker.pid is not None
        os.kill(self.broker.pid, signal.SIGSTOP)


@pytest.fixture
def frozen(tmp_path: Path) -> Iterator[Frozen]:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as own:
        setup = None
        try:
            setup = Frozen(own, tmp_path)
            yield setup
        finally:
            assert own.pid is not None
            os.kill(own.pid, signal.SIGCONT)
            if setup is not None:
                setup.pipeline.stop_all()


def test_a_stop_ends_the_executor_while_the_broker_does_not_answer(frozen: Frozen, started: list[Started]) -> None:
    one = Started(frozen.pipeline, shutdown_timeout_s=3, report_timeout_s=2)
    frozen.run_one_task("frozen")
    frozen.freeze()
    assert one.stop(limit=60), "the executor did not stop while the broker was frozen"
    assert not one.executor.ready.is_set()


def test_the_executor_is_not_ready_once_it_owns_no_partition(pipeline: Pipeline) -> None:
    executor = TaskExecutor(ExecutorSettings(bootstrap=pipeline.bootstrap, topic_prefix=pipeline.topics.prefix))
    runs = pipeline.topics.task_runs
    executor._on_assign(executor._consumer, [TopicPartition(runs, 0), TopicPartition(runs, 1)])
    assert executor.ready.is_set()
    executor._on_revoke(executor._consumer, [TopicPartition(runs, 0)])
    assert executor.ready.is_set()  # still serves partition 1
    executor._on_revoke(executor._consumer, [TopicPartition(runs, 1)])
    assert not executor.ready.is_set()
    executor._on_assign(executor._consumer, [])  # an empty assignment does not make it ready
    assert not executor.ready.is_set()


@pytest.mark.slow
def test_sigterm_ends_an_executor_process_while_the_broker_does_not_answer(frozen: Frozen) -> None:
    executor = frozen.pipeline.executor(imports=("stream_triggers.testing",))
    frozen.run_one_task("frozen-process")
    frozen.freeze()
    # Before: the shutdown commit never returned and the process hung until SIGKILL.
    assert executor.terminate(timeout=60) == 0
    assert "executor stopped" in executor.log()
