"""Fault: the group scales 1 -> 3 -> 1 workers under load (a few thousand sessions, paced).

Each scale step is a rebalance with input arriving: partitions move, with their state,
to workers that restore them from the changelog, and back.  What must hold: every
expected output at least once (re-sent only with identical event ids), every session's
committed state exactly that of an uninterrupted run, and each input applied once -
in the whole changelog, every ``(session, applied offset)`` stands for one state only
(an input applied a second time, on top of a state that already held it, would show as
a second, different state at the same applied offset), and no record claims an input
of another session.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from stream_triggers.engine import ConfigurationUpdated, Input, TriggerFired
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.state_format import KIND_HEADER, KIND_WHOLE, decode_state, state_kind
from stream_triggers.storages.base import utc_now
from tests.stream import workload
from tests.support import (
    App,
    Pipeline,
    Proc,
    Readers,
    TopicReader,
    committed_offsets,
    end_offsets,
    newest_snapshots,
    projection,
    wait_until,
)

SESSIONS = 2000
RATE = 500.0  # events/s: 14,000 events in about 30 s
CHUNK = 100
ALL = {0, 1, 2, 3}


def _input(i: int, step: int) -> tuple[str, Input]:
    name, payload = workload.event(i, step)
    if name == "configure":
        return workload.uid(i), ConfigurationUpdated(payload, utc_now())
    return workload.uid(i), TriggerFired(name, payload, utc_now())


class PacedPublisher(threading.Thread):
    """The workload's events, published in chunks at ``RATE`` events/s; ``published`` counts them."""

    def __init__(self, app: App, pairs: list[tuple[int, int]]) -> None:
        super().__init__(daemon=True)
        self.app, self.pairs = app, pairs
        self.published = 0
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            started = time.monotonic()
            for first in range(0, len(self.pairs), CHUNK):
                chunk = self.pairs[first : first + CHUNK]
                self.published += self.app.publish_many(_input(i, step) for i, step in chunk)
                ahead = started + self.published / RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(180)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error


def owns_all_split(group: list[Proc], since: dict[str, int]) -> bool:
    """Each member was assigned again since ``since``, and together they own every partition once."""
    if any(w.assignments() <= since.get(w.name, -1) for w in group):
        return False
    owned = [w.owned() or set() for w in group]
    return all(owned) and set().union(*owned) == ALL and sum(map(len, owned)) == len(ALL)


def check_each_input_applied_once(app: App, events: list[Any]) -> int:
    """Every (session, applied offset) in the whole changelog stands for one state; returns the records read.

    A whole-session record is its state; a session header (a session stored in parts) stands
    for the state assembled from it and its batch's instance parts, as any reader assembles it.
    """
    offsets_of: dict[str, set[int]] = defaultdict(set)
    for record in events:
        offsets_of[record.session].add(record.offset)
    reader = TopicReader(app.bootstrap, app.topics.changelog, contiguous=False)
    try:
        records = reader.read_to_end(60)
    finally:
        reader.close()
    changelog = ChangelogReader()
    states: dict[tuple[str, int], dict[str, Any]] = {}
    twice = []
    for record in records:
        kept = changelog.add(record.key, record.raw or None, record.partition)
        if record.type is None:
            continue  # a tombstone (a removed instance part)
        uid, applied = record["session_uid"], record["applied_offset"]
        assert applied in offsets_of[uid], f"{uid}: a state at offset {applied}, not one of its inputs"
        kind = state_kind(record["state"])
        if kind == KIND_WHOLE:
            state = projection(decode_state(record["state"]))
        elif kind == KIND_HEADER and kept is not None:
            assembled = changelog.state(uid)
            assert assembled is not None and assembled[1] == applied, (uid, applied)
            state = projection(assembled[0])
        else:
            continue  # an instance part (its header stands for it), or a stale header
        first = states.setdefault((uid, applied), state)
        if first != state:
            twice.append((uid, applied))
    assert not twice, f"inputs applied twice (two states at one applied offset): {twice[:5]}"
    return len(records)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scaling_1_to_3_to_1_workers_under_load_applies_each_input_once(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    """Fault: two rebalances under load, out to three workers and back to one."""
    results, finalized = readers["task-results"], readers["sessions"]
    expected = sum(len(workload.expected_results(i)) for i in range(SESSIONS))
    first = workers.worker("w0")
    first.wait_assigned()
    publisher = PacedPublisher(app, workload.schedule(SESSIONS))

    results.wait_count(expected // 5, timeout=120)
    since = {"w0": first.assignments()}
    added = [workers.worker("w1"), workers.worker("w2")]
    wait_until(lambda: owns_all_split([first, *added], since), "three workers sharing the partitions", timeout=90)
    scaled_out_at = len(results.records)

    results.wait_count(min(expected, scaled_out_at + expected // 5), timeout=120)
    since = {"w0": first.assignments()}
    for worker in added:
        assert worker.terminate() == 0
    wait_until(lambda: owns_all_split([first], since), "the first worker owning everything again", timeout=90)
    scaled_in_at = len(results.records)
    publisher.finish()

    results.wait_count(expected, timeout=180)
    finalized.wait_count(SESSIONS, timeout=90)
    for reader in (results, finalized):
        reader.settle(quiet_s=1.0)
    assert first.terminate() == 0

    duplicates = workload.check_outputs(SESSIONS, results.records, finalized.records)
    events = readers["events"].read_to_end(60)
    snapshots, stale = newest_snapshots(app)
    workload.check_state(SESSIONS, snapshots, events)
    changelog_records = check_each_input_applied_once(app, events)
    ends = end_offsets(events)
    assert committed_offsets(app.bootstrap, app.topics.events, workers.group, ends) == ends
    assert not readers["dead-letter"].read_to_end()
    restored = {w.name: w.restored() for w in (first, *added)}
    assert sum(restored.values()) > 0, f"no state moved through the changelog: {restored}"
    assert scaled_out_at < scaled_in_at < expected, (scaled_out_at, scaled_in_at, expected)
    print(
        f"scaled out at {scaled_out_at}, in at {scaled_in_at} of {expected} results; restored {restored}; "
        f"duplicates re-sent {duplicates}; {changelog_records} changelog records, {stale} stale"
    )
