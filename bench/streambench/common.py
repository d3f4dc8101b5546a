"""What every part of the stream benchmark shares: paths, defaults, the progress log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
"""The bench/ folder (check_stream.py, e2e.py and the peer's virtualenv live there)."""
PEER_VENV = HERE / ".peer-venv"
PEER_REQUIREMENTS = ["quixstreams==3.28.1", "psutil"]
EVENTS_PER_SESSION = 8
QUICK_SESSIONS = 2_000
DEFAULT_DURATION_S = 30.0
STOP_TIMEOUT_S = 30.0
PEER_CHECKER_FETCH_WAIT_MS = 100
"""The peer's output checker polls the broker this often (check_outputs.py's default, which its
bench.py keeps); ours does the same by default, so that both sides' latency is read alike."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
