"""Options and the main flow of ``bench/stream.py``: runs ours (and the peer), prints and writes figures."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from check_stream import DEFAULT_PEERS_DIR, find_peers_dir, import_gen_workload

from .common import (
    DEFAULT_DURATION_S,
    EVENTS_PER_SESSION,
    HERE,
    PEER_CHECKER_FETCH_WAIT_MS,
    PEER_VENV,
    QUICK_SESSIONS,
    log,
)
from .measurement import run_ours
from .peer import run_quix
from .report import combine, git_describe, machine, ratio, report, run_details

ALWAYS = (
    "engine",
    "events_per_s",
    "cpu_us_per_event",
    "peak_rss_mb",
    "broker_cpu_s",
    "changelog_bytes_per_event",
    "output_bytes_per_event",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "outputs_correct",
)
"""Keys in every ``--json`` (and ``quix_<key>``): ``null`` when not measured (latency: preload runs)."""


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=None, help="sessions (8 events each) [default: 20000]")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--concurrency", type=int, default=1_000, help="live, interleaved sessions")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help=f"a small preload run ({QUICK_SESSIONS} sessions), no peer")
    ap.add_argument("--rate", type=float, default=0.0, help="paced mode: events/s (0 = preload)")
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"paced mode: seconds of events, i.e. sessions = rate*duration/8 [default {DEFAULT_DURATION_S:g}]",
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--join-at", type=float, default=None, help="the workers after the first start S s in")
    ap.add_argument("--kill-at", type=float, default=None, help="kill -9 the last worker S s in")
    ap.add_argument("--compare-quix", action="store_true", help="also run the Quix Streams peer, side by side")
    ap.add_argument("--peers-dir", default=None, help=f"folder of the peer scripts [default: {DEFAULT_PEERS_DIR}]")
    ap.add_argument("--peer-venv", default=str(PEER_VENV), help="the peer's own virtualenv (made on first use)")
    ap.add_argument("--quix-fetch-wait-ms", type=int, default=None, help="peer worker --fetch-wait-ms [its 100]")
    ap.add_argument("--worker-fetch-wait-ms", type=int, default=None, help="our worker --fetch-wait-ms [its 100]")
    ap.add_argument("--worker-linger-ms", type=int, default=None, help="our worker --linger-ms [its 0]")
    ap.add_argument("--worker-fetch-min-bytes", type=int, default=None, help="our worker --fetch-min-bytes [its 1]")
    ap.add_argument(
        "--worker-checkpoint-interval-ms", type=int, default=None, help="our worker --checkpoint-interval-ms [its 100]"
    )
    ap.add_argument("--batch-size", type=int, default=None, help="our worker --batch-size [its default]")
    ap.add_argument(
        "--worker-X",
        dest="worker_kafka",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="our worker -X KEY=VALUE (a librdkafka setting; repeatable)",
    )
    ap.add_argument(
        "--checker-fetch-wait-ms",
        type=int,
        default=PEER_CHECKER_FETCH_WAIT_MS,
        help="our checker's fetch wait [the peer's checker's: both sides' latency read alike; 10 reads ours finer]",
    )
    ap.add_argument("--latency-skip-s", type=float, default=5.0, help="warm-up left out of the steady latency")
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours/peer N times; figures = medians")
    ap.add_argument("--timeout", type=float, default=900.0, help="per run")
    ap.add_argument("--run-dir", default=None, help="keep logs, stats and peer results here [default: a temp dir]")
    ap.add_argument("--py-spy", default=None, metavar="FILE", help="profile worker0 with py-spy (.svg/.txt/.json)")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="paced: also run bench/floor.py (the worker's Kafka loop alone) in every repeat, and report it",
    )
    ap.add_argument("--json", default=None, metavar="FILE", help="write every figure as one JSON object")
    a = ap.parse_args(argv)
    if a.quick:
        a.compare_quix = False
        a.rate = 0.0
        a.sessions = a.sessions or QUICK_SESSIONS
    if a.sessions is None:
        duration = a.duration if a.duration is not None else DEFAULT_DURATION_S
        a.sessions = max(1, math.ceil(a.rate * duration / EVENTS_PER_SESSION)) if a.rate > 0 else 20_000
    elif a.duration is not None:
        ap.error("give --sessions or --duration, not both")
    if a.workers < 1 or a.repeat < 1:
        ap.error("--workers and --repeat must be at least 1")
    if (a.join_at is not None or a.kill_at is not None) and a.workers < 2:
        ap.error("--join-at and --kill-at need --workers 2 (or more)")
    if a.join_at is not None and a.kill_at is not None:
        ap.error("--join-at and --kill-at are separate runs")
    return a


def run_floor(a: argparse.Namespace) -> dict[str, Any]:
    """bench/floor.py with this run's workload, rate and worker settings (its own fresh broker)."""
    sys.path.insert(0, str(HERE))
    import floor

    log("the Kafka loop alone (bench/floor.py)")
    return floor.run(floor.args_for(a))


