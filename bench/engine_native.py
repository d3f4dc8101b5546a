"""The worker's engines side by side on ``bench/engine.py``'s workloads (used by it; also a script).

Each workload becomes ``events`` records (Avro, as producers write them), and one worker
partition applies them in batches of ``BATCH`` with each engine, the way the stream worker
does - ``apply_batch`` then the real :class:`~stream_triggers.stream.checkpoint.Checkpoint`,
whose producer and RocksDB store are stand-ins that only keep what they are given - so the
rates include decoding, the rules, the output records and the state records, not Kafka.

* ``python``: :class:`~stream_triggers.stream.inputs.InputApplier` (the Python engine);
* ``native``: :class:`~stream_triggers.stream.native_engine.NativeApplier` (the Rust core);
* ``native core``: ``NativeCore.apply_batch`` + ``NativeCore.encode`` alone, without the
  Python seam around them.

Rates are transitions (applied input records) per CPU second of this process, best of
``rounds``.

    .venv/bin/python bench/engine_native.py [--sessions N]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import trigger_managers
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.native_engine import NativeApplier, new_applier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.settings import WorkerSettings, WorkerStats

TOPICS = Topics(prefix="bench")
BATCH = 500
AT_US = 1_700_000_000_000_000
Record = tuple[int, bytes, bytes]


def records(configuration: dict[str, Any], fires: list[tuple[str, dict[str, Any]]], sessions: int) -> list[Record]:
    """Configure then fire, per session; sessions interleaved ten at a time (as in a stream)."""
    out: list[Record] = []
    config_json = json.dumps(configuration)
    for group in range(0, sessions, 10):
        uids = [f"session-{i}" for i in range(group, min(group + 10, sessions))]
        steps: list[tuple[str, dict[str, Any]]] = [("ConfigurationUpdated", {"configuration_json": config_json})]
        steps += [("TriggerFired", {"trigger": t, "kwargs_json": json.dumps(k)}) for t, k in fires]
        for n, (kind, fields) in enumerate(steps):
            for uid in uids:
                record = event_record(kind, uid, f"{uid}:{n}", AT_US + n, **fields)
                out.append((len(out), uid.encode(), encode(kind, record)))
    return out


class Sink:
    """Producer, consumer and store of a checkpoint in one: counts what it is given."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def produce(
        self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any = None, headers: Any = None
    ) -> None:
        self.records += 1
        self.bytes += len(value or b"")

    def flush(self, timeout: float = 0) -> int:
        return 0

    def commit(self, **kwargs: Any) -> None:
        pass

    def write_parts(self, rows: Any, changelog_checkpoint: Any, max_epoch: Any = None, ages: Any = None) -> None:
        pass

    def ages(self, uid: str) -> None:
        return None

    def read_session(self, uid: str) -> None:
        return None

    def get_raw(self, key: bytes) -> None:
        return None

    def get_whole(self, uid: str) -> None:
        return None

    def quarantined(self, uid: str) -> None:
        return None

    def lookup(self, uid: str, header: bytes) -> tuple[None, None, None]:
        return None, None, None


def worker_rate(engine: str, batches: list[list[Record]], manager: str = "default") -> tuple[int, float, int]:
    """``(transitions, CPU seconds, changelog bytes)`` of one worker partition on ``engine``."""
    settings = WorkerSettings(bootstrap="", state_dir="", engine=engine, manager=manager)
    stats = WorkerStats()
    sink = Sink()
    applier = new_applier(settings, trigger_managers.get_class(manager), TOPICS, OutputSink(TOPICS), stats)
    if engine == "native" and not isinstance(applier, NativeApplier):
        raise SystemExit("the native engine is not installed")
    partition = Partition(0, sink, epoch=1)  # type: ignore[arg-type]
    checkpoint = Checkpoint(sink, sink, TOPICS)  # type: ignore[arg-type]
    gc.collect()
    start = time.process_time()
    for batch in batches:
        for topic, key, value in applier.apply_batch(partition, batch):
            sink.produce(topic, value, key, 0)
        applier.encode([partition])
        checkpoint.commit([partition])
        partition.trim(settings.session_cache_size)
        applier.settle([partition])
    cpu = time.process_time() - start
    if stats.engine_fallbacks or stats.dead_letters:
        raise SystemExit(f"{engine}: fallbacks {stats.engine_fallbacks}, dead letters {stats.dead_letters}")
    return stats.events_applied, cpu, sink.bytes


