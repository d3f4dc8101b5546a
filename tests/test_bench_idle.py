"""bench/idle.py: an idle worker's (or executor's) CPU per second, on a broker of its own (figures never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

IDLE = Path(__file__).resolve().parent.parent / "bench" / "idle.py"


@pytest.mark.broker
@pytest.mark.slow
def test_it_samples_a_running_worker_and_the_broker(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    args = [sys.executable, str(IDLE), "--warmup", "4", "--seconds", "1", "--json", str(out)]
    done = subprocess.run([*args, "--", "--fetch-wait-ms", "500"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["seconds"] >= 1
    assert figures["command"].endswith("--fetch-wait-ms 500"), "the worker options reach the worker"
    assert "idle for" in done.stdout and "broker" in done.stdout
    for name in ("cpu_ms_per_s", "main_thread_cpu_ms_per_s", "broker_cpu_ms_per_s"):
        assert figures[name] >= 0
    # The kernel counts CPU time in clock ticks (10 ms), the process's and its threads' apart:
    # over this 1 s window the two may disagree by a tick each way.
    tick_ms_per_s = 10 / figures["seconds"]
    assert figures["process"] == "worker"
    assert figures["cpu_ms_per_s"] >= figures["main_thread_cpu_ms_per_s"] - 2 * tick_ms_per_s


@pytest.mark.broker
@pytest.mark.slow
def test_a_worker_that_exits_is_reported_not_measured(tmp_path: Path) -> None:
    args = [sys.executable, str(IDLE), "--warmup", "3", "--seconds", "1", "--", "--no-such-option"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "the worker exited" in done.stderr
