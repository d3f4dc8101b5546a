"""The worker loop's pace (stream/pace.py): adaptive batches, one checkpoint per interval or per batch_size."""

from __future__ import annotations

from typing import Any

import pytest

from stream_triggers.stream.pace import TAKE_AT_MOST, WAIT_AT_LEAST, CheckpointPace, linger_after, take_batch


class FakeConsumer:
    """Answers ``consume(n, timeout)`` from a queue and records each call."""

    def __init__(self, fetched: list[Any], arriving: list[Any]) -> None:
        self.fetched, self.arriving = fetched, arriving
        self.calls: list[tuple[int, float]] = []

    def consume(self, max_messages: int, timeout: float) -> list[Any]:
        self.calls.append((max_messages, timeout))
        if timeout > 0:  # (a fetch response lands whole, behind what was fetched already)
            self.fetched, self.arriving = self.fetched + self.arriving, []
        taken, self.fetched = self.fetched[:max_messages], self.fetched[max_messages:]
        return taken


def test_what_is_fetched_is_taken_without_waiting() -> None:
    consumer = FakeConsumer(fetched=[1, 2, 3], arriving=[4])
    assert take_batch(consumer, 10, 0.5) == [1, 2, 3]  # type: ignore[arg-type]
    assert consumer.calls == [(10, 0)]


def test_with_nothing_fetched_the_first_record_is_waited_for_and_what_came_with_it_taken() -> None:
    consumer = FakeConsumer(fetched=[], arriving=[4, 5, 6])
    assert take_batch(consumer, 10, 0.5) == [4, 5, 6]  # type: ignore[arg-type]
    assert consumer.calls == [(10, 0), (1, 0.5), (9, 0)]


def test_nothing_arriving_within_the_wait_is_an_empty_batch() -> None:
    consumer = FakeConsumer(fetched=[], arriving=[])
    assert take_batch(consumer, 10, 0.5) == []  # type: ignore[arg-type]
    assert consumer.calls == [(10, 0), (1, 0.5)]


def test_a_backlog_is_taken_in_chunks_whatever_the_batch_size() -> None:
    consumer = FakeConsumer(fetched=list(range(TAKE_AT_MOST + 5)), arriving=[])
    assert take_batch(consumer, 10_000, 0.5) == list(range(TAKE_AT_MOST))  # type: ignore[arg-type]
    assert take_batch(consumer, 10_000, 0.5) == list(range(TAKE_AT_MOST, TAKE_AT_MOST + 5))  # type: ignore[arg-type]


def test_a_lingering_take_waits_for_a_full_batch_and_takes_what_came() -> None:
    consumer = FakeConsumer(fetched=[1, 2], arriving=[3, 4])
    assert take_batch(consumer, 10, 0.5, linger_s=0.02) == [1, 2, 3, 4]  # type: ignore[arg-type]
    assert consumer.calls == [(10, 0.02)]


def test_a_lingering_take_that_finds_nothing_waits_for_the_first_record_as_usual() -> None:
    consumer = FakeConsumer(fetched=[], arriving=[])
    assert take_batch(consumer, 10, 0.5, linger_s=0.02) == []  # type: ignore[arg-type]
    assert consumer.calls == [(10, 0.02), (1, 0.5)]


def test_only_a_take_that_emptied_the_queue_makes_the_next_one_linger() -> None:
    assert linger_after(3, 5_000, 0.02) == 0.02  # a steady stream: wait for more
    assert linger_after(0, 5_000, 0.02) == 0.0  # idle: the next record is applied at once
    assert linger_after(TAKE_AT_MOST, 5_000, 0.02) == 0.0  # a backlog: no waiting
    assert linger_after(10, 10, 0.02) == 0.0  # a full batch_size smaller than a take
    assert linger_after(3, 5_000, 0.0) == 0.0  # lingering turned off


def test_a_checkpoint_falls_due_after_the_interval_from_the_first_batch_in_hand() -> None:
    pace = CheckpointPace(interval_s=0.25, max_events=1_000)
    assert not pace.due(100.0)  # nothing in hand
    pace.applied(100.0, 5)
    pace.applied(100.125, 5)  # a later batch does not move the start
    assert not pace.due(100.2)
    assert pace.due(100.25)
    assert pace.take() == (100.0, 10)
    assert pace.take() is None and not pace.due(200.0)


def test_a_checkpoint_falls_due_at_batch_size_events_whatever_the_time() -> None:
    pace = CheckpointPace(interval_s=3600.0, max_events=10)
    pace.applied(5.0, 6)
    assert not pace.due(5.0)
    pace.applied(5.0, 4)
    assert pace.due(5.0)


def test_a_take_waits_until_the_checkpoint_in_hand_falls_due_and_idle_until_the_sweep() -> None:
    """The wait for a first record ends when the loop has something else to do, at most ``idle_s``."""
    pace = CheckpointPace(interval_s=0.1, max_events=1_000)
    assert pace.wait_s(10.0, idle_s=0.5, sweep_at=10.25) == 0.25  # nothing in hand: until the sweep
    assert pace.wait_s(10.0, idle_s=0.5, sweep_at=99.0) == 0.5  # at most the idle wait
    assert pace.wait_s(10.0, idle_s=0.5, sweep_at=9.0) == 0.0  # a sweep overdue: no wait
    pace.applied(10.0, 3)
    assert pace.wait_s(10.0625, idle_s=0.5, sweep_at=10.001) == pytest.approx(0.0375)  # in hand: until its checkpoint
    assert pace.wait_s(10.0998, idle_s=0.5, sweep_at=99.0) == WAIT_AT_LEAST  # (whole milliseconds: not 0)
    assert pace.wait_s(10.1, idle_s=0.5, sweep_at=99.0) == 0.0  # due
    assert pace.wait_s(10.25, idle_s=0.5, sweep_at=99.0) == 0.0  # overdue
    pace.take()
    assert pace.wait_s(10.25, idle_s=0.5, sweep_at=99.0) == 0.5
