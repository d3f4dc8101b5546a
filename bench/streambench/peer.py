"""The Quix Streams peer: its own virtualenv, its own bench.py run, its figures in our terms."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from stream_triggers.ops.broker import BrokerError, EmbeddedBroker

from .common import (
    EVENTS_PER_SESSION,
    PEER_REQUIREMENTS,
    log,
)
from .processes import Sampler, stop_group
from .topicsize import list_topics, per_event_figures, try_bytes_written

PEER_OUTPUT_TOPIC = "task-runs"  # bench.py's --output-topic default
PEER_ENGINE = "quixstreams"  # the peer's worker: plain Python on Quix Streams (no native trigger engine)
PEER_WORKER_SCRIPT = "quix_triggers.py"
PEER_WORKER = "peer-worker-"  # + pid: the peer's worker processes in our sampler


def ensure_peer_venv(venv: Path) -> str:
    """The peer virtualenv's python, created on first use; raises RuntimeError with the reason."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import quixstreams, psutil, confluent_kafka; print(quixstreams.__version__)"]

    def ok() -> bool:
        if not python.exists():
            return False
        r = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        return r.returncode == 0 and r.stdout.strip() == PEER_REQUIREMENTS[0].split("==")[1]

    if ok():
        return str(python)
    log(f"creating the peer virtualenv {venv} ({' '.join(PEER_REQUIREMENTS)}); first use only")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_REQUIREMENTS],
    ]
    for cmd in steps:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{shlex.join(cmd)}: {exc}") from exc
        if r.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout)[-800:].strip()}")
    if not ok():
        raise RuntimeError(f"{venv} was made but cannot import quixstreams 3.28.1 and psutil")
    return str(python)


