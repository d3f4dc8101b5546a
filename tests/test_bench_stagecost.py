"""bench/stagecost: the stage wrappers find every stage they name, and write their totals at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

STAGECOST = Path(__file__).resolve().parent.parent / "bench" / "stagecost"


def test_a_worker_started_with_it_writes_its_stage_costs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("stream-triggers")
    env = {**os.environ, "PYTHONPATH": str(STAGECOST), "STAGE_COSTS_DIR": str(tmp_path)}
    done = subprocess.run([str(script), "worker", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr  # a stage renamed in the worker fails here (AttributeError)
    (written,) = tmp_path.glob("stage-costs-*.json")
    assert json.loads(written.read_text()) == {}  # (--help runs no stage)


def test_other_processes_are_left_alone(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(STAGECOST), "STAGE_COSTS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("stage-costs-*.json"))
