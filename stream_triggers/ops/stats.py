"""Plain counters for the hot paths: histograms as bucket lists, nothing else.

Why not prometheus-client objects in the worker: its metrics take a lock per
observation and live in a registry; the worker only bumps integers and lists here,
and :mod:`stream_triggers.ops.metrics` turns them into Prometheus families when someone
scrapes (so a process without ``--metrics-port`` pays nothing for them).  Everything
here is a dataclass of ints, floats, lists and dicts, so ``dataclasses.asdict`` of a
stats object that holds one is still plain JSON.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

__all__ = [
    "BATCH_SECONDS_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "LATENCY_BUCKETS",
    "LOOP_SECONDS_BUCKETS",
    "TASK_SECONDS_BUCKETS",
    "Buckets",
    "OutputCounts",
]

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
"""Events per worker batch."""
LOOP_SECONDS_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
"""Seconds of work per turn of the worker's loop: most take well under a millisecond."""
BATCH_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds from a batch's arrival to its offset commit."""
LATENCY_BUCKETS: tuple[float, ...] = BATCH_SECONDS_BUCKETS + (30.0, 60.0, 300.0)
"""Seconds from an event's ``produced_at`` to the commit of the batch that applied it."""
TASK_SECONDS_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)
"""Seconds one TriggerTask ``_run`` takes in an executor."""


@dataclass(slots=True)
class Buckets:
    """A histogram as plain data (Prometheus semantics: bucket ``i`` counts values <= ``bounds[i]``).

    ``counts`` is *not* cumulative: ``counts[i]`` holds the values in
    ``(bounds[i-1], bounds[i]]`` and ``counts[-1]`` those above the last bound.
    ``observe`` is one bisect and two additions; it is not thread-safe (a single
    thread observes, or the caller holds a lock).  A scrape may read a count and a
    sum that differ by an observation in flight, which Prometheus tolerates.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"bucket bounds must be strictly increasing: {self.bounds}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        elif len(self.counts) != len(self.bounds) + 1:
            raise ValueError("counts needs one entry per bound plus one for +Inf")

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, cumulative count), ..., (inf, count)]``: the buckets as Prometheus exposes them."""
        counts = list(self.counts)  # one copy, so the buckets agree with each other
        out = []
        running = 0
        for bound, count in zip(self.bounds, counts, strict=False):
            running += count
            out.append((float(bound), running))
        out.append((math.inf, running + counts[-1]))
        return out


@dataclass(slots=True)
class OutputCounts:
    """What the worker published, by kind (counted by the output sink as records are built)."""

    task_runs: int = 0  # TaskRunRequested records
    sessions_finalized: int = 0  # SessionFinalized records
    statuses: dict[str, int] = field(default_factory=dict)  # InstanceStatusChanged status -> count
