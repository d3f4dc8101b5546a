"""Print the stage costs written by ``bench/stagecost/sitecustomize.py``, per call and per event."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--events", type=int, required=True, help="input events the worker applied")
    a = parser.parse_args()
    for path in a.files:
        totals = json.loads(path.read_text())
        print(f"{path.name}: main thread CPU by stage ({a.events:,} events)")
        print(f"  {'stage':36s} {'calls':>8s} {'CPU s':>8s} {'µs/call':>9s} {'µs/event':>9s}")
        for stage, (calls, cpu) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            per_call = cpu / calls * 1e6 if calls else 0.0
            print(f"  {stage:36s} {calls:8.0f} {cpu:8.3f} {per_call:9.1f} {cpu / a.events * 1e6:9.1f}")


if __name__ == "__main__":
    main()
