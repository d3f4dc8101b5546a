"""scripts/test.sh refuses a TEST_WORKERS that is not a number before it sets anything up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("workers", ["two", "-1", "2 3"])
def test_a_bad_test_workers_is_a_usage_error_naming_it(workers: str) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh")],
        env={**os.environ, "TEST_WORKERS": workers},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert f"TEST_WORKERS={workers}: give a number of pytest processes" in done.stderr
    assert done.stdout == ""  # nothing set up, nothing run
