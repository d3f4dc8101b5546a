#!/usr/bin/env python
"""End to end through a real executor: first trigger -> ... -> sessionFinalized.

A benchmark *script* (prints figures, never asserts timings), also reachable as
``bench/stream.py --e2e``.  One worker and one executor (``stream-triggers worker`` /
``stream-triggers executor`` subprocesses) on a fresh embedded broker.  Every session
configures a three-task chain of no-op tasks (``stream_triggers.testing.DevNullTask``,
default runner, so every task makes the full round trip: worker -> task-runs ->
executor -> events -> worker):

    t_a after [start, page1]    t_b after [t_a, complete]    t_c after [t_b]

then fires ``start``, ``page1`` and ``complete`` in a shuffled order.  Sessions start at
``--session-rate`` per second.  Figures: sessions/s (finalized sessions / time from the
first trigger to the last SessionFinalized), and the latency from a session's first
trigger (its ``produced_at``) to the receipt of its SessionFinalized: p50/p95/p99.

    /work/venv/bin/python bench/e2e.py --sessions 300 --session-rate 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from stream_triggers.events import jsonx
from stream_triggers.events.codec import decode, encode
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker

CLI = [sys.executable, "-m", "stream_triggers.cli"]
TASK = "stream_triggers.testing.DevNullTask"
CONFIG = {
    "t_a": {"after": ["start", "page1"], "run": TASK},
    "t_b": {"after": ["t_a", "complete"], "run": TASK},
    "t_c": {"after": ["t_b"], "run": TASK},
}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(CLI + args, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(sessions: int, session_rate: float, seed: int, timeout: float, run_dir: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        topics = Topics(f"e2e{uuid.uuid4().hex[:6]}")
        create_topics(bootstrap, topics, partitions=4)
        common = ["--bootstrap", bootstrap, "--topic-prefix", topics.prefix]
        worker = start(["worker", *common, "--state-dir", str(run_dir / "state"), "--group", "e2e"], run_dir / "w.log")
        executor = start(
            ["executor", *common, "--import", "stream_triggers.testing", "--concurrency", "8"], run_dir / "x.log"
        )
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-reader", "fetch.wait.max.ms": 10})
        reader.assign([TopicPartition(topics.sessions, p, 0) for p in range(4)])
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 1,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
            }
        )
        try:
            time.sleep(8)  # the group joins (Tansu: about half of session.timeout.ms)
            first_trigger: dict[str, int] = {}
            finalized: dict[str, float] = {}

            def produce(uid: str, type_name: str, **fields: Any) -> int:
                now = time.time_ns() // 1000
                record = {"event_id": uuid.uuid4().hex, "session_uid": uid, "produced_at": now, **fields}
                producer.produce(topics.events, encode(type_name, record), uid.encode())
                return now

            def drain(wait: float) -> None:
                for message in reader.consume(1000, wait):
                    if message.error() is None:
                        _, record = decode(message.value())
                        finalized.setdefault(record["session_uid"], time.time())

            interval = 1.0 / session_rate
            next_at = time.time()
            for i in range(sessions):
                uid = f"e2e-{i}"
                produce(uid, "ConfigurationUpdated", configuration_json=jsonx.dumps(CONFIG))
                triggers = ["start", "page1", "complete"]
                rng.shuffle(triggers)
                for n, trigger in enumerate(triggers):
                    at = produce(uid, "TriggerFired", trigger=trigger, kwargs_json="{}")
                    if n == 0:
                        first_trigger[uid] = at
                producer.poll(0)
                next_at += interval
                while time.time() < next_at:
                    drain(min(0.01, max(0.0, next_at - time.time())))
            producer.flush(30)
            deadline = time.time() + timeout
            while len(finalized) < sessions and time.time() < deadline:
                drain(0.05)
        finally:
            reader.close()
            stop(executor)
            stop(worker)
    latencies = [(finalized[u] - first_trigger[u] / 1e6) * 1000 for u in finalized if u in first_trigger]
    span = (max(finalized.values()) - min(first_trigger.values()) / 1e6) if finalized else None
    return {
        "sessions": sessions,
        "session_rate": session_rate,
        "finalized": len(finalized),
        "sessions_per_s": round(len(finalized) / span, 1) if span else None,
        "e2e_latency_p50_ms": percentile(latencies, 50),
        "e2e_latency_p95_ms": percentile(latencies, 95),
        "e2e_latency_p99_ms": percentile(latencies, 99),
        "e2e_latency_max_ms": round(max(latencies), 1) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--session-rate", type=float, default=50.0, help="sessions started per second")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=120.0, help="wait for the last sessions this long")
    ap.add_argument("--json", default=None, metavar="FILE")
    a = ap.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="st-e2e-"))
    figures = run(a.sessions, a.session_rate, a.seed, a.timeout, run_dir)
    figures["command"] = " ".join([os.path.basename(sys.executable), *sys.argv])
    for key, value in figures.items():
        print(f"  {key:<22} {value}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if figures["finalized"] == a.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
