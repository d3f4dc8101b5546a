"""A stateful model test of the stream worker against the in-process manager, with crashes.

Fault: any interleaving of inputs, failures, retries, replays, skips, reconfigurations and
``kill -9`` of the worker (restarted on its own state dir or on an empty one).

Hypothesis drives a sequence of operations on a few fresh sessions per example.  Each
operation is one engine input, published to the worker's ``events`` topic (as the
``kafka`` storage does, without its early check of the committed state) and applied,
with the very same input, to an in-process ``FinalizingTriggerManager`` over the
``memory`` storage: the model.  At the end of each
example the worker's committed state, read back from the changelog the way every reader
does (``ChangelogReader``: newest owner wins), must equal the model's for every session,
and the outputs must be consistent: every task run the model requested was published at
least once, nothing else was, and no instance was run by two different inputs.

Timestamps are left out of the comparison: a cascade (a noop task finishing, the
session being finalized) is stamped with the clock of whoever applies it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from stream_triggers.engine import (
    ConfigurationUpdated,
    EngineError,
    Input,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    TriggerFired,
)
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import FinalizingTriggerManager, TriggerManager
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.runners.base import BaseTaskRunner
from stream_triggers.storages.memory import MemoryStorage, MemoryStore
from stream_triggers.types import Status, TaskInstance
from tests.support import (
    CRASH_SESSION_TIMEOUT_MS,
    App,
    Pipeline,
    Proc,
    Readers,
    newest_snapshots,
    projection,
    wait_until,
)

CONFIGURATIONS: list[dict[str, dict[str, Any]]] = [
    {
        "t_a": {"after": ["x", "y"], "run": "model.A"},
        "t_b": {"after": ["t_a"], "andEvery": "page", "run": "model.B"},
        "t_c": {"after": ["x"], "unless": ["stop"], "run": "model.C"},  # one fire schedules it
        "t_n": {"after": ["z"], "run": "model.N", "using": "noop"},  # finishes inside the worker, cascades
    },
    {  # a reconfiguration: t_a waits for z as well, a new task joins
        "t_a": {"after": ["x", "y", "z"], "run": "model.A"},
        "t_d": {"after": ["t_c"], "unless": ["stop"], "run": "model.D", "withParams": {"t_c": {"k": 1}}},
    },
    {"t_e": {"after": ["t_n"], "andEvery": "page", "run": "model.E", "using": "noop"}},
]
TRIGGERS = ("x", "y", "z", "page", "stop")
SESSIONS_PER_EXAMPLE = 2
AT = datetime(2026, 1, 1)
FAILURE = {
    TaskInstance.META_EXCEPTION_TYPE: "builtins.ValueError",
    TaskInstance.META_EXCEPTION_INFO: "ValueError: model",
    TaskInstance.META_EXCEPTION_CONTEXT: {},
}
_examples = itertools.count()


class Requests(BaseTaskRunner):
    """The model's ``kafka`` runner: notes which instance was requested, runs nothing."""

    name = "kafka"

    def __init__(self) -> None:
        self.requested: set[tuple[str, str]] = set()

    def run(self, manager: Any, task_instance: TaskInstance) -> None:
        self.requested.add((manager.storage.uid, task_instance.name))


class Model(FinalizingTriggerManager):
    """The worker's manager in process: tasks without ``using`` go to the (recording) ``kafka`` runner."""

    @property
    def default_task_runner_name(self) -> str:
        return "kafka"


