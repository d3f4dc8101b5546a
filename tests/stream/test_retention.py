"""Sessions that end (issue 14), against the real broker: retention after ``sessionFinalized``,
TTL without input, purges that survive restarts, restores and kill -9.

Sessions finish inside the worker (``using: noop``) and are finalized; others stop half-way
(never finalized).  Short deadlines (1-2 s) and waits for records, never for time.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.faults import PURGE_POINTS
from stream_triggers.stream.store import PartitionStore
from stream_triggers.stream.worker import WorkerSettings
from tests.support import PARTITIONS, App, Pipeline, Readers, Record, run_cli, wait_until, worker_in_thread

FINISHED = [f"done-{i}" for i in range(3)]
HALF_WAY = [f"half-{i}" for i in range(2)]


def publish(app: App, tag: str = "") -> None:
    for uid in FINISHED:
        app.configure(tag + uid, {"t": {"after": ["go"], "run": "x", "using": "noop"}})
        app.fire(tag + uid, "go", {"uid": uid})
    for uid in HALF_WAY:
        app.configure(tag + uid, {"t": {"after": ["go", "never"], "run": "x", "using": "noop"}})
        app.fire(tag + uid, "go")


def purges(records: list[Record]) -> dict[str, Record]:
    return {r.session: r for r in records if r.type == "SessionPurged"}


def stored(state_dir: str, topics: Topics, uids: list[str]) -> set[str]:
    """Which of ``uids`` a stopped worker's stores still hold (state or ages)."""
    found = set()
    for number in range(PARTITIONS):
        if not os.path.isdir(os.path.join(state_dir, f"{topics.events}-{number}")):
            continue
        store = PartitionStore(state_dir, topics.events, number)
        try:
            found.update(uid for uid in uids if store.read_session(uid) is not None or store.ages(uid) is not None)
        finally:
            store.close()
    return found


def settings(broker: EmbeddedBroker, topics: Topics, state_dir: Path, group: str, **retention: float) -> WorkerSettings:
    return WorkerSettings(
        bootstrap=broker.bootstrap, state_dir=str(state_dir), group=group, topic_prefix=topics.prefix, **retention
    )


@pytest.mark.broker
def test_sessions_are_purged_without_further_input_and_stay_purged(
    broker: EmbeddedBroker, topics: Topics, app: App, readers: Readers, tmp_path: Path
) -> None:
    sessions, group = readers["sessions"], f"retain-{uuid.uuid4().hex[:8]}"
    first = tmp_path / "first"
    with worker_in_thread(settings(broker, topics, first, group, session_retention_s=1, session_ttl_s=2)) as worker:
        publish(app)
        # No more input from here on: the sweep alone purges them.
        sessions.wait_for(lambda rs: set(purges(rs)) >= {*FINISHED, *HALF_WAY}, "every session's SessionPurged")
        purged = purges(sessions.records)
        assert {uid: r["reason"] for uid, r in purged.items()} == {
            **dict.fromkeys(FINISHED, "retention"),
            **dict.fromkeys(HALF_WAY, "ttl"),
        }
        assert all(r["finalized_at"] for uid, r in purged.items() if uid in FINISHED)
        assert not any(r["finalized_at"] for uid, r in purged.items() if uid in HALF_WAY)
        # (the counters follow the tombstones and the store, just after the SessionPurged records)
        wait_until(lambda: worker.stats.sessions_purged == {"retention": 3, "ttl": 2}, "the purge counters")
        wait_until(lambda: sum(worker.stats.live_sessions.values()) == 0, "no live session")

        said = run_cli("inspect", "--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix, FINISHED[0])
        assert said.returncode == 4 and "it was purged at" in said.stderr and "retention" in said.stderr, said
        never = run_cli("inspect", "--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix, "never-seen")
        assert never.returncode == 4 and "purged at" not in never.stderr, never

        late, again = FINISHED[1], FINISHED[2]
        app.reported(late, "t#0", "finished", {"late": True})
        readers["dead-letter"].wait_for(lambda _rs: readers["dead-letter"].of(late), "the late report's dead letter")
        assert [r["reason"] for r in readers["dead-letter"].of(late)] == ["session_purged"]
        app.fire(again, "go", {"again": 1})  # starts an empty session: nothing of the purged state
        fresh = app.wait_session(again, lambda s: "go" in s.latest_kwargs, "the fresh session")
        assert not fresh.tasks and not fresh.instances and fresh.latest_kwargs["go"] == {"again": 1}
    gone = [uid for uid in (*FINISHED, *HALF_WAY) if uid != again]
    assert stored(str(first), topics, gone) == set()
    assert app.state(FINISHED[0]) is None

    # A restart on the same state dir and a restore on an empty one (no retention now): still purged.
    for state_dir in (first, tmp_path / "empty"):
        with worker_in_thread(settings(broker, topics, state_dir, group)) as worker:
            if state_dir != first:
                assert worker.stats.restored_records > 0  # it read the changelog, tombstones included
        assert stored(str(state_dir), topics, gone) == set(), state_dir
        assert stored(str(state_dir), topics, [again]) == {again}


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("point", PURGE_POINTS)
def test_kill_9_while_purging_loses_nothing_and_resurrects_nothing(
    point: str, workers: Pipeline, readers: Readers, topics: Topics
) -> None:
    sessions = readers["sessions"]
    quick = ["--session-timeout-ms", "3000", "--session-retention", "1s"]  # (a killed member is noticed sooner)
    crashing = workers.worker("crashing", extra=quick, env={"STREAM_TRIGGERS_FAULTS": point + "=kill@1"})
    publish(workers)
    assert crashing.process.wait(60) == -9, f"the fault at {point} did not fire:\n{crashing.tail()}"

    restarted = workers.worker("restarted", state_dir=crashing.state_dir, extra=quick)
    sessions.wait_for(lambda rs: set(purges(rs)) >= set(FINISHED), "every finalized session's SessionPurged")
    # Before the tombstones, the sessions are whole: purged again; after them, the restore drops them.
    restarted.wait_log("sessions of partition" if point == "purge-before-tombstones" else "restored partitions")
    os.kill(restarted.pid, 15)
    assert restarted.process.wait(30) == 0
    ids = [r["event_id"] for r in sessions.read_to_end() if r.type == "SessionPurged"]
    assert len(set(ids)) == len(FINISHED)  # sent again at most, with the same ids
    assert stored(crashing.state_dir, topics, [*FINISHED, *HALF_WAY]) == set(HALF_WAY)  # nothing lost, nothing back

    fresh = workers.worker("empty")
    fresh.wait_log("restored partitions")
    os.kill(fresh.pid, 15)
    assert fresh.process.wait(30) == 0
    assert stored(fresh.state_dir, topics, [*FINISHED, *HALF_WAY]) == set(HALF_WAY)
