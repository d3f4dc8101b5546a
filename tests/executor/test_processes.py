"""Executors as processes: crashes, shutdown, sharing the load, and runner routing.

Each test runs its own worker and executors (consumer groups of their own) on its own topics.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stream_triggers.cli.demo_tasks import RetriesThenSucceeds, Sleep, WhoRunsMe
from stream_triggers.events import jsonx
from stream_triggers.events.records import datetime_from_us
from stream_triggers.executor import ExecutorSettings, TaskExecutor
from stream_triggers.types import TaskInstance
from tests.support import PARTITIONS, Pipeline, Proc, committed_offset, read_topic, uid_on_partition, wait_until

pytestmark = pytest.mark.broker

ALL = set(range(PARTITIONS))


def nap(seconds: float) -> dict[str, Any]:
    return {"t_nap": {"after": ["go"], "run": Sleep.name, "withParams": {"nap": {"seconds": seconds}}}}


def sharing(*executors: Proc) -> list[set[int]]:
    """Wait until the executors (one group) each own some partitions, together all of them."""

    def split() -> list[set[int]] | None:
        owned = [e.owned() or set() for e in executors]
        if all(owned) and set().union(*owned) == ALL and sum(map(len, owned)) == len(ALL):
            return owned
        for e in executors:
            assert e.running, f"{e.name} exited:\n{e.tail()}"
        return None

    return wait_until(split, "executors sharing the partitions")


def reports(app: Pipeline, uid: str, instance: str, status: str) -> list[Any]:
    """The status reports for ``instance`` on the events topic."""
    return [
        r
        for r in read_topic(app.bootstrap, app.topics.events)
        if r.type == "InstanceStatusReported" and r.key == uid.encode() and r["instance"] == instance
        if r["status"] == status
    ]


def committed(app: Pipeline, executor: Proc, partition: int) -> int:
    return committed_offset(app.bootstrap, app.topics.task_runs, executor.option("--group"), partition)


@pytest.mark.slow
def test_kill_9_mid_task_another_executor_runs_it_and_the_worker_ignores_the_duplicate(pipeline: Pipeline) -> None:
    pipeline.worker()
    first = pipeline.executor(name="executor-a")
    second = pipeline.executor(name="executor-b")
    owned_by_first, _ = sharing(first, second)
    uid = uid_on_partition("nap", PARTITIONS, owned_by_first)
    pipeline.manager(uid).update_configuration(nap(4))
    pipeline.manager(uid).fire("go")
    running = pipeline.wait_status(uid, "t_nap#0", "running")

    first.kill()  # mid-task: the nap takes 4 s, its outcome is never reported
    state = pipeline.wait_finalized(uid)

    instance = state.instances["t_nap#0"]
    assert list(state.instances) == ["t_nap#0"]  # no replay: the same instance ran again
    assert instance.status == "finished"
    assert instance.metadata[TaskInstance.META_RESULT] == {"pid": second.pid, "slept": 4.0}
    # Both executors reported "running"; the worker applied the first and ignored the second.
    started = reports(pipeline, uid, "t_nap#0", "running")
    assert len(started) == 2
    stamps = instance.metadata[TaskInstance.META_TIMESTAMPS]
    assert stamps["running"] == running.metadata[TaskInstance.META_TIMESTAMPS]["running"]
    assert stamps["running"] == datetime_from_us(started[0]["produced_at"])
    # One announcement of the outcome, and nothing dead-lettered.
    finished = [
        r
        for r in read_topic(pipeline.bootstrap, pipeline.topics.task_results)
        if r.key == uid.encode() and r["instance"] == "t_nap#0" and r["status"] == "finished"
    ]
    assert len(finished) == 1
    assert not [r for r in read_topic(pipeline.bootstrap, pipeline.topics.dead_letter) if r.key == uid.encode()]
    assert second.running


@pytest.mark.slow
def test_two_executors_share_the_load_and_another_runner_takes_only_its_tasks(pipeline: Pipeline) -> None:
    pipeline.worker()
    first = pipeline.executor(name="executor-a")
    second = pipeline.executor(name="executor-b")
    other = pipeline.executor(name="executor-other", runner="other")
    sharing(first, second)
    other.wait_owning()
    configuration = {
        "t_default": {"after": ["go"], "run": WhoRunsMe.name},
        "t_other": {"after": ["go"], "run": WhoRunsMe.name, "using": "other"},
    }
    uids = [uid_on_partition(f"load-{p}", PARTITIONS, {p}) for p in sorted(ALL) for _ in range(2)]
    for uid in uids:
        pipeline.manager(uid).update_configuration(configuration)
        pipeline.manager(uid).fire("go")

    ran: dict[str, set[int]] = {"t_default": set(), "t_other": set()}
    for uid in uids:
        state = pipeline.wait_finalized(uid)
        for task in ran:
            instance = state.instances[f"{task}#0"]
            assert instance.status == "finished", (uid, task)
            ran[task].add(instance.metadata[TaskInstance.META_RESULT]["pid"])
    assert ran["t_default"] == {first.pid, second.pid}  # both took a share
    assert ran["t_other"] == {other.pid}  # only the 'other' runner ran 'using: other' tasks
    # Every request went to task-runs tagged with its runner.
    runners = {(r["task"], r["runner"]) for r in read_topic(pipeline.bootstrap, pipeline.topics.task_runs)}
    assert runners == {("t_default", "kafka"), ("t_other", "other")}


@pytest.mark.slow
def test_sigterm_finishes_the_task_in_flight_commits_and_exits_0(pipeline: Pipeline) -> None:
    pipeline.worker()
    executor = pipeline.executor()
    uid = "sigterm"
    pipeline.manager(uid).update_configuration(nap(2))
    pipeline.manager(uid).fire("go")
    pipeline.wait_status(uid, "t_nap#0", "running")

    assert executor.terminate(timeout=30) == 0
    assert "executor stopped" in executor.log()

    instance = pipeline.wait_status(uid, "t_nap#0", "finished")
    assert instance.metadata[TaskInstance.META_RESULT] == {"pid": executor.pid, "slept": 2.0}
    # The request is committed: a new executor of the group would not run it again.
    [request] = [r for r in read_topic(pipeline.bootstrap, pipeline.topics.task_runs) if r.key == uid.encode()]
    assert jsonx.loads(request["kwargs_json"])["nap"] == {"seconds": 2}
    assert committed(pipeline, executor, request.partition) > request.offset


@pytest.mark.slow
def test_sigterm_hands_back_a_request_waiting_for_its_cooldown(pipeline: Pipeline) -> None:
    pipeline.worker()
    first = pipeline.executor(name="executor-a")
    uid = "cooldown"
    retry = {"times": 1, "cooldown": 8}
    pipeline.manager(uid).update_configuration(
        {"t_retry": {"after": ["go"], "run": RetriesThenSucceeds.name, "withParams": {"retry": retry}}}
    )
    pipeline.manager(uid).fire("go")
    pipeline.wait_status(uid, "t_retry#1", "scheduled")  # its request waits 8 s before it may run

    assert first.terminate() == 0
    # It exited without running the waiting request (its reports are flushed before it exits).
    assert not reports(pipeline, uid, "t_retry#1", "running")
    [request] = [r for r in read_topic(pipeline.bootstrap, pipeline.topics.task_runs) if r["instance"] == "t_retry#1"]
    assert committed(pipeline, first, request.partition) <= request.offset  # handed back, not committed

    second = pipeline.executor(name="executor-b")
    instance = pipeline.wait_status(uid, "t_retry#1", "finished")
    assert instance.metadata[TaskInstance.META_RESULT] == {"attempts": 2}
    stamps = instance.metadata[TaskInstance.META_TIMESTAMPS]
    assert (stamps["running"] - stamps["created"]).total_seconds() >= 8
    assert second.running


@pytest.mark.slow
def test_an_executor_at_capacity_pauses_and_loses_no_request(pipeline: Pipeline) -> None:
    """More requests than ``max_in_flight`` at once: fetching pauses, nothing is dropped."""
    pipeline.worker()
    settings = ExecutorSettings(
        bootstrap=pipeline.bootstrap,
        topic_prefix=pipeline.topics.prefix,
        group=f"executors-capacity-{pipeline.id}",
        concurrency=1,
        max_in_flight=2,
        session_timeout_ms=3000,
    )
    executor = TaskExecutor(settings)
    thread = threading.Thread(target=executor.run, name="executor")
    uids = [f"capacity-{n}" for n in range(8)]
    for uid in uids:
        pipeline.manager(uid).update_configuration({"t_who": {"after": ["go"], "run": WhoRunsMe.name}})
        pipeline.manager(uid).fire("go")
    thread.start()
    try:
        for uid in uids:
            state = pipeline.wait_finalized(uid)
            assert state.instances["t_who#0"].status == "finished"
    finally:
        executor.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert executor.task_stats.outcomes[WhoRunsMe.name] == {"finished": len(uids)}