def run_quix(a: argparse.Namespace, peers_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One run of the peer's bench.py; returns {"command", "figures", "summary"} or raises RuntimeError.

    The broker is ours (the same in-memory Tansu command bench.py would start), given to
    bench.py with ``--bootstrap``: so that its topics can be measured after the run and its
    CPU sampled over the peer's first..last input, as for our side.
    """
    python = ensure_peer_venv(Path(a.peer_venv))
    qdir = run_dir / "quix"
    qdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=qdir / "tansu.log")
    sampler = Sampler()
    try:
        broker.start()
    except BrokerError as exc:
        raise RuntimeError(str(exc)) from exc
    try:
        sampler.add("broker", broker.pid or 0)
        sampler.start()
        return _run_bench(a, python, peers_dir, qdir, broker.bootstrap, sampler)
    finally:
        sampler.stop()
        broker.stop(remove_log=False)


def _run_bench(
    a: argparse.Namespace, python: str, peers_dir: Path, qdir: Path, bootstrap: str, sampler: Sampler
) -> dict[str, Any]:
    out = qdir / "quix.json"
    worker_cmd = (
        f"{shlex.quote(python)} {shlex.quote(str(peers_dir / 'quix_triggers.py'))} --bootstrap {{bootstrap}} "
        "--group {group} --partitions {partitions} --state-dir {run_dir}/state{i} --stats-out {run_dir}/worker{i}.json"
    )
    if a.quix_fetch_wait_ms is not None:
        worker_cmd += f" --fetch-wait-ms {a.quix_fetch_wait_ms}"
    cmd = [python, str(peers_dir / "bench.py"), "--bootstrap", bootstrap]
    cmd += ["--mode", "paced" if a.rate > 0 else "preload", "--sessions", str(a.sessions), "--seed", str(a.seed)]
    cmd += ["--concurrency", str(a.concurrency), "--partitions", str(a.partitions), "--instances", str(a.workers)]
    cmd += ["--run-dir", str(qdir), "--out", str(out), "--latency-skip-s", str(a.latency_skip_s)]
    cmd += ["--checker-timeout", str(a.timeout), "--worker-cmd", worker_cmd]
    if a.rate > 0:
        cmd += ["--rate", str(a.rate)]
    if a.join_at is not None:
        cmd += ["--stagger-s", str(a.join_at)]
    if a.kill_at is not None:
        cmd += ["--kill-at-s", str(a.kill_at)]
    log("peer: " + shlex.join(cmd))
    with open(qdir / "bench.log", "wb") as bench_log:
        # Its own session, so that a hung peer run can be ended with its whole group by PID.
        proc = subprocess.Popen(cmd, stdout=bench_log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_sampling_workers(proc, sampler, a.timeout + 300)
        except BaseException as exc:  # timeout, or Ctrl-C: end the peer's run and what it started
            stop_group(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RuntimeError(f"the peer bench did not finish within {a.timeout + 300:g} s") from None
            raise
    try:
        result = json.loads(out.read_text())
        summary = result["summary"]
    except (OSError, ValueError, KeyError) as exc:
        tail = (qdir / "bench.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"the peer bench exited {proc.returncode} without a summary ({exc}): {tail}") from None
    figures = quix_figures(a, result)
    # bench.py samples the broker only when it starts one: sample ours over the same span as our side's.
    stats = [w["stats"] for w in result.get("workers", []) if (w.get("stats") or {}).get("t_first_in")]
    if stats:
        t0 = min(s["t_first_in"] for s in stats)
        t1 = max(s["t_last_in"] for s in stats)
        figures["broker_cpu_s"] = sampler.cpu_between("broker", t0, t1)
    figures["broker_peak_rss_mb"] = sampler.peak_rss_mb("broker")
    # The workers' own high-water marks, measured as ours are (bench.py's wait4 figure also
    # counts its own RSS when it spawned them: see Sampler); kept beside it.
    peaks = [sampler.peak_rss_mb(name) for name in sampler.names() if name.startswith(PEER_WORKER)]
    figures["peak_rss_mb_wait4"] = figures["peak_rss_mb"]
    if peaks and None not in peaks:
        figures["peak_rss_mb"] = max(peaks)
    log("measuring the peer's changelog and output topics")
    try:
        changelogs = [name for name in list_topics(bootstrap) if name.startswith("changelog")]
        sizes = try_bytes_written(bootstrap, changelogs, [PEER_OUTPUT_TOPIC], a.sessions * EVENTS_PER_SESSION)
    except Exception as exc:  # a benchmark reports what it could not measure
        sizes = {"error": f"{type(exc).__name__}: {exc}"}
    figures.update(per_event_figures(sizes))
    return {"command": shlex.join(cmd), "figures": figures, "summary": summary, "topic_bytes": sizes}


def wait_sampling_workers(proc: subprocess.Popen[bytes], sampler: Sampler, timeout: float) -> None:
    """Wait for the peer's bench.py, adding every worker it starts to ``sampler``.

    One sample of a worker is enough for its peak RSS (its high-water mark counts from its
    start); a worker is found within a fifth of a second, and lives for seconds.
    """
    deadline = time.monotonic() + timeout
    bench = psutil.Process(proc.pid)
    added: set[int] = set()
    while True:
        try:
            proc.wait(0.2)
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout) from None
        try:
            children = bench.children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            if child.pid in added:
                continue
            try:  # (a child not yet past exec shows bench.py's command line: looked at again next time)
                if any(part.endswith(PEER_WORKER_SCRIPT) for part in child.cmdline()):
                    sampler.add(f"{PEER_WORKER}{child.pid}", child.pid)
                    added.add(child.pid)
            except psutil.Error:
                pass


def quix_figures(a: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    s = result["summary"]
    lat = (s.get("latency_recv_ms") or {}) if a.rate > 0 else {}
    steady = (s.get("latency_recv_steady_ms") or {}) if a.rate > 0 else {}
    span = s.get("in_span_s")
    cpu_ms = s.get("cpu_ms_per_event")
    f: dict[str, Any] = {
        "outputs_correct": bool(s.get("correct")),
        "engine": PEER_ENGINE,
        "events_applied": s.get("n_in"),
        "apply_span_s": span,
        "events_per_s": s.get("in_rate_ev_s"),
        "sessions_per_s": round(a.sessions / span, 1) if span else None,
        "cpu_us_per_event": round(cpu_ms * 1000, 2) if cpu_ms is not None else None,
        "worker_cpu_s": s.get("cpu_first_to_last_input_s"),
        "startup_s": s.get("startup_to_first_input_s") if a.rate <= 0 else None,
        "peak_rss_mb": s.get("peak_rss_mb_max"),
        "duplicate_outputs": s.get("duplicates"),
        "max_output_gap_s": s.get("max_recv_gap_s"),
    }
    for p in ("p50", "p95", "p99"):
        f[f"latency_{p}_ms"] = lat.get(p)
        f[f"latency_steady_{p}_ms"] = steady.get(p)
    # bench.py reports the longest silence of the whole run; with --stagger-s / --kill-at-s
    # that is the join pause / failover gap.
    if a.join_at is not None:
        f["join_pause_s"] = s.get("max_recv_gap_s")
    if a.kill_at is not None:
        f["failover_gap_s"] = s.get("max_recv_gap_s")
    return f
