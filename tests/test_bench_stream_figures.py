"""The stream benchmark's bookkeeping: which engine a worker runs, figures over repeated runs, the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from streambench.cli import parse_args
from streambench.processes import Sampler, WorkerProcess, worker_command
from streambench.report import combine, report


def _worker(tmp_path: Path, log: str, stats: dict | None = None) -> WorkerProcess:
    worker = WorkerProcess(0, ["true"], tmp_path, tmp_path / "worker0.json")
    worker.log_path.write_text(log)
    if stats is not None:
        worker.stats_path.write_text(json.dumps(stats))
    return worker


def test_the_engine_comes_from_the_worker_stats_first(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "worker started engine=python\n", {"engine": "native"})
    assert worker.engine() == "native"


@pytest.mark.parametrize(
    ("log", "engine"),
    [
        ("12:00 INFO worker ready, engine=native, 4 partitions\n", "native"),
        ('{"msg": "ready", "engine": "python"}\n', "python"),
        ("12:00 INFO stream_triggers.engine: loaded\n", None),  # a logger name is not a report
        ("12:00 INFO assigned partitions [0, 1]\n", None),
    ],
)
def test_the_engine_comes_from_a_log_line_otherwise(tmp_path: Path, log: str, engine: str | None) -> None:
    assert _worker(tmp_path, log, {"events_applied": 3}).engine() == engine


def test_combine_keeps_an_engine_name_and_says_when_runs_disagree() -> None:
    assert combine([{"engine": "python", "x": 1.0}, {"engine": "python", "x": 3.0}]) == {"engine": "python", "x": 2.0}
    assert combine([{"engine": "python"}, {"engine": "native"}])["engine"] == "mixed: native, python"


def test_the_table_shows_the_engine_and_bytes_per_event_with_their_ratio() -> None:
    ours = {"engine": "python", "changelog_bytes_per_event": 180.0, "output_bytes_per_event": 140.0}
    quix = {"engine": "quixstreams", "changelog_bytes_per_event": 7.0, "output_bytes_per_event": 170.0}
    rows = {line.split("  ")[0]: line.split() for line in report({}, ours, quix).splitlines()[2:]}
    assert rows["engine of the trigger worker"][-3:] == ["python", "quixstreams", "-"]
    assert rows["changelog bytes per input event [B]"][-4:-1] == ["180.0", "7", "25.7"]
    assert rows["output bytes per input event [B]"][-4:-1] == ["140.0", "170.0", "0.824"]


def test_the_loop_turn_p99_is_the_bound_of_its_bucket_over_every_worker() -> None:
    from streambench.measurement import loop_turn_p99_ms

    bounds = [0.001, 0.01, 0.1]
    fast = {"bounds": bounds, "counts": [99, 1, 0, 0]}
    slow = {"bounds": bounds, "counts": [0, 0, 1, 0]}
    assert loop_turn_p99_ms([fast]) == 1.0
    assert loop_turn_p99_ms([fast, slow]) == 10.0  # 100 of 101 turns took at most 10 ms
    assert loop_turn_p99_ms([None, {"bounds": bounds, "counts": [0, 0, 0, 1]}]) == float("inf")
    assert loop_turn_p99_ms([None]) is None


def test_the_worker_options_reach_our_worker_command_and_only_when_given(tmp_path: Path) -> None:
    from stream_triggers.kafka.topics import Topics

    def command(*argv: str) -> list[str]:
        return worker_command(parse_args(list(argv)), "b:1", Topics("p"), "g", tmp_path, tmp_path / "s.json")

    tuned = command(
        "--worker-fetch-wait-ms", "40", "--worker-linger-ms", "0", "--worker-fetch-min-bytes", "10000",
        "--worker-checkpoint-interval-ms", "1000", "--worker-X", "linger.ms=5", "--worker-X", "acks=all",
    )  # fmt: skip
    assert " --fetch-wait-ms 40 --linger-ms 0 --fetch-min-bytes 10000 --checkpoint-interval-ms 1000" in " ".join(tuned)
    options = {"--fetch-wait-ms", "--linger-ms", "--fetch-min-bytes", "--checkpoint-interval-ms", "--batch-size"}
    assert " -X linger.ms=5 -X acks=all" in " ".join(tuned)
    assert not (options | {"-X"}) & set(command())


def test_a_worker_peak_rss_is_its_own_not_the_harness_rss_when_it_was_spawned() -> None:
    """Linux's ``wait4`` counts the parent's RSS at spawn in the child's ``ru_maxrss``: a
    harness grown large reported a small worker as large.  The sampler reads the child's own
    high-water mark, which one sample suffices for."""
    ballast = bytearray(300 * 2**20)
    for at in range(0, len(ballast), 4096):  # (touched: resident)
        ballast[at] = 1
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    sampler = Sampler(period=0.05)
    sampler.add("child", child.pid)
    sampler.start()
    time.sleep(0.5)
    os.wait4(child.pid, 0)  # (its ru_maxrss here: over 300 MB, the ballast's)
    sampler.stop()
    del ballast
    peak = sampler.peak_rss_mb("child")
    assert peak is not None and 1 < peak < 100