def floor_summary(floors: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor's figures over the repeats (medians), with each run's."""
    keys = ("cpu_us_per_event", "broker_cpu_s", "events_per_turn")
    p99s = [f["steady_input_to_take_ms"]["p99"] for f in floors if f.get("steady_input_to_take_ms")]
    steady_p99 = {"steady_input_to_take_p99_ms": statistics.median(p99s) if p99s else None}
    return {**{key: statistics.median(f[key] for f in floors) for key in keys}, **steady_p99, "runs": floors}


def floor_line(floor: dict[str, Any]) -> str:
    split = ", ".join(f"{k} {v}" for k, v in floor["runs"][-1]["threads_us_per_event"].items())
    return (
        f"the Kafka loop alone (bench/floor.py, no trigger logic): {floor['cpu_us_per_event']:g} µs per event"
        f" (last run: {split}), broker CPU {floor['broker_cpu_s']:g} s, {floor['events_per_turn']:g} events per turn,"
        f" steady p99 from input produced to taken {floor['steady_input_to_take_p99_ms']} ms"
    )


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Run the benchmark; ``description`` is the ``--help`` text (bench/stream.py's docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if "--e2e" in args:
        # End-to-end mode (worker + executor round trips): bench/e2e.py does the work.
        sys.path.insert(0, str(HERE))
        import e2e

        return e2e.main([arg for arg in args if arg != "--e2e"])
    a = parse_args(argv, description)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["bench/stream.py", *argv])
    try:
        peers_dir = find_peers_dir(a.peers_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gen_workload = import_gen_workload(peers_dir)
    keep = a.run_dir is not None
    run_dir = Path(a.run_dir).resolve() if keep else Path(tempfile.mkdtemp(prefix="stream-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    n_events = a.sessions * EVENTS_PER_SESSION
    mode = "paced" if a.rate > 0 else "preload"
    log(f"{mode}: {a.sessions} sessions, {n_events} events, {a.workers} worker(s); run dir {run_dir}")

    ok = True
    runs_ours: list[dict[str, Any]] = []
    runs_quix: list[dict[str, Any]] = []
    quix_error = None
    floors: list[dict[str, Any]] = []
    for r in range(a.repeat):
        # Alternate ours and the peer's, so that both see the machine's load alike.
        here = run_dir / f"run{r}" if a.repeat > 1 else run_dir
        (here / "ours").mkdir(parents=True, exist_ok=True)
        try:
            ours = run_ours(a, gen_workload, peers_dir, here / "ours")
        except Exception as exc:
            log(f"our run failed: {exc}")
            ours = {"error": f"{type(exc).__name__}: {exc}", "figures": {"outputs_correct": False}}
            ok = False
        runs_ours.append(ours)
        if a.compare_quix and quix_error is None:
            try:
                runs_quix.append(run_quix(a, peers_dir, here))
            except RuntimeError as exc:
                quix_error = str(exc)
                log(f"peer figures are null: {quix_error}")
        if a.floor and a.rate > 0:
            floors.append(run_floor(a))
    quix = runs_quix[-1] if runs_quix and quix_error is None else None
    ours = runs_ours[-1]
    mine = combine([o["figures"] for o in runs_ours])
    theirs = combine([q["figures"] for q in runs_quix]) if quix else {}
    summary: dict[str, Any] = {
        "command": command,
        "mode": mode,
        "sessions": a.sessions,
        "input_events": n_events,
        "seed": a.seed,
        "concurrency": a.concurrency,
        "partitions": a.partitions,
        "workers": a.workers,
        "rate": a.rate or None,
        "join_at": a.join_at,
        "kill_at": a.kill_at,
        "checker_fetch_wait_ms": a.checker_fetch_wait_ms,
        "repeat": a.repeat,
        "figures_are": "medians of the runs" if a.repeat > 1 else "one run",
        "git": git_describe(),
        "cpus": os.cpu_count(),
        "machine": machine(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    keys = sorted({*mine, *(theirs or {}), *ALWAYS} - {"outputs_complete"})
    for key in keys:
        summary[key] = mine.get(key)
    summary["outputs_complete"] = mine.get("outputs_complete")
    if a.compare_quix:
        for key in keys:
            summary[f"quix_{key}"] = theirs.get(key) if quix else None
            r = ratio(mine.get(key), theirs.get(key)) if quix else None
            if r is not None:
                summary[f"ratio_{key}"] = r
        summary["quix_command"] = quix["command"] if quix else None
        summary["quix_error"] = quix_error
    else:
        for key in ALWAYS:
            summary[f"quix_{key}"] = None
        summary["quix_error"] = "not run (--compare-quix not given)"
    summary["error"] = "; ".join(o["error"] for o in runs_ours if o.get("error")) or None
    summary["ours"] = [run_details(o) for o in runs_ours]
    summary["quix"] = [{**q["summary"], "topic_bytes": q.get("topic_bytes")} for q in runs_quix] if quix else None
    summary["floor"] = floor_summary(floors) if floors else None
    summary["run_dir"] = str(run_dir) if keep or not mine.get("outputs_correct") else None

    print()
    what = f"medians of {a.repeat} alternating runs" if a.repeat > 1 else "one run each"
    print(f"stream-triggers vs Quix Streams peer - {mode}, {a.sessions:,} sessions / {n_events:,} events ({what})")
    print(f"machine: {summary['machine']}")
    if a.rate > 0:
        polls = f"{a.checker_fetch_wait_ms} ms (ours), {PEER_CHECKER_FETCH_WAIT_MS} ms (the peer's)"
        print(f"latency read by output checkers polling the broker every {polls}")
    print(report(summary, mine, theirs if quix else None))
    if summary["floor"]:
        print(floor_line(summary["floor"]))
    chk = ours.get("checker") or {}
    if chk:
        print(
            f"checker: {chk.get('received_total')} outputs, missing {chk.get('missing')}, duplicates "
            f"{chk.get('duplicates')} ({chk.get('duplicates_new_event_id')} with a new event_id), wrong cause "
            f"{chk.get('wrong_cause_seq')}, unexpected {chk.get('unexpected')}, found on re-read "
            f"{chk.get('missed_by_live_reader_found_on_reread')}"
        )
    if ours.get("error"):
        print(f"our run: {ours['error']}")
    if quix_error:
        print(f"peer: null figures - {quix_error}")
    print(f"command: {command}")
    if ours.get("worker_command"):
        print(f"worker:  {ours['worker_command']}")
    if quix:
        print(f"peer:    {quix['command']}")
    if summary["run_dir"]:
        print(f"run dir: {run_dir}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"figures: {a.json}")
    if not keep and mine.get("outputs_correct"):
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if ok else 1
