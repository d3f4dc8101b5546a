#!/usr/bin/env python
"""Throughput of the engine and of ``TriggerManager.fire()`` (a script, not a test).

Workloads:

* wide - ten tasks ``t_0``..``t_9`` that all wait for the same eleven triggers
  ``p0``..``p10``; firing ``p0``..``p9`` in a session runs nothing, and every fire
  after the first updates all ten unstarted instances.  Repeated over many sessions.
* andEvery - the questionnaire's ``t_importResponses`` (after ``t_importSubject``,
  andEvery ``pageReceived``): ``pageReceived`` fires 1,000 times without
  ``t_importSubject``, so unstarted instances pile up; the per-fire cost near 10
  and near 1,000 instances is compared.

Prints a table (and with ``--json FILE`` writes the figures).  It never asserts
timings: the bars below are reported as met or missed.

    /work/venv/bin/python bench/engine.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stream_triggers.engine import EMPTY, ConfigurationUpdated, SessionState, TriggerFired, step
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.storages.memory import MemoryStorage, MemoryStore
from stream_triggers.storages.rocksdb import RocksDBStorage, close_all

# -- the workloads ---------------------------------------------------------------------

WIDE_TRIGGERS = [f"p{i}" for i in range(11)]
WIDE_FIRED = WIDE_TRIGGERS[:10]  # never p10: nothing runs, every fire updates instances
WIDE_CONFIGURATION = {f"t_{i}": {"after": WIDE_TRIGGERS, "run": "bench.Noop"} for i in range(10)}

QUESTIONNAIRE = {
    "t_importSubject": {"after": ["sessionStarted"], "run": "bench.ImportSubject"},
    "t_importResponses": {"after": ["t_importSubject"], "andEvery": "pageReceived", "run": "bench.ImportResponses"},
}
PAGE_RECEIVED = "pageReceived"

KWARGS = {"page": 1, "answers": {"q1": "yes", "q2": 3}}
AT = datetime(2024, 1, 1)

# -- bars (one core) -------------------------------------------------------------------

ORIGINAL_FIRE_PER_S = 2_152  # the original framework, wide workload
BAR_ENGINE_PER_S = 50_000
BAR_FIRE_PER_S = 20 * ORIGINAL_FIRE_PER_S
BAR_SLOWDOWN = 2.0


@dataclass(frozen=True)
class Sizes:
    engine_sessions: int
    memory_sessions: int
    rocksdb_sessions: int
    grow_sessions: int
    grow_to: int = 1_000
    window: int = 10  # fires around each mark whose timings are pooled


DEFAULT = Sizes(engine_sessions=10_000, memory_sessions=10_000, rocksdb_sessions=2_000, grow_sessions=10)
QUICK = Sizes(engine_sessions=200, memory_sessions=200, rocksdb_sessions=50, grow_sessions=1)


# -- measurements ----------------------------------------------------------------------


def engine_transitions_per_s(sessions: int) -> float:
    """``step()`` alone on the wide workload (inputs built once: the engine is pure)."""
    configured, _ = step(EMPTY, ConfigurationUpdated(WIDE_CONFIGURATION, AT))
    inputs = [TriggerFired(trigger, KWARGS, AT) for trigger in WIDE_FIRED]
    start = time.perf_counter()
    for _ in range(sessions):
        state = configured
        for event in inputs:
            state, _ = step(state, event)
    elapsed = time.perf_counter() - start
    _check_wide(state)
    return sessions * len(inputs) / elapsed


def fire_per_s(make_storage: Callable[[str], BaseTriggerStorage], sessions: int) -> float:
    """``TriggerManager.fire()`` on the wide workload; configuring is not timed."""
    managers = []
    for i in range(sessions):
        manager = TriggerManager(make_storage(f"session-{i}"))
        manager.update_configuration(WIDE_CONFIGURATION)
        managers.append(manager)
    start = time.perf_counter()
    for manager in managers:
        for trigger in WIDE_FIRED:
            manager.fire(trigger, KWARGS)
    elapsed = time.perf_counter() - start
    managers[-1].storage.invalidate_cache()
    _check_wide(managers[-1].storage.state)
    return sessions * len(WIDE_FIRED) / elapsed


def grow_and_every(sizes: Sizes) -> tuple[float, float]:
    """Per-fire throughput near 10 and near ``grow_to`` andEvery instances (memory).

    Each fire adds one instance, so the timings of the ``window`` fires on either
    side of a mark are pooled over ``grow_sessions`` sessions; the median of the
    pool is the per-fire cost (robust to the odd GC pause).
    """
    store = MemoryStore()
    marks = {10: [], sizes.grow_to: []}
    half = sizes.window // 2
    clock = time.perf_counter
    for s in range(sizes.grow_sessions):
        manager = TriggerManager(MemoryStorage(f"grow-{s}", store))
        manager.update_configuration(QUESTIONNAIRE)
        for existing in range(sizes.grow_to + half):
            start = clock()
            manager.fire(PAGE_RECEIVED, KWARGS)
            elapsed = clock() - start
            for mark, pool in marks.items():
                if mark - half <= existing < mark + half:
                    pool.append(elapsed)
        state = manager.storage.state
        if len(state.instances) != sizes.grow_to + half or state.unresolved_instances()[-1].kwargs.keys() != {
            PAGE_RECEIVED
        }:
            raise SystemExit("andEvery workload did not accumulate unstarted instances")
    return 1 / statistics.median(marks[10]), 1 / statistics.median(marks[sizes.grow_to])


def _check_wide(state: SessionState) -> None:
    """The workload did what it claims: ten unstarted instances holding p0..p9."""
    instances = list(state.instances.values())
    if len(instances) != 10 or any(i.status != "unstarted" or set(i.kwargs) != set(WIDE_FIRED) for i in instances):
        raise SystemExit("wide workload did not leave ten unstarted instances with p0..p9")


# -- report ----------------------------------------------------------------------------


def run(sizes: Sizes) -> dict[str, Any]:
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    results: dict[str, Any] = {}
    results["engine_transitions_per_s"] = engine_transitions_per_s(sizes.engine_sessions)
    store = MemoryStore()
    results["fire_per_s_memory"] = fire_per_s(lambda uid: MemoryStorage(uid, store), sizes.memory_sessions)
    directory = tempfile.mkdtemp(prefix="bench-rocksdb-")
    try:
        results["fire_per_s_rocksdb"] = fire_per_s(lambda uid: RocksDBStorage(uid, directory), sizes.rocksdb_sessions)
    finally:
        close_all()
        shutil.rmtree(directory, ignore_errors=True)
    at_10, at_1000 = grow_and_every(sizes)
    results["fire_per_s_memory_at_10_instances"] = at_10
    results["fire_per_s_memory_at_1000_instances"] = at_1000
    results["at_1000_vs_10_slowdown"] = at_10 / at_1000
    results["cpu_s"] = time.process_time() - cpu_start
    results["wall_s"] = time.perf_counter() - wall_start
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["peak_rss_mb"] = rss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    results["bars"] = {
        "engine_transitions_per_s >= 50000": results["engine_transitions_per_s"] >= BAR_ENGINE_PER_S,
        f"fire_per_s_memory >= {BAR_FIRE_PER_S}": results["fire_per_s_memory"] >= BAR_FIRE_PER_S,
        "at_1000_vs_10_slowdown <= 2": results["at_1000_vs_10_slowdown"] <= BAR_SLOWDOWN,
    }
    results["sizes"] = sizes.__dict__
    results["python"] = platform.python_version()
    return results


def print_table(results: dict[str, Any], sizes: Sizes) -> None:
    def row(label: str, value: str, bar: str = "") -> None:
        print(f"  {label:<44} {value:>14}  {bar}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    bars = list(results["bars"].values())
    print(f"stream-triggers engine benchmark (Python {results['python']}, single thread)")
    row(f"engine step()/s (wide, {sizes.engine_sessions:,} sessions)", f"{results['engine_transitions_per_s']:,.0f}")
    row("", "", f"bar >= {BAR_ENGINE_PER_S:,}: {verdict(bars[0])}")
    row(f"fire()/s memory (wide, {sizes.memory_sessions:,} sessions)", f"{results['fire_per_s_memory']:,.0f}")
    row("", "", f"bar >= {BAR_FIRE_PER_S:,} (20x original {ORIGINAL_FIRE_PER_S:,}/s): {verdict(bars[1])}")
    row(f"fire()/s rocksdb (wide, {sizes.rocksdb_sessions:,} sessions)", f"{results['fire_per_s_rocksdb']:,.0f}")
    row("fire()/s memory, andEvery at ~10 instances", f"{results['fire_per_s_memory_at_10_instances']:,.0f}")
    row(
        f"fire()/s memory, andEvery at ~{sizes.grow_to:,} instances",
        f"{results['fire_per_s_memory_at_1000_instances']:,.0f}",
    )
    row("slowdown at 1,000 vs 10 instances", f"{results['at_1000_vs_10_slowdown']:.2f}x")
    row("", "", f"bar <= {BAR_SLOWDOWN:g}x: {verdict(bars[2])}")
    row("CPU seconds (process_time)", f"{results['cpu_s']:.2f}")
    row("wall seconds", f"{results['wall_s']:.2f}")
    row("peak RSS (MB)", f"{results['peak_rss_mb']:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as one JSON object")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    gc.collect()
    results = run(sizes)
    print_table(results, sizes)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
