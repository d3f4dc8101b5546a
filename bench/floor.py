"""The floor under the paced figures: the worker's Kafka loop with no trigger logic at all.

``bench/stream.py --rate 2000`` reports what the worker spends per event when events
trickle in.  Part of that is not the product's work but the Kafka loop it is built on:
take what the consumer fetched, produce one record per input (with a delivery report, as
the worker's outputs have), let the producer send, commit the input offsets every
checkpoint interval.  This script runs exactly that loop - the worker's own consumer and
producer settings (``clients.consumer`` / ``clients.producer`` with the worker's options)
and its take and pace (``stream.pace``: ``take_batch``, ``linger_after``, ``CheckpointPace``,
waiting for a record until the next commit is due) - on the same workload, paced
the same way, on a fresh embedded Tansu broker, and prints what it costs:

* CPU per event of the loop process (between its first and last input), and how that
  splits between the Python thread and librdkafka's threads (those still running at the
  end, in 10 ms clock ticks: the split is coarse on short runs);
* the broker's CPU over the same window;
* loop turns and events per turn;
* how long an input took from its producer to the loop's take (the record's create
  timestamp to the take, steady: after the first ``--latency-skip-s``).  This is the
  broker's part of the worker's latency: the generator's request, the broker's append,
  the fetch and its wait.  The worker's own "cause to output produced" adds its turn on top.

No trigger worker built on this loop can spend less per event than the loop does; the gap
between the two is what the product itself costs.  A benchmark script: it prints figures
and asserts nothing.  The workload is the peer's (``../shared/peers/quix/gen_workload.py``,
as in ``bench/stream.py``).

    .venv/bin/python bench/floor.py --rate 2000 --duration 30
    .venv/bin/python bench/floor.py --rate 2000 --duration 30 --producer-linger-ms 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from check_stream import find_peers_dir, import_gen_workload, latency_summary
from streambench.processes import stop_process
from streambench.workload import EventProducer, workload

from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.pace import CheckpointPace, linger_after, take_batch
from stream_triggers.stream.settings import WorkerSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = WorkerSettings(bootstrap="-", state_dir="-")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="input events/s [2000]")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of input [30]")
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--peers-dir", default=None, help="folder of the peer scripts [as bench/stream.py]")
    ap.add_argument("--fetch-wait-ms", type=int, default=defaults.fetch_wait_ms, help="as the worker's [its default]")
    ap.add_argument("--linger-ms", type=float, default=defaults.linger_s * 1000, help="as the worker's [its default]")
    linger = WorkerSettings.producer_options()["linger_ms"]
    ap.add_argument(
        "--producer-linger-ms", type=int, default=linger, help=f"the worker producer's linger.ms [{linger}]"
    )
    ap.add_argument("--commit-interval-ms", type=int, default=round(defaults.checkpoint_interval_s * 1000))
    ap.add_argument("--latency-skip-s", type=float, default=5.0, help="warm-up left out of the latency [5]")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the figures as one JSON object")
    # The loop process (started by the script itself):
    ap.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def args_for(stream: argparse.Namespace) -> argparse.Namespace:
    """This script's options for a ``bench/stream.py`` run (``--floor``): the same workload,
    rate and duration, and our worker's settings as that run passes them."""
    argv = ["--rate", str(stream.rate), "--duration", str(stream.duration), "--sessions", str(stream.sessions)]
    argv += ["--seed", str(stream.seed), "--concurrency", str(stream.concurrency)]
    argv += ["--partitions", str(stream.partitions), "--latency-skip-s", str(stream.latency_skip_s)]
    if stream.peers_dir:
        argv += ["--peers-dir", stream.peers_dir]
    for option, value in (
        ("--fetch-wait-ms", stream.worker_fetch_wait_ms),
        ("--linger-ms", stream.worker_linger_ms),
        ("--commit-interval-ms", stream.worker_checkpoint_interval_ms),
    ):
        if value is not None:
            argv += [option, str(value)]
    return parse_args(argv)


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads by name (librdkafka names its threads ``rdk:...``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        kind = "librdkafka" if name.startswith("rdk:") else "python" if tid == str(os.getpid()) else "other"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def loop(a: argparse.Namespace) -> dict[str, Any]:
    """The worker's loop without the worker: take, produce one record per input, commit."""
    topics = Topics(a.prefix)
    settings = WorkerSettings(
        bootstrap=a.bootstrap,
        state_dir="-",
        fetch_wait_ms=a.fetch_wait_ms,
        linger_s=a.linger_ms / 1000,
        checkpoint_interval_s=a.commit_interval_ms / 1000,
    )
    consumer = clients.consumer(a.bootstrap, "worker", f"floor-{a.prefix}", **settings.input_consumer_options())
    producer_options = {**settings.producer_options(), "linger_ms": a.producer_linger_ms}
    producer = clients.producer(a.bootstrap, "worker", **producer_options)
    consumer.subscribe(
        [topics.events], on_assign=lambda _c, parts: Path(a.ready_file).write_text("ready") if parts else None
    )

    def delivered(_error: Any, _message: Any) -> None:
        """A Python call per output's delivery report, as the worker's outputs have."""

    seen = turns = 0
    cpu_first = threads_first = None
    steady_from_ms = float("inf")  # inputs created from then on are timed (after the warm-up)
    latencies_ms: list[float] = []  # each such input's create timestamp to its take
    linger_s, pace = 0.0, CheckpointPace(settings.checkpoint_interval_s, settings.batch_size)
    while seen < a.events:
        wait_s = pace.wait_s(time.monotonic(), settings.idle_wait_s, float("inf"))
        messages = take_batch(consumer, settings.batch_size, wait_s, linger_s)
        turns += 1
        linger_s = linger_after(len(messages), settings.batch_size, settings.linger_s)
        now_ms = time.time() * 1000
        for message in messages:
            if message.error() is not None:
                continue
            created_ms = message.timestamp()[1]
            if cpu_first is None:
                cpu_first, threads_first, turns = time.process_time(), thread_cpu_s(), 1
                steady_from_ms = created_ms + a.latency_skip_s * 1000
            producer.produce(topics.task_runs, message.value(), message.key(), on_delivery=delivered)
            if created_ms >= steady_from_ms:
                latencies_ms.append(now_ms - created_ms)
            seen += 1
        producer.poll(0)
        now = time.monotonic()
        if messages:
            pace.applied(now, len(messages))
        if pace.due(now):
            consumer.commit(asynchronous=True)
            pace.take()
    cpu = time.process_time() - (cpu_first or 0.0)
    threads = {k: round(v - (threads_first or {}).get(k, 0.0), 2) for k, v in thread_cpu_s().items()}
    producer.flush(30)
    consumer.close()
    latency = latency_summary(latencies_ms)
    return {"events": seen, "cpu_s": round(cpu, 3), "threads_cpu_s": threads, "turns": turns, "latency_ms": latency}


def broker_cpu_s(pid: int) -> float:
    return sum(psutil.Process(pid).cpu_times()[:2])


def run(a: argparse.Namespace) -> dict[str, Any]:
    gen_workload = import_gen_workload(find_peers_dir(a.peers_dir))
    events = workload(gen_workload, a.sessions, a.seed, a.concurrency)[: int(a.rate * a.duration)]
    with EmbeddedBroker() as broker:
        prefix = f"floor{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, Topics(prefix), partitions=a.partitions)
        files = tempfile.TemporaryDirectory(prefix="floor-")
        ready, out = Path(files.name) / "ready", Path(files.name) / "figures.json"
        cmd = [sys.executable, __file__, "--loop", "--bootstrap", broker.bootstrap, "--prefix", prefix]
        cmd += ["--events", str(len(events)), "--ready-file", str(ready), "--fetch-wait-ms", str(a.fetch_wait_ms)]
        cmd += ["--linger-ms", str(a.linger_ms), "--producer-linger-ms", str(a.producer_linger_ms)]
        cmd += ["--commit-interval-ms", str(a.commit_interval_ms), "--latency-skip-s", str(a.latency_skip_s)]
        with out.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loop process did not get its partitions")
                time.sleep(0.1)
            broker_before = broker_cpu_s(broker.pid or 0)
            produced = EventProducer(broker.bootstrap, Topics(prefix).events).run(events, a.rate, lambda: None)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"the loop had not taken all {len(events)} inputs 120 s after the last was produced:"
                    " the broker did not keep up with its fetches (a shorter --fetch-wait-ms loads Tansu more)"
                ) from None
            broker_s = broker_cpu_s(broker.pid or 0) - broker_before
            result = json.loads(out.read_text())
        finally:
            stop_process(proc)
            files.cleanup()
    n = result["events"]
    return {
        "settings": {k: getattr(a, k) for k in ("rate", "fetch_wait_ms", "linger_ms", "producer_linger_ms")},
        "events": n,
        "produced": produced["produced"],
        "cpu_us_per_event": round(result["cpu_s"] / n * 1e6, 1),
        "threads_us_per_event": {k: round(v / n * 1e6, 1) for k, v in result["threads_cpu_s"].items()},
        "broker_cpu_s": round(broker_s, 2),
        "events_per_turn": round(n / result["turns"], 1),
        "steady_input_to_take_ms": result["latency_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.loop:
        print(json.dumps(loop(a)))
        return 0
    figures = run(a)
    print(f"the worker's Kafka loop alone, no trigger logic, paced at {a.rate:g} events/s")
    print(json.dumps(figures, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