class WorkerVersusModel(RuleBasedStateMachine):
    """One example: fresh sessions, operations on them, the worker crashed now and then."""

    app: App
    workers: Pipeline
    readers: Readers
    worker: list[Proc]
    tally: defaultdict[str, int] = defaultdict(int)
    """What the examples did, over the whole run (printed at the end)."""

    def __init__(self) -> None:
        super().__init__()
        example = next(_examples)
        self.uids = [f"model-{example}-{k}" for k in range(SESSIONS_PER_EXAMPLE)]
        self.store = MemoryStore()
        self.requests = Requests()
        self.clock = itertools.count()
        self.rejected: dict[str, int] = defaultdict(int)
        self.crashes = 0
        self.reconfigurations = 0

    def now(self) -> datetime:
        return AT + timedelta(seconds=next(self.clock))

    def model(self, uid: str) -> Model:
        return Model(MemoryStorage(uid, self.store), runners={"kafka": self.requests}, clock=lambda: AT)

    def state(self, uid: str) -> Any:
        return self.store.sessions.get(uid)

    def send(self, uid: str, event: Input) -> None:
        """The same input to the model and to the worker (a rejection is a dead letter there)."""
        self.tally[type(event).__name__] += 1
        try:
            self.model(uid).submit(event)
        except EngineError:
            self.rejected[uid] += 1
            self.tally["rejected (dead letter)"] += 1
        # Published as is: the worker, not the kafka storage's early check of the committed
        # state (check_committed), is what must refuse an input the engine rejects.
        TriggerManager(self.app.storage(uid, check_committed=False)).submit(event)

    def instances(self, uid: str, *statuses: Status) -> list[str]:
        state = self.state(uid)
        if state is None:
            return []
        return sorted(name for name, i in state.instances.items() if i.status in statuses)

    def with_instances(self, *statuses: Status) -> list[tuple[str, str]]:
        return [(uid, name) for uid in self.uids for name in self.instances(uid, *statuses)]

    # -- the operations ----------------------------------------------------------------

    @initialize()
    def configure_every_session(self) -> None:
        for uid in self.uids:
            self.send(uid, ConfigurationUpdated(CONFIGURATIONS[0], self.now()))

    @precondition(lambda self: self.reconfigurations < 2)  # (the rule Hypothesis would otherwise favour)
    @rule(k=st.integers(0, SESSIONS_PER_EXAMPLE - 1), which=st.integers(1, len(CONFIGURATIONS) - 1))
    def reconfigure(self, k: int, which: int) -> None:
        self.reconfigurations += 1
        self.send(self.uids[k], ConfigurationUpdated(CONFIGURATIONS[which], self.now()))

    @rule(k=st.integers(0, SESSIONS_PER_EXAMPLE - 1), trigger=st.sampled_from(TRIGGERS), n=st.integers(0, 3))
    def fire(self, k: int, trigger: str, n: int) -> None:
        self.send(self.uids[k], TriggerFired(trigger, {"n": n}, self.now()))

    @precondition(lambda self: self.with_instances(Status.SCHEDULED, Status.RUNNING))
    @rule(data=st.data(), report=st.sampled_from(["running", "finished", "failed", "retry"]))
    def report(self, data: st.DataObject, report: str) -> None:
        """An executor's report: running, then finished (with a result), failed, or a retry."""
        uid, name = data.draw(st.sampled_from(self.with_instances(Status.SCHEDULED, Status.RUNNING)))
        at = self.now()
        if report == "running":
            event: Input = StatusReported(name, Status.RUNNING, {}, at)
        elif report == "finished":
            result = {"by": name}
            event = StatusReported(name, Status.FINISHED, {TaskInstance.META_RESULT: result}, at, result)
        elif report == "failed":
            event = StatusReported(name, Status.FAILED, dict(FAILURE), at)
        else:
            event = RetryRequested(name, dict(FAILURE), {"retried": True}, None, at)
        self.send(uid, event)

    @precondition(lambda self: self.with_instances(Status.FINISHED, Status.FAILED))
    @rule(data=st.data())
    def duplicate_report(self, data: st.DataObject) -> None:
        """A report that arrives again (an executor re-ran the task): it changes nothing."""
        uid, name = data.draw(st.sampled_from(self.with_instances(Status.FINISHED, Status.FAILED)))
        status = self.state(uid).instances[name].status
        self.send(uid, StatusReported(name, status, {}, self.now(), {} if status == Status.FINISHED else None))

    @precondition(lambda self: self.with_instances(Status.FAILED))
    @rule(data=st.data(), replacement=st.sampled_from([None, {"n": 9}]))
    def replay(self, data: st.DataObject, replacement: dict[str, Any] | None) -> None:
        uid, name = data.draw(st.sampled_from(self.with_instances(Status.FAILED)))
        self.send(uid, ReplayRequested(name, replacement, self.now()))

    @precondition(lambda self: self.with_instances(Status.SCHEDULED, Status.RUNNING, Status.FINISHED))
    @rule(data=st.data())
    def replay_of_an_instance_that_did_not_fail(self, data: st.DataObject) -> None:
        """An operator's mistake: the engine refuses it, so the worker must dead-letter it."""
        uid, name = data.draw(st.sampled_from(self.with_instances(Status.SCHEDULED, Status.RUNNING, Status.FINISHED)))
        self.send(uid, ReplayRequested(name, None, self.now()))

    @precondition(lambda self: self.with_instances(Status.FAILED))
    @rule(data=st.data(), cascade=st.booleans())
    def skip(self, data: st.DataObject, cascade: bool) -> None:
        uid, name = data.draw(st.sampled_from(self.with_instances(Status.FAILED)))
        self.send(uid, SkipRequested(name, cascade, {"skipped": name} if cascade else {}, self.now()))

    @precondition(lambda self: self.crashes < 2)
    @rule(empty_state_dir=st.booleans())
    def crash_and_restart_the_worker(self, empty_state_dir: bool) -> None:
        """``kill -9``, then a new worker on the same state dir or on an empty one."""
        self.crashes += 1
        self.tally["crash, empty state dir" if empty_state_dir else "crash, same state dir"] += 1
        old = self.worker[0]
        old.kill()
        state_dir = None if empty_state_dir else old.state_dir
        self.worker[0] = self.workers.worker(state_dir=state_dir)

    # -- the check ---------------------------------------------------------------------

    def teardown(self) -> None:
        expected = {uid: projection(self.state(uid)) for uid in self.uids}

        def committed() -> dict[str, Any]:
            snapshots, _stale = newest_snapshots(self.app)
            return {uid: projection(snapshots[uid]["state"]) if uid in snapshots else {} for uid in self.uids}

        try:
            wait_until(lambda: committed() == expected, "the worker's committed state to equal the model's", 90)
        except AssertionError:
            got = committed()
            diff = {uid: (got[uid], expected[uid]) for uid in self.uids if got[uid] != expected[uid]}
            raise AssertionError(f"worker (left) and model (right) differ: {diff}") from None

        runs = self.readers["task-runs"]
        mine = {key for key in self.requests.requested if key[0] in self.uids}
        # A rejected input changes no state: the committed state can equal the model's before the
        # worker reached the last inputs, so wait for their outputs, then for the topics to settle.
        with contextlib.suppress(AssertionError):  # on a timeout, the checks below say what is missing
            runs.wait_for(lambda records: mine <= {(r.session, r["instance"]) for r in records}, "the task runs", 60)
        runs.settle(quiet_s=0.5)
        by_instance: dict[tuple[str, str], set[str]] = defaultdict(set)
        for record in runs.records:
            if record.session in self.uids:
                by_instance[(record.session, record["instance"])].add(record["event_id"])
        assert set(by_instance) == mine, f"task runs published {sorted(by_instance)}, requested {sorted(mine)}"
        # A retry or a replay runs a new instance: an instance is requested by one input only.
        twice = {key: ids for key, ids in by_instance.items() if len(ids) > 1}
        assert not twice, f"instances requested by different inputs: {twice}"

        dead = self.readers["dead-letter"]

        def dead_letters(uid: str, records: list[Any]) -> set[tuple[int, int]]:
            return {(r["partition"], r["offset"]) for r in records if r.key == uid.encode()}

        with contextlib.suppress(AssertionError):
            dead.wait_for(
                lambda records: all(len(dead_letters(uid, records)) >= self.rejected[uid] for uid in self.uids),
                "a dead letter for every rejected input",
                60,
            )
        dead.settle(quiet_s=0.5)
        for uid in self.uids:
            offsets = dead_letters(uid, dead.records)
            rejected = self.rejected[uid]
            assert len(offsets) == rejected, f"{uid}: {len(offsets)} dead letters, {rejected} expected"


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_model_of_the_worker_with_crashes_matches_the_in_process_manager(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, readers: Readers
) -> None:
    """Fault: any sequence of inputs, reports, replays, skips, reconfigurations and kill -9 restarts.

    A short group session timeout: a killed worker's partitions go to its successor once
    the group has dropped it, and most examples wait for that (inputs are few, so
    heartbeats are never late).
    """
    pipeline = Pipeline(broker.bootstrap, topics, tmp_path, session_timeout_ms=CRASH_SESSION_TIMEOUT_MS)
    with pipeline:
        try:
            _run(pipeline, readers)
        finally:
            print(pipeline.report())  # shown by pytest when the test failed


def _run(pipeline: Pipeline, readers: Readers) -> None:
    WorkerVersusModel.app, WorkerVersusModel.workers, WorkerVersusModel.readers = pipeline, pipeline, readers
    WorkerVersusModel.worker = [pipeline.worker()]
    WorkerVersusModel.worker[0].wait_assigned()
    run_state_machine_as_test(
        WorkerVersusModel,
        settings=settings(
            max_examples=10,
            stateful_step_count=15,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),  # no shrinking: each step is a broker round trip
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"model test steps: {dict(WorkerVersusModel.tally)}")
    assert WorkerVersusModel.tally["crash, same state dir"] + WorkerVersusModel.tally["crash, empty state dir"]
