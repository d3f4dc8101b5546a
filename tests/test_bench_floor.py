"""bench/floor.py's loop: the worker's Kafka loop without the worker, on the embedded broker.

Its figures are never asserted (a benchmark); what is checked is that it is the loop it
claims to be: the worker's defaults, every input taken once and produced once.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from confluent_kafka import Producer

from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from stream_triggers.stream.settings import WorkerSettings
from tests.support.readers import read_topic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import floor


def test_by_default_it_runs_with_the_worker_s_own_settings() -> None:
    a = floor.parse_args([])
    worker = WorkerSettings(bootstrap="-", state_dir="-")
    assert a.fetch_wait_ms == worker.fetch_wait_ms
    assert a.linger_ms == worker.linger_s * 1000
    assert a.commit_interval_ms == round(worker.checkpoint_interval_s * 1000)


def test_the_loop_produces_one_record_per_input(broker: EmbeddedBroker, topics: Topics, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    argv = ["--loop", "--bootstrap", broker.bootstrap, "--prefix", topics.prefix, "--events", "30"]
    a = floor.parse_args([*argv, "--latency-skip-s", "0"])
    a.ready_file = str(ready)
    result: dict = {}
    loop = threading.Thread(target=lambda: result.update(floor.loop(a)), daemon=True)
    loop.start()
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(30):
        producer.produce(topics.events, f"value-{i}".encode(), f"session-{i % 7}".encode())
    assert producer.flush(20) == 0
    loop.join(60)
    assert not loop.is_alive()
    assert ready.read_text() == "ready"
    assert result["events"] == 30 and result["turns"] >= 1 and result["cpu_s"] >= 0
    assert "python" in result["threads_cpu_s"]
    # Every input's time from its producer to the take, none left out with no warm-up.
    assert result["latency_ms"]["n"] == 30 and 0 <= result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
    outputs = read_topic(broker.bootstrap, topics.task_runs)
    assert sorted((record.key, record.raw) for record in outputs) == sorted(
        (f"session-{i % 7}".encode(), f"value-{i}".encode()) for i in range(30)
    )


def test_stream_py_floor_runs_it_with_that_run_s_workload_and_worker_settings() -> None:
    from streambench.cli import floor_line, floor_summary, parse_args

    stream = parse_args(["--rate", "500", "--duration", "12", "--worker-linger-ms", "20", "--floor"])
    a = floor.args_for(stream)
    assert (a.rate, a.duration, a.sessions, a.seed) == (500, 12, stream.sessions, stream.seed)
    assert (a.concurrency, a.partitions) == (stream.concurrency, stream.partitions)
    assert a.linger_ms == 20
    assert (a.fetch_wait_ms, a.commit_interval_ms) == (100, 100)  # the worker's defaults: not given
    assert a.latency_skip_s == stream.latency_skip_s
    runs = [
        {
            "cpu_us_per_event": c,
            "broker_cpu_s": 5.0,
            "events_per_turn": 10.0,
            "threads_us_per_event": {"python": 4.0},
            "steady_input_to_take_ms": {"p99": c * 10},
        }
        for c in (12.0, 14.0, 13.0)
    ]
    summary = floor_summary(runs)
    assert summary["cpu_us_per_event"] == 13.0 and summary["runs"] == runs
    assert summary["steady_input_to_take_p99_ms"] == 130.0
    assert "13 µs per event (last run: python 4.0)" in floor_line(summary)
    assert "steady p99 from input produced to taken 130.0 ms" in floor_line(summary)