def core_rate(batches: list[list[Record]], manager: str = "default") -> tuple[int, float]:
    """``NativeCore.apply_batch`` + ``encode`` alone (no Python seam)."""
    import stream_triggers_native

    core = stream_triggers_native.NativeCore(manager, TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    applied = 0
    gc.collect()
    start = time.process_time()
    for batch in batches:
        outcomes = core.apply_batch(0, batch, AT_US)
        applied += sum(1 for o in outcomes if o[0] == "applied")
        if hasattr(core, "encode"):  # (a core from before the Rust state encoder: apply only)
            core.encode(0, 1, AT_US, 16384, list({key.decode() for _, key, _ in batch}))
    return applied, time.process_time() - start


def side_by_side(workloads: dict[str, list[Record]], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per workload: transitions per CPU second of each engine (best of ``rounds``)."""
    results: dict[str, dict[str, float]] = {}
    for name, recs in workloads.items():
        batches = [recs[i : i + BATCH] for i in range(0, len(recs), BATCH)]
        row: dict[str, float] = {}
        measures: dict[str, Callable[[], tuple[int, float]]] = {
            "python": lambda b=batches: worker_rate("python", b)[:2],  # type: ignore[misc]
            "native": lambda b=batches: worker_rate("native", b)[:2],  # type: ignore[misc]
            "native core": lambda b=batches: core_rate(b),  # type: ignore[misc]
        }
        for engine, measure in measures.items():
            best = max(n / cpu for n, cpu in (measure() for _ in range(rounds)))
            row[engine] = best
        row["native / python"] = row["native"] / row["python"]
        results[name] = row
    return results


def print_side_by_side(results: dict[str, dict[str, float]]) -> None:
    print(f"worker engines, transitions per CPU s (batches of {BATCH}, decode + rules + outputs + state records)")
    print(f"  {'workload':<16} {'python':>12} {'native':>12} {'native core':>12} {'native/python':>14}")
    for name, row in results.items():
        print(
            f"  {name:<16} {row['python']:>12,.0f} {row['native']:>12,.0f} {row['native core']:>12,.0f}"
            f" {row['native / python']:>13.1f}x"
        )


def compare(workloads: dict[str, tuple[dict[str, Any], list[Any]]], sessions: int, rounds: int) -> Any:
    """``side_by_side`` of ``{name: (configuration, fires)}`` workloads, or None without the native core."""
    try:
        import stream_triggers_native  # noqa: F401
    except ImportError:
        return None
    return side_by_side({name: records(*w, sessions) for name, w in workloads.items()}, rounds)


def main() -> None:
    from engine import QUESTIONNAIRE_FIRES, QUESTIONNAIRE_WORKFLOW, WIDE_CONFIGURATION, WIDE_FIRED  # bench/engine.py

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kwargs = {"page": 1, "answers": {"q1": "yes", "q2": 3}}
    workloads = {
        "wide": (WIDE_CONFIGURATION, [(t, kwargs) for t in WIDE_FIRED]),
        "questionnaire": (QUESTIONNAIRE_WORKFLOW, list(QUESTIONNAIRE_FIRES)),
    }
    results = compare(workloads, args.sessions, args.rounds)
    if results is None:
        raise SystemExit("the native core is not installed (pip install ./native)")
    print_side_by_side(results)


if __name__ == "__main__":
    main()
