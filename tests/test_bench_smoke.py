"""bench/engine.py runs (--quick) and reports every figure; timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "engine.py"

KEYS = {
    "engine_transitions_per_s",
    "fire_per_s_memory",
    "fire_per_s_rocksdb",
    "fire_per_s_memory_at_10_instances",
    "fire_per_s_memory_at_1000_instances",
    "at_1000_vs_10_slowdown",
    "cpu_s",
    "peak_rss_mb",
}


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "fire()/s memory" in done.stdout
    results = json.loads(out.read_text())
    assert not KEYS - results.keys(), KEYS - results.keys()
    for key in KEYS:
        assert isinstance(results[key], (int, float)) and results[key] > 0, key
    assert all(isinstance(met, bool) for met in results["bars"].values())
