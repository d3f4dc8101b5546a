"""The worker loop's pace: how it takes batches and when the batches in hand are checkpointed.

Adaptive batching: take whatever the consumer already fetched; when nothing is there,
wait for the first record only (``consume(n, t)`` holds records back until ``n``
arrive or ``t`` passes).  Under load the batches grow by themselves; idle, a record
is applied as soon as it is fetched.

The linger (off by default): after a turn that emptied the consumer's queue, the next
take waits up to ``linger_s`` for a full batch.  A steady stream is then applied in
fewer, larger turns (each turn's fixed costs - waking up, the core's call, the
producer's requests - are paid less often), for up to ``linger_s`` more latency; a lone
record is still applied at once, and a backlog (full takes) never lingers.

Outputs leave as each batch is applied; its state, store write and offset commit
(stream/checkpoint.py) wait for a checkpoint, shared by the batches of one
``checkpoint_interval_s`` (or ``batch_size`` events), so a paced stream pays one
checkpoint per interval rather than one per small batch.

The wait for a first record is the time until the loop has something else to do: a
checkpoint in flight to move on (``in_flight_wait_s``), the batches in hand to checkpoint
(:meth:`CheckpointPace.wait_s`), a retention sweep, or at most ``idle_wait_s``.  A record
ends it at once.  An idle worker woke every 10 ms for nothing, which was most of its CPU.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

__all__ = ["TAKE_AT_MOST", "WAIT_AT_LEAST", "CheckpointPace", "linger_after", "take_batch"]


TAKE_AT_MOST = 1_000
"""Records taken from the consumer at a time, however large ``batch_size`` (events per
checkpoint): a backlog's records are applied and let go in chunks, so their message
objects never pile up (10,000 at a time held 16 MB more at peak, and ran slower)."""


WAIT_AT_LEAST = 0.001
"""The shortest wait for a record: the client counts whole milliseconds, so a shorter one
returns at once, and the loop would spin through the last millisecond before a checkpoint."""


def take_batch(consumer: Consumer, max_messages: int, wait_s: float, linger_s: float = 0.0) -> list[Any]:
    """What is fetched already, or arrives within ``linger_s`` (up to ``max_messages``); else the
    first record within ``wait_s`` and whatever arrived with it (a fetch response lands whole:
    one batch, not two)."""
    most = min(max_messages, TAKE_AT_MOST)
    messages = consumer.consume(most, linger_s)
    if messages:
        return messages
    messages = consumer.consume(1, wait_s)
    if messages and most > 1:
        messages.extend(consumer.consume(most - 1, 0))
    return messages


def linger_after(taken: int, max_messages: int, linger_s: float) -> float:
    """How long the next take lingers: ``linger_s`` after a take that emptied the queue (fewer
    than it could take, but some), else 0 (idle: wait for the first record; a backlog: no wait)."""
    return linger_s if 0 < taken < min(max_messages, TAKE_AT_MOST) else 0.0


class CheckpointPace:
    """The batches applied since the last checkpoint, and whether the next one is due."""

    __slots__ = ("interval_s", "max_events", "since", "events")

    def __init__(self, interval_s: float, max_events: int) -> None:
        self.interval_s = interval_s
        self.max_events = max_events
        self.since: float | None = None
        """``time.monotonic()`` when the first batch in hand began (None: nothing in hand)."""
        self.events = 0

    def applied(self, began: float, events: int) -> None:
        if self.since is None:
            self.since = began
        self.events += events

    def due(self, now: float) -> bool:
        return self.since is not None and (now - self.since >= self.interval_s or self.events >= self.max_events)

    def wait_s(self, now: float, idle_s: float, sweep_at: float) -> float:
        """How long the next take may wait for a record: until the batches in hand are due for
        their checkpoint, with none in hand until the retention sweep is (``sweep_at``); at most ``idle_s``."""
        left = (sweep_at if self.since is None else self.since + self.interval_s) - now
        return 0.0 if left <= 0 else min(idle_s, max(left, WAIT_AT_LEAST))

    def take(self) -> tuple[float, int] | None:
        """Start a checkpoint (or forget the batches in hand): when the first began and their events; None if none."""
        taken = None if self.since is None else (self.since, self.events)
        self.since, self.events = None, 0
        return taken
