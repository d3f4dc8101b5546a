"""A many-session workload whose tasks finish inside the worker (``using: noop``), and its checks.

Each session gets seven events: configure, page, x, page, y, z (or stop), page.  The
outcome of an uninterrupted run is fixed, so after crashes and rebalances the outputs
and the committed state of every session must be exactly that: no loss, no state
transition twice (a ``page`` applied twice would make a ``t_b#3``), output duplicates
only as byte-identical re-sends with the same ``event_id``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tests.support import App, Record

CONFIGURATION = {
    "t_a": {"after": ["x", "y"], "run": "bench.A", "using": "noop"},
    "t_b": {"after": ["t_a"], "andEvery": "page", "run": "bench.B", "using": "noop"},
    "t_c": {"after": ["t_a", "z"], "unless": ["stop"], "run": "bench.C", "using": "noop"},
}
STEPS = 7
"""Events per session."""


def uid(i: int) -> str:
    return f"load-{i:04d}"


def stops(i: int) -> bool:
    return i % 3 == 0


def event(i: int, step: int) -> tuple[str, Any]:
    """Session ``i``'s event number ``step``: ("configure", config) or (trigger, kwargs)."""
    if step == 0:
        return "configure", CONFIGURATION
    trigger, kwargs = [
        ("page", {"n": 1}),
        ("x", {"i": i}),
        ("page", {"n": 2}),
        ("y", {}),
        ("stop", {}) if stops(i) else ("z", {"i": i}),
        ("page", {"n": 3}),
    ][step - 1]
    return trigger, kwargs


def expected_results(i: int) -> set[tuple[str, str]]:
    """(instance, status) of every task-results record session ``i`` must have."""
    return {
        ("t_a#0", "finished"),
        ("t_b#0", "finished"),
        ("t_b#1", "finished"),
        ("t_b#2", "finished"),
        ("t_c#0", "abandoned" if stops(i) else "finished"),
    }


def schedule(sessions: int, stride: int = 20) -> list[tuple[int, int]]:
    """Every (session, step), staggered: session ``i`` sends step ``s`` around slot ``i + stride * s``.

    So about ``STEPS * stride`` sessions are in flight at any time, and the first ones
    finish (produce outputs) early rather than after every session's first steps.
    """
    pairs = [(i, step) for i in range(sessions) for step in range(STEPS)]
    return sorted(pairs, key=lambda pair: (pair[0] + stride * pair[1], pair[1]))


def publish(app: App, pairs: Iterable[tuple[int, int]], rate: float) -> None:
    """Publish session ``i``'s event ``step`` for each pair, through the kafka storage, at ``rate`` events/s."""
    started = time.monotonic()
    for count, (i, step) in enumerate(pairs, 1):
        name, payload = event(i, step)
        if name == "configure":
            app.configure(uid(i), payload)
        else:
            app.fire(uid(i), name, payload)
        ahead = started + count / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


class Publisher(threading.Thread):
    """:func:`publish` in the background; :meth:`finish` re-raises its error."""

    def __init__(self, app: App, pairs: Iterable[tuple[int, int]], rate: float) -> None:
        super().__init__(daemon=True)
        self.work = (app, list(pairs), rate)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            publish(*self.work)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error


def without_produced_at(record: Record) -> dict[str, Any]:
    return {k: v for k, v in record.value.items() if k != "produced_at"}


def check_outputs(sessions: int, results: Sequence[Record], finalized: Sequence[Record]) -> dict[str, int]:
    """Every session's outputs are the uninterrupted run's; returns duplicate counts."""
    seen: dict[str, dict[str, Record]] = {"results": {}, "sessions": {}}
    duplicates = {"results": 0, "sessions": 0}
    for kind, records in (("results", results), ("sessions", finalized)):
        for record in records:
            assert record.key == record.session.encode()
            first = seen[kind].setdefault(record["event_id"], record)
            if first is not record:  # a re-send after a crash: must be the same output
                duplicates[kind] += 1
                assert without_produced_at(first) == without_produced_at(record), record["event_id"]

    transitions: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for record in seen["results"].values():
        transitions[(record.session, record["instance"], record["status"])].append(record["event_id"])
    twice = {key: ids for key, ids in transitions.items() if len(ids) > 1}
    assert not twice, f"state transitions published twice under different event ids: {list(twice.items())[:5]}"
    got: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for session, instance, status in transitions:
        got[session].add((instance, status))
    wrong = {uid(i): got.get(uid(i)) for i in range(sessions) if got.get(uid(i)) != expected_results(i)}
    assert not wrong, f"{len(wrong)} sessions with wrong outputs, e.g. {list(wrong.items())[:3]}"
    assert len(got) == sessions, (
        f"outputs of unknown sessions: {sorted(set(got) - {uid(i) for i in range(sessions)})[:5]}"
    )

    finalized_ids: dict[str, set[str]] = defaultdict(set)
    for record in seen["sessions"].values():
        assert record.type == "SessionFinalized"
        finalized_ids[record.session].add(record["event_id"])
    wrong_finals = {
        uid(i): finalized_ids.get(uid(i)) for i in range(sessions) if len(finalized_ids.get(uid(i), ())) != 1
    }
    assert not wrong_finals, f"sessions not finalized exactly once: {list(wrong_finals.items())[:5]}"
    return duplicates


def check_state(sessions: int, snapshots: dict[str, dict[str, Any]], events: Sequence[Record]) -> None:
    """The committed state of every session: the expected instances, every event applied once."""
    last_offset: dict[str, int] = {}
    per_session: dict[str, int] = defaultdict(int)
    for record in events:
        last_offset[record.session] = max(last_offset.get(record.session, -1), record.offset)
        per_session[record.session] += 1
    assert len(events) == sessions * STEPS, f"{len(events)} events published, {sessions * STEPS} expected"
    assert set(per_session.values()) == {STEPS}
    problems = []
    for i in range(sessions):
        name = uid(i)
        snapshot = snapshots.get(name)
        if snapshot is None:
            problems.append((name, "no snapshot"))
            continue
        state = snapshot["state"]
        statuses = {n: str(instance.status) for n, instance in state.instances.items()}
        expected = dict(expected_results(i))
        if statuses != expected:
            problems.append((name, statuses))
        elif snapshot["applied_offset"] != last_offset[name]:
            problems.append((name, f"applied offset {snapshot['applied_offset']}, last event at {last_offset[name]}"))
        elif "sessionFinalized" not in state.latest_kwargs or state.latest_kwargs["page"] != {"n": 3}:
            problems.append((name, dict(state.latest_kwargs)))
    assert not problems, f"{len(problems)} sessions in a wrong state, e.g. {problems[:3]}"
