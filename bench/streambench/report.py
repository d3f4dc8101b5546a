"""Figures side by side: the table, ratios, medians over repeated runs, the commit measured."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from typing import Any

from .common import (
    HERE,
)

ROWS = [
    ("engine of the trigger worker", "engine", "", ""),
    ("input events/s (first->last applied)", "events_per_s", "ev/s", "higher"),
    ("sessions/s", "sessions_per_s", "/s", "higher"),
    ("CPU per event (worker process)", "cpu_us_per_event", "µs", "lower"),
    ("peak RSS, worker", "peak_rss_mb", "MB", "lower"),
    ("startup to first event applied", "startup_s", "s", "lower"),
    ("latency p50 (recv - produced_at)", "latency_p50_ms", "ms", "lower"),
    ("latency p95", "latency_p95_ms", "ms", "lower"),
    ("latency p99", "latency_p99_ms", "ms", "lower"),
    ("steady latency p50 (after warm-up)", "latency_steady_p50_ms", "ms", "lower"),
    ("steady latency p99", "latency_steady_p99_ms", "ms", "lower"),
    ("steady p99, cause to output produced", "latency_steady_to_output_p99_ms", "ms", "lower"),
    ("worker loop turn p99, work only (bucket bound)", "loop_turn_p99_ms", "ms", "lower"),
    ("2nd worker joins: processing pause", "join_pause_s", "s", "lower"),
    ("kill -9 of 1 of 2: failover gap", "failover_gap_s", "s", "lower"),
    ("duplicate outputs", "duplicate_outputs", "", "lower"),
    ("longest output silence", "max_output_gap_s", "s", "lower"),
    ("broker CPU while applying", "broker_cpu_s", "s", "lower"),
    ("changelog bytes per input event", "changelog_bytes_per_event", "B", "lower"),
    ("output bytes per input event", "output_bytes_per_event", "B", "lower"),
    ("outputs correct (each exactly once)", "outputs_correct", "", ""),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(ours: Any, theirs: Any) -> float | None:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return None
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        return round(ours / theirs, 3)
    return None


def report(summary: dict[str, Any], ours: dict[str, Any], quix: dict[str, Any] | None) -> str:
    lines = []
    head = f"{'figure':<40} {'ours':>12} {'quix':>12} {'ours/quix':>10}  better"
    lines += [head, "-" * len(head)]
    for label, key, unit, better in ROWS:
        mine = ours.get(key)
        theirs = quix.get(key) if quix else None
        if mine is None and theirs is None:
            continue
        r = ratio(mine, theirs)
        name = f"{label} [{unit}]" if unit else label
        lines.append(f"{name:<40} {_fmt(mine):>12} {_fmt(theirs):>12} {_fmt(r):>10}  {better}")
    return "\n".join(lines)


def git_describe() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it (the editable install runs the tree)."""
    repo = HERE.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "stream_triggers"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "stream_triggers_modified": None}
    return {
        "commit": head.stdout.strip() or None,
        "stream_triggers_modified": sorted(line[3:] for line in dirty.stdout.splitlines()),
    }


def machine() -> str:
    """The processor and its count, printed with the figures: only ratios from one machine compare."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per key over repeated runs: the median of numbers; booleans must all hold; names must agree."""
    out: dict[str, Any] = {}
    for key in {k for run in runs for k in run}:
        values = [run.get(key) for run in runs]
        if any(isinstance(v, bool) for v in values):
            out[key] = all(v is True for v in values)
            continue
        names = sorted({v for v in values if isinstance(v, str)})
        if names:
            out[key] = names[0] if len(names) == 1 else "mixed: " + ", ".join(names)
            continue
        numbers = [v for v in values if isinstance(v, (int, float))]
        out[key] = round(statistics.median(numbers), 3) if numbers else None
    return out


def run_details(run: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in run.items() if k != "figures"}
    if details.get("checker"):
        details["checker"] = {k: v for k, v in run["checker"].items() if k != "gaps"}
    return details
