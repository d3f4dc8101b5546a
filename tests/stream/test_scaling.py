"""Workers of one group share the partitions; one joins and one leaves mid-stream.

Two workers split the four partitions, a third joins while events arrive, then one
of the first two leaves (SIGTERM).  Sessions move between workers with their state,
which the new owner restores from the changelog; afterwards every session's outputs
and committed state are those of an uninterrupted run on one worker.
"""

from __future__ import annotations

import pytest

from tests.support import (
    App,
    Pipeline,
    Proc,
    Readers,
    committed_offsets,
    end_offsets,
    latest_snapshots,
    wait_until,
)

from . import workload

SESSIONS = 200
RATE = 100.0  # events/s
ALL = {0, 1, 2, 3}  # the partitions of every topic the ``topics`` fixture creates


def split_between(group: list[Proc], since: dict[str, int] | None = None) -> bool:
    """The members (each assigned again since ``since``) own every partition, each its own."""
    if since is not None and any(w.assignments() <= since[w.name] for w in group):
        return False
    owned = [w.owned() or set() for w in group]
    return all(owned) and set().union(*owned) == ALL and sum(map(len, owned)) == len(ALL)


@pytest.mark.broker
@pytest.mark.slow
def test_a_worker_joins_and_one_leaves_mid_stream(workers: Pipeline, readers: Readers, app: App) -> None:
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))
    pairs = workload.schedule(SESSIONS)
    first, second = workers.worker("w0"), workers.worker("w1")
    wait_until(lambda: split_between([first, second]), "two workers sharing the partitions", timeout=60)

    # A third worker joins while the events arrive.
    publisher = workload.Publisher(app, pairs[:500], RATE)
    third = workers.worker("w2")
    wait_until(lambda: split_between([first, second, third]), "three workers sharing the partitions", timeout=60)
    publisher.finish()

    # One of the first two leaves (SIGTERM: finish the batch, commit, leave the group) mid-stream.
    publisher = workload.Publisher(app, pairs[500:1000], RATE)
    results.wait_count(len(results.records) + 50)
    since = {w.name: w.assignments() for w in (second, third)}
    assert first.terminate() == 0
    left_at = len(results.records)
    wait_until(lambda: split_between([second, third], since), "two workers taking over", timeout=60)
    publisher.finish()
    workload.publish(app, pairs[1000:], RATE * 2)

    results.wait_count(expected, timeout=90)
    finalized.wait_count(SESSIONS, timeout=60)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert second.terminate() == 0 and third.terminate() == 0

    duplicates = workload.check_outputs(SESSIONS, results.records, finalized.records)
    events = readers["events"].read_to_end()
    ends = end_offsets(events)
    committed = committed_offsets(app.bootstrap, app.topics.events, workers.group, ends)
    assert committed == ends, "a worker stopped by SIGTERM left part of what it applied uncommitted"
    workload.check_state(SESSIONS, latest_snapshots(app.bootstrap, app.topics), events)
    assert not readers["dead-letter"].read_to_end()
    moved = {w.name: w.restored() for w in (first, second, third)}
    assert moved["w1"] + moved["w2"] > 0, f"no state moved through the changelog: {moved}"
    assert left_at < expected, "w0 left after the stream ended"
    print(f"w0 left at {left_at} of {expected} results; restored {moved}; duplicates re-sent: {duplicates}")
