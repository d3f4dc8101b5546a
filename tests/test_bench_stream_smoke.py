"""bench/stream.py end to end on a tiny workload: its outputs must check out (correctness, never timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "stream.py"
PEERS = REPO.parent / "shared" / "peers" / "quix"


@pytest.mark.broker
@pytest.mark.timeout(150)
@pytest.mark.slow
def test_quick_run_outputs_every_expected_record_exactly_once(tmp_path: Path) -> None:
    if not (PEERS / "gen_workload.py").is_file():
        pytest.skip(f"the peer workload generator is not in {PEERS}")
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sessions", "200", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), f"no figures written (exit {run.returncode}):\n{run.stdout}\n{run.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    checker = figures["ours"][0].get("checker", {})
    assert figures["outputs_correct"] is True, f"{figures.get('error')}\n{json.dumps(checker, indent=1)[:3000]}"
    assert run.returncode == 0, run.stderr[-3000:]
    assert figures["input_events"] == 1600
    assert figures["events_applied"] == 1600
    assert checker["received_total"] == checker["expected_total"] == 1400  # 6 task runs + 1 finalized per session
    numbers = (
        "events_per_s",
        "cpu_us_per_event",
        "peak_rss_mb",
        "startup_s",
        "sessions_per_s",
        "broker_cpu_s",
        "changelog_bytes_per_event",
        "output_bytes_per_event",
    )
    for key in numbers:
        assert isinstance(figures[key], (int, float)) and not isinstance(figures[key], bool), key
    assert figures["engine"] in ("python", "native"), figures["engine"]
    assert figures["machine"].endswith(f"{figures['cpus']} CPUs") and f"machine: {figures['machine']}" in run.stdout
    sizes = figures["ours"][0]["topic_bytes"]
    assert sizes["changelog_bytes"] > 0 and sizes["output_bytes"] > 0, sizes
    assert figures["output_bytes_per_event"] == round(sizes["output_bytes"] / 1600, 2)
    for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        assert key in figures and figures[key] is None, key  # preload: latency means nothing
    for key in ("events_per_s", "engine", "changelog_bytes_per_event", "output_bytes_per_event", "broker_cpu_s"):
        assert figures[f"quix_{key}"] is None, key  # --quick never runs the peer
