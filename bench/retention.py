#!/usr/bin/env python
"""Sessions that end: live sessions, RocksDB size and worker RSS over a long run, with and without retention.

A benchmark *script*: it prints figures and never asserts them.  For each mode (``without``
retention, ``with`` ``--session-retention``) it starts a fresh embedded Tansu broker, the
topics (4 partitions) and one ``stream-triggers worker`` subprocess, then produces
``--sessions`` sessions at ``--rate`` sessions/s.  Each session is two events: a
configuration of two ``noop`` tasks (``t_a`` after ``x``, ``t_b`` after ``t_a``) and
``x``, so the worker finishes both tasks and finalizes the session on the second event.
Every ``--sample-every`` seconds it records:

* live sessions: the worker's ``stream_triggers_worker_live_sessions`` (its ``/metrics``);
* RocksDB size: bytes under the worker's ``--state-dir`` (``du``-like walk);
* RSS: the worker's ``VmRSS`` from ``/proc``;
* purged: ``stream_triggers_worker_sessions_purged_total``.

After the last event the run goes on for ``--tail`` seconds (so retention can catch up),
then the worker is stopped with SIGTERM.

    .venv/bin/python bench/retention.py --sessions 200000 --rate 2000 --retention 10s
    .venv/bin/python bench/retention.py --sessions 5000 --rate 1000 --retention 2s --tail 5   # quick
    .venv/bin/python bench/retention.py --modes without ...   # only the run without retention
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from stream_triggers.events.codec import encode
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port

CONFIGURATION = json.dumps(
    {
        "t_a": {"after": ["x"], "run": "bench.A", "using": "noop"},
        "t_b": {"after": ["t_a"], "run": "bench.B", "using": "noop"},
    }
)


def events_of(i: int, now_us: int) -> list[tuple[str, bytes]]:
    uid = f"bench-{i:07d}"
    envelope = {"session_uid": uid, "produced_at": now_us}
    configure = encode("ConfigurationUpdated", {**envelope, "event_id": f"{i}:c", "configuration_json": CONFIGURATION})
    fire = encode("TriggerFired", {**envelope, "event_id": f"{i}:x", "trigger": "x", "kwargs_json": "{}"})
    return [(uid, configure), (uid, fire)]


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def scrape(port: int) -> dict[str, float]:
    """Live sessions (summed over partitions) and sessions purged, from the worker's /metrics."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    found = {"live": 0.0, "purged": 0.0}
    for line in text.splitlines():
        if line.startswith("stream_triggers_worker_live_sessions{"):
            found["live"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("stream_triggers_worker_sessions_purged_total{"):
            found["purged"] += float(line.rsplit(" ", 1)[1])
    return found


def run(mode: str, a: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"ret{tag}")
    state_dir = run_dir / f"state-{mode}"
    port = free_port()
    broker = EmbeddedBroker(log_path=run_dir / f"tansu-{mode}.log")
    samples: list[dict[str, Any]] = []
    worker = None
    try:
        broker.start()
        create_topics(broker.bootstrap, topics, partitions=4)
        script = Path(sys.executable).with_name("stream-triggers")
        cmd = [str(script), "worker", "--bootstrap", broker.bootstrap, "--topic-prefix", topics.prefix]
        cmd += ["--group", f"bench-{tag}", "--state-dir", str(state_dir), "--metrics-port", str(port)]
        cmd += ["--engine", a.engine]
        if mode == "with":
            cmd += ["--session-retention", a.retention]
        with open(run_dir / f"worker-{mode}.log", "wb") as log:  # the child keeps its own descriptor
            worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "partitioner": "murmur2_random", "acks": "all"}
        )
        started = time.monotonic()
        next_sample = started
        produced = 0
        end = None
        while True:
            now = time.monotonic()
            if produced < a.sessions:
                due = min(a.sessions, int((now - started) * a.rate))
                now_us = time.time_ns() // 1000
                while produced < due:
                    for uid, value in events_of(produced, now_us):
                        producer.produce(topics.events, value, uid.encode())
                    produced += 1
                    if produced % 1000 == 0:
                        producer.poll(0)
                if produced >= a.sessions:
                    producer.flush(60)
                    end = time.monotonic()
            if now >= next_sample:
                figures = scrape(port)
                sample = {
                    "t": round(now - started, 1),
                    "sessions_produced": produced,
                    "live_sessions": int(figures.get("live", 0)),
                    "purged": int(figures.get("purged", 0)),
                    "rocksdb_mb": round(dir_bytes(state_dir) / 2**20, 1),
                    "rss_mb": rss_mb(worker.pid),
                }
                samples.append(sample)
                print(mode, json.dumps(sample), flush=True)
                next_sample += a.sample_every
            if end is not None and now - end >= a.tail:
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}; see {run_dir}/worker-{mode}.log")
            producer.poll(0)
            time.sleep(0.02)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        broker.stop()
    return samples


def table(mode: str, samples: list[dict[str, Any]], every: int) -> str:
    lines = [f"{mode} retention", "  t(s)  produced      live    purged  rocksdb(MB)  rss(MB)"]
    for sample in samples[::every] + samples[-1:]:
        lines.append(
            f"{sample['t']:6.0f}  {sample['sessions_produced']:8d}  {sample['live_sessions']:8d}  "
            f"{sample['purged']:8d}  {sample['rocksdb_mb']:11.1f}  {sample['rss_mb'] or 0:7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="sessions per second (2 events each)")
    parser.add_argument("--retention", default="10s", help="--session-retention of the 'with' run")
    parser.add_argument("--modes", default="without,with", help="without (no retention), with, or both")
    parser.add_argument("--engine", default="auto", choices=["auto", "native", "python"], help="the worker's --engine")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--tail", type=float, default=20.0, help="seconds to go on after the last event")
    parser.add_argument("--print-every", type=int, default=5, help="print every Nth sample in the tables")
    parser.add_argument("--json", default=None, help="write every sample here")
    a = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        for mode in a.modes.split(","):
            results[mode] = run(mode, a, Path(tmp))
    print(f"\n{a.sessions} sessions at {a.rate:.0f}/s, retention {a.retention}, one worker ({a.engine}), 4 partitions")
    for mode, samples in results.items():
        print(table(mode, samples, a.print_every))
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "samples": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
