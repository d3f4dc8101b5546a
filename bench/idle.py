"""What an idle worker (or executor) costs: CPU per second of a process with nothing to do.

Most deployments of a triggers service are idle most of the time, so the cost of waiting
matters as much as the cost per event.  This script starts a fresh embedded Tansu broker,
makes the topics, starts one ``stream-triggers worker`` (or ``executor``: the CLI, as a
user would), lets it join and restore, then samples for ``--seconds``: the process's CPU
(its main thread apart from librdkafka's and RocksDB's threads, in 10 ms clock ticks) and
the broker's.  Options after ``--`` are passed on.  A benchmark script: it prints figures
and asserts nothing.

    .venv/bin/python bench/idle.py
    .venv/bin/python bench/idle.py --seconds 60 -- --fetch-wait-ms 500
    .venv/bin/python bench/idle.py --process executor
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from streambench.processes import stop_process

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds sampled [20]")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds from start to sampling (join, restore) [10]")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--process", choices=("worker", "executor"), default="worker", help="what to start [worker]")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("process_args", nargs="*", help="options for the process (after --)")
    return ap.parse_args(argv)


def cpu_s(process: psutil.Process, main_thread: bool = False) -> float:
    """User + system CPU seconds of ``process`` (or of its main thread alone)."""
    if main_thread:
        return sum(t.user_time + t.system_time for t in process.threads() if t.id == process.pid)
    times = process.cpu_times()
    return times.user + times.system


def measure(a: argparse.Namespace) -> dict[str, Any]:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as state_dir:
        prefix = f"idle{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, Topics(prefix), partitions=a.partitions)
        script = Path(sys.executable).with_name("stream-triggers")
        cmd = [str(script), a.process, "--bootstrap", broker.bootstrap, "--group", prefix, "--topic-prefix", prefix]
        if a.process == "worker":
            cmd += ["--state-dir", state_dir, "--stats-out", f"{state_dir}/stats.json"]
        cmd += a.process_args
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(a.warmup)
            process, tansu = psutil.Process(proc.pid), psutil.Process(broker.pid)
            before = cpu_s(process), cpu_s(process, main_thread=True), cpu_s(tansu), time.monotonic()
            time.sleep(a.seconds)
            after = cpu_s(process), cpu_s(process, main_thread=True), cpu_s(tansu), time.monotonic()
            if proc.poll() is not None:
                raise SystemExit(f"the {a.process} exited ({proc.returncode}) while sampled: {' '.join(cmd)}")
        finally:
            stop_process(proc)
    elapsed = after[3] - before[3]
    process_ms, main_ms, broker_ms = (round(1000 * (after[i] - before[i]) / elapsed, 2) for i in range(3))
    return {
        "process": a.process,
        "seconds": round(elapsed, 1),
        "cpu_ms_per_s": process_ms,
        "main_thread_cpu_ms_per_s": main_ms,
        "broker_cpu_ms_per_s": broker_ms,
        "command": " ".join(cmd),
    }


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    figures = measure(a)
    print(f"idle for {figures['seconds']} s, CPU per second:")
    name, main_thread = figures["process"], figures["main_thread_cpu_ms_per_s"]
    print(f"  {name:8} {figures['cpu_ms_per_s']:8.2f} ms  (main thread {main_thread} ms)")
    print(f"  {'broker':8} {figures['broker_cpu_ms_per_s']:8.2f} ms")
    print(f"{name}: {figures['command']}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
