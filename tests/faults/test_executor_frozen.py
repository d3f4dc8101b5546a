"""Fault: an executor frozen (SIGSTOP) past its group's session timeout while it runs tasks.

Executor A runs four long tasks when it freezes (in production: a GC pause, a frozen
VM, a throttled container).  The group gives its partitions to executor B, which runs
the same requests again; then A resumes and reports its outcomes late.  What must hold:
every task runs to an outcome at least once, each instance ends in one outcome (one
``finished`` announcement, no second outcome from the late executor, no replayed
instance), and A rejoins the group without a human.
"""

from __future__ import annotations

import os
import signal

import pytest

from stream_triggers.types import TaskInstance
from tests.support import Pipeline, read_topic, uid_on_partition, wait_until

PARTITIONS = 4
ALL = set(range(PARTITIONS))
NAP_S = 6.0
OUTCOMES = {"finished", "failed", "skipped", "abandoned", "replayed"}
TASKS = 4  # the executor's default concurrency: all run at once in A


def nap() -> dict[str, object]:
    return {
        "t_nap": {
            "after": ["go"],
            "run": "stream_triggers.cli.demo_tasks.Sleep",
            "withParams": {"nap": {"seconds": NAP_S}},
        }
    }


def running_reports(pipeline: Pipeline, uids: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(uids, 0)
    for record in read_topic(pipeline.bootstrap, pipeline.topics.events):
        if record.type == "InstanceStatusReported" and record["status"] == "running":
            uid = record.key.decode()
            if uid in counts:
                counts[uid] += 1
    return counts


@pytest.mark.broker
@pytest.mark.slow
def test_executor_frozen_past_its_session_timeout_tasks_rerun_elsewhere_one_outcome_each(pipeline: Pipeline) -> None:
    """Fault: SIGSTOP of an executor holding running tasks, for longer than its group's session timeout."""
    pipeline.worker()
    frozen = pipeline.executor(name="executor-frozen")
    frozen.wait_owning()
    other = pipeline.executor(name="executor-other")
    wait_until(
        lambda: (frozen.owned() or set()) and (other.owned() or set()) and (frozen.owned() | other.owned()) == ALL,
        "the two executors sharing the partitions",
    )
    uids = [uid_on_partition(f"frozen-{k}", PARTITIONS, frozen.owned()) for k in range(TASKS)]
    for uid in uids:
        pipeline.manager(uid).update_configuration(nap())
        pipeline.manager(uid).fire("go")
    for uid in uids:
        pipeline.wait_status(uid, "t_nap#0", "running")

    assigned_before = frozen.log().count("assigned task-runs partitions")
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: other.owned() == ALL, "the other executor to take every partition over", timeout=60)
        # It runs the frozen executor's requests again (each reports "running" a second time).
        wait_until(lambda: min(running_reports(pipeline, uids).values()) >= 2, "the tasks to start again elsewhere")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    states = {uid: pipeline.wait_finalized(uid, timeout=60) for uid in uids}
    # A's late reports reach the worker too; A learns it was dropped and joins the group again.
    wait_until(
        lambda: frozen.log().count("assigned task-runs partitions") > assigned_before and frozen.owned(),
        "the woken executor to rejoin the group",
        timeout=60,
    )
    results = [r for r in read_topic(pipeline.bootstrap, pipeline.topics.task_results) if r.key.decode() in uids]
    for uid, state in states.items():
        assert list(state.instances) == ["t_nap#0"], f"{uid}: {list(state.instances)}"
        instance = state.instances["t_nap#0"]
        assert instance.status == "finished"
        assert instance.metadata[TaskInstance.META_RESULT]["pid"] in (frozen.pid, other.pid)
        outcomes = {(r["status"], r["event_id"]) for r in results if r.key.decode() == uid and r["status"] in OUTCOMES}
        assert outcomes and {status for status, _ in outcomes} == {"finished"}, f"{uid}: {outcomes}"
        assert len(outcomes) == 1, f"{uid}: announced {len(outcomes)} times with different event ids"
    assert not [r for r in read_topic(pipeline.bootstrap, pipeline.topics.dead_letter) if r.key.decode() in uids]
    assert frozen.terminate() == 0 and other.terminate() == 0
