#!/usr/bin/env python
"""One session that keeps growing: changelog bytes and CPU per input, through the worker's own path.

Issue 13 §2's case: one session configured with an ``andEvery`` task, then N ``tick``
fires (each creates an instance of ~215 B), each input applied and checkpointed in a
batch of its own (the worst case: every batch writes the session), by the worker's
``InputApplier`` and ``Checkpoint`` over a real RocksDB store, with a producer that only
counts the bytes of the changelog records (key + value).  No broker, so the figures are
the worker's own cost; it prints them (``--json FILE`` writes them too) and asserts nothing.

    python bench/state_growth.py --instances 5000 --json runs/growth.json

Runs against whatever ``stream_triggers`` is importable (``PYTHONPATH=/path/to/other/checkout``
to measure another version).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import datetime

from stream_triggers.engine import ConfigurationUpdated, TriggerFired
from stream_triggers.events.codec import encode
from stream_triggers.events.records import record_from_input
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.inputs import InputApplier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import PartitionStore


class CountingProducer:
    """Counts changelog bytes; every record is acknowledged at once."""

    def __init__(self, changelog: str) -> None:
        self.changelog = changelog
        self.bytes = self.records = self.largest = 0
        self._pending: list = []

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None):
        if topic == self.changelog:
            size = len(key or b"") + len(value or b"")
            self.bytes += size
            self.records += 1
            self.largest = max(self.largest, size)
        if on_delivery is not None:
            self._pending.append((on_delivery, _Delivered(partition, self.records)))

    def flush(self, timeout: float = 0) -> int:
        for callback, message in self._pending:
            callback(None, message)
        self._pending = []
        return 0


class _Delivered:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class NoCommits:
    def commit(self, offsets=None, asynchronous=True) -> None:
        pass


def event(uid: str, source, seq: int) -> bytes:
    type_name, fields = record_from_input(source)
    return encode(type_name, {"event_id": str(seq), "session_uid": uid, "produced_at": 0, **fields})


def run(instances: int) -> dict:
    topics = Topics("bench")
    settings = WorkerSettings(bootstrap="-", state_dir="-", max_session_bytes=1 << 40)
    stats = WorkerStats()
    applier = InputApplier(TriggerManager, OutputSink(topics), stats, settings)
    producer = CountingProducer(topics.changelog)
    checkpoint = Checkpoint(producer, NoCommits(), topics)
    at = datetime(2026, 1, 1)
    uid, key = "growing", b"growing"
    with tempfile.TemporaryDirectory() as state_dir:
        partition = Partition(0, PartitionStore(state_dir, topics.events, 0), epoch=1)
        inputs = [event(uid, ConfigurationUpdated({"each": {"after": [], "andEvery": "tick", "run": "x"}}, at), 0)]
        inputs += [event(uid, TriggerFired("tick", {"n": n, "pad": "p" * 120}, at), n + 1) for n in range(instances)]
        cpu_at = {}
        started = time.process_time()
        for offset, value in enumerate(inputs):
            applier.apply(partition, offset, key, value)
            partition.commit_offset = offset + 1
            checkpoint.commit([partition])
            if offset + 1 in (1_000, instances - 1_000, instances):
                cpu_at[offset + 1] = time.process_time() - started
        cpu = time.process_time() - started
        if stats.dead_letters or stats.events_applied != len(inputs):
            raise SystemExit(f"not every input applied: {stats.dead_letters}")
        partition.store.close()
    last_thousand = cpu_at[instances] - cpu_at.get(instances - 1_000, 0.0)
    return {
        "instances": instances,
        "changelog_bytes_total": producer.bytes,
        "changelog_records": producer.records,
        "changelog_largest_record_bytes": producer.largest,
        "changelog_bytes_per_event": round(producer.bytes / len(inputs), 1),
        "cpu_us_per_event": round(cpu / len(inputs) * 1e6, 1),
        "cpu_us_per_event_first_1000": round(cpu_at[1_000] / 1_000 * 1e6, 1),
        "cpu_us_per_event_last_1000": round(last_thousand / 1_000 * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=5_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    figures = run(args.instances)
    for name, value in figures.items():
        print(f"{name:34} {value}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
