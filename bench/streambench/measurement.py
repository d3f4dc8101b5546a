"""One run of our worker(s) on a fresh broker, and the figures it yields."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker

from .common import (
    HERE,
    log,
)
from .processes import Sampler, WorkerProcess, start_profiler, stop_process, worker_command
from .topicsize import per_event_figures, try_bytes_written
from .workload import EventProducer, committed_all, workload


def _largest_gap_after(gaps: list[list[float]], at: float | None) -> tuple[float | None, float | None]:
    """(length, start relative to ``at``) of the longest output silence ending after ``at``."""
    if at is None:
        return None, None
    after = [g for g in gaps if g[0] + g[1] > at]
    if not after:
        return 0.0, None
    start, length = max(after, key=lambda g: g[1])
    return round(length, 3), round(start - at, 3)


def run_ours(a: argparse.Namespace, gen_workload: Any, peers_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One run of our workers on a fresh broker; returns figures and details."""
    tag = uuid.uuid4().hex[:10]
    topics = Topics(f"bench{tag}")
    group = f"bench-{tag}"
    paced = a.rate > 0
    res: dict[str, Any] = {"topic_prefix": topics.prefix, "group": group}
    broker = EmbeddedBroker(log_path=run_dir / "tansu.log")
    sampler = Sampler()
    workers: list[WorkerProcess] = []
    checker: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    actions: list[tuple[str, float, Callable[[], None]]] = []
    timeline: list[tuple[float, str]] = []
    t_ref: list[float] = []  # the moment --join-at / --kill-at count from

    def new_worker(i: int) -> WorkerProcess:
        cmd = worker_command(a, broker.bootstrap, topics, group, run_dir / f"state{i}", run_dir / f"worker{i}.json")
        return WorkerProcess(i, cmd, run_dir, run_dir / f"worker{i}.json")

    def start_worker(w: WorkerProcess) -> None:
        w.start()
        workers.append(w)
        sampler.add(w.name, w.pid or 0)
        timeline.append((time.time(), f"start {w.name} (pid {w.pid})"))

    def tick() -> None:
        if not t_ref:
            return
        now = time.time() - t_ref[0]
        while actions and now >= actions[0][1]:
            what, _, do = actions.pop(0)
            do()
            timeline.append((time.time(), what))
            log(what)

    try:
        broker.start()
        sampler.add("broker", broker.pid or 0)
        res["bootstrap"] = broker.bootstrap
        create_topics(broker.bootstrap, topics, partitions=a.partitions)
        events = workload(gen_workload, a.sessions, a.seed, a.concurrency)
        producer = EventProducer(broker.bootstrap, topics.events)
        if not paced:
            log(f"producing {len(events)} events to {topics.events}")
            res["producer"] = producer.run(events, 0, lambda: None)

        ready = run_dir / "checker.ready"
        check_out = run_dir / "checker.json"
        check_cmd = [sys.executable, str(HERE / "check_stream.py"), "--bootstrap", broker.bootstrap]
        check_cmd += ["--topic-prefix", topics.prefix, "--sessions", str(a.sessions), "--seed", str(a.seed)]
        check_cmd += ["--concurrency", str(a.concurrency), "--peers-dir", str(peers_dir), "--timeout", str(a.timeout)]
        check_cmd += ["--fetch-wait-ms", str(a.checker_fetch_wait_ms), "--ready-file", str(ready)]
        check_cmd += ["--result", str(check_out), "--latency-skip-s", str(a.latency_skip_s)]
        with open(run_dir / "checker.log", "wb") as check_log:
            checker = subprocess.Popen(check_cmd, stdout=check_log, stderr=subprocess.STDOUT)
        sampler.add("checker", checker.pid)
        deadline = time.time() + 120
        while not ready.exists():
            if checker.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the checker did not start; see {run_dir / 'checker.log'}")
            time.sleep(0.05)

        n_first = 1 if a.join_at is not None else a.workers
        for i in range(n_first):
            start_worker(new_worker(i))
        res["worker_command"] = shlex.join(workers[0].cmd)
        sampler.start()
        if a.py_spy:
            profiler = start_profiler(a.py_spy, workers[0].pid or 0)
        for i in range(n_first, a.workers):
            w = new_worker(i)
            actions.append((f"{w.name} joins", a.join_at or 0.0, lambda w=w: start_worker(w)))
        if a.kill_at is not None:
            actions.append((f"kill -9 worker{a.workers - 1}", a.kill_at, lambda: workers[-1].kill9()))

        if paced:
            # Start producing once every worker owns partitions (the log says so).
            deadline = time.time() + 90
            while not all(w.assigned() for w in workers):
                for w in workers:
                    if w.exited():
                        raise RuntimeError(f"{w.name} exited with {w.status}:\n{w.log_tail()}")
                if time.time() > deadline:
                    raise RuntimeError("the workers were not assigned partitions within 90 s")
                time.sleep(0.1)
            time.sleep(1.0)
            res["ready_s"] = round(time.time() - workers[0].started_at, 3)
            t_ref.append(time.time())
            timeline.append((t_ref[0], "generator starts"))
            log(f"producing {len(events)} events at {a.rate:g}/s")
            res["producer"] = producer.run(events, a.rate, tick)
        else:
            t_ref.append(workers[0].started_at or time.time())
        if producer.errors:
            raise RuntimeError(f"producing failed: {producer.errors[:3]}")
        last_offsets = producer.last_offsets
        producer = None  # let librdkafka's handle go before the broker does

        # Drained = the group committed past every produced offset; checked = the checker ended.
        deadline = time.time() + a.timeout
        drained = False
        next_check = 0.0
        while True:
            tick()
            for w in workers:
                if w.killed_at is None and w.exited():
                    raise RuntimeError(f"{w.name} exited with {w.status} during the run:\n{w.log_tail()}")
            now = time.time()
            if not drained and not actions and now >= next_check:
                drained = committed_all(broker.bootstrap, group, topics.events, last_offsets)
                next_check = now + 0.5
                if drained:
                    res["drained_at"] = now
                    timeline.append((now, "all input offsets committed"))
            if drained and checker.poll() is not None:
                break
            if now > deadline:
                res["error"] = f"not done within --timeout {a.timeout:g} s (drained={drained})"
                break
            time.sleep(0.05)
        if checker.poll() is None:
            stop_process(checker, 60)
        for w in workers:
            w.stop()
        sampler.stop()
        if profiler is not None:
            # py-spy writes its file when the target exits (or on SIGINT), not on SIGTERM.
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.send_signal(signal.SIGINT)
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    stop_process(profiler, 10)
            res["py_spy"] = a.py_spy
        try:
            res["checker"] = json.loads(check_out.read_text())
        except (OSError, ValueError) as exc:
            res["checker"] = {"error": f"no checker result ({exc}); see {run_dir / 'checker.log'}"}
        # The workers are stopped: what they wrote is final.  Read it before the broker goes.
        outputs = [topics.task_runs, topics.task_results, topics.sessions, topics.dead_letter]
        log("measuring the changelog and output topics")
        res["topic_bytes"] = try_bytes_written(broker.bootstrap, [topics.changelog], outputs, len(events))
    finally:
        sampler.stop()
        for w in workers:
            try:
                w.stop()
            except Exception as exc:  # keep tidying up
                log(f"stopping {w.name}: {exc}")
        for proc in (checker, profiler):
            if proc is not None and proc.poll() is None:
                stop_process(proc, 10)
        broker.stop(remove_log=False)

    res["timeline"] = [[round(t - t_ref[0], 3) if t_ref else t, what] for t, what in timeline]
    res["workers"] = [worker_details(w, sampler) for w in workers]
    res["figures"] = our_figures(a, res, workers, sampler, t_ref[0] if t_ref else None)
    return res


def worker_engine(workers: list[WorkerProcess]) -> str:
    """The engine the workers say they run ("python" when they do not say; "mixed" if they disagree)."""
    engines = {w.engine() for w in workers} - {None}
    if not engines:
        return "python"
    return engines.pop() if len(engines) == 1 else "mixed: " + ", ".join(sorted(engines))


def worker_details(w: WorkerProcess, sampler: Sampler) -> dict[str, Any]:
    d: dict[str, Any] = {"pid": w.pid, "exit_status": w.status, "killed": w.killed_at is not None}
    if w.rusage is not None:
        d["cpu_total_s"] = round(w.rusage.ru_utime + w.rusage.ru_stime, 3)
        # (Linux counts in ru_maxrss the harness's RSS when it spawned the worker: see Sampler.)
        d["maxrss_mb"] = round(w.rusage.ru_maxrss / 1024, 1)  # Linux: KiB
    d["peak_rss_mb"] = sampler.peak_rss_mb(w.name)
    d["stats"] = w.stats()
    d["engine"] = w.engine()
    return d


def loop_turn_p99_ms(histograms: list[dict[str, Any] | None]) -> float | None:
    """The upper bound (ms) of the bucket holding the 99th percentile of the workers' work per
    loop turn (``WorkerStats.loop_busy``: everything but waiting for input), merged."""
    found = [h for h in histograms if h and h.get("counts")]
    if not found:
        return None
    bounds = found[0]["bounds"]
    counts = [sum(h["counts"][i] for h in found) for i in range(len(bounds) + 1)]
    seen, need = 0, 0.99 * sum(counts)
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        seen += count
        if seen >= need:
            return bound * 1000
    return None


def our_figures(
    a: argparse.Namespace, res: dict[str, Any], workers: list[WorkerProcess], sampler: Sampler, t_ref: float | None
) -> dict[str, Any]:
    chk = res.get("checker") or {}
    f: dict[str, Any] = {"outputs_correct": bool(chk.get("correct")), "outputs_complete": bool(chk.get("complete"))}
    f["engine"] = worker_engine(workers)
    f.update(per_event_figures(res.get("topic_bytes")))
    stats = [d["stats"] for d in res["workers"] if d.get("stats") and d["stats"].get("first_event_at")]
    if stats:
        applied = sum(s["events_applied"] for s in stats)
        t0 = min(s["first_event_at"] for s in stats)
        t1 = max(s["last_event_at"] for s in stats)
        cpu = sum(s["cpu_last"] - s["cpu_first"] for s in stats)
        span = t1 - t0
        f["events_applied"] = applied
        f["apply_span_s"] = round(span, 3)
        f["events_per_s"] = round(applied / span, 1) if span > 0 else None
        f["sessions_per_s"] = round(a.sessions / span, 1) if span > 0 else None
        f["cpu_us_per_event"] = round(cpu / applied * 1e6, 2) if applied else None
        f["worker_cpu_s"] = round(cpu, 3)
        if a.rate <= 0 and workers and workers[0].started_at:
            f["startup_s"] = round(t0 - workers[0].started_at, 3)
        f["broker_cpu_s"] = sampler.cpu_between("broker", t0, t1)
        f["loop_turn_p99_ms"] = loop_turn_p99_ms([s.get("loop_busy") for s in stats])
    rss = [d["peak_rss_mb"] for d in res["workers"] if isinstance(d.get("peak_rss_mb"), (int, float))]
    f["peak_rss_mb"] = max(rss) if rss else None
    f["broker_peak_rss_mb"] = sampler.peak_rss_mb("broker")
    # Preloaded events wait in the topic before any worker runs: latency means nothing there.
    lat = (chk.get("latency_recv_ms") or {}) if a.rate > 0 else {}
    steady = (chk.get("latency_recv_steady_ms") or {}) if a.rate > 0 else {}
    produced = (chk.get("latency_produced_steady_ms") or {}) if a.rate > 0 else {}
    for p in ("p50", "p95", "p99"):
        f[f"latency_{p}_ms"] = lat.get(p)
        f[f"latency_steady_{p}_ms"] = steady.get(p)
    f["latency_steady_to_output_p99_ms"] = produced.get("p99")
    f["duplicate_outputs"] = chk.get("duplicates")
    f["duplicates_new_event_id"] = chk.get("duplicates_new_event_id")
    f["max_output_gap_s"] = chk.get("max_recv_gap_s")
    gaps = chk.get("gaps") or []
    part_gaps = chk.get("partition_gaps") or {}

    def partition_gap_after(at: float) -> float | None:
        after = [g[1] for g in part_gaps.values() if g[0] + g[1] > at]
        return round(max(after), 3) if after else None

    if a.join_at is not None and len(workers) > 1 and workers[1].started_at:
        at = workers[1].started_at
        f["join_pause_s"], f["join_pause_starts_s_after_join"] = _largest_gap_after(gaps, at)
        f["join_partition_gap_s"] = partition_gap_after(at)
    if a.kill_at is not None:
        killed = [w for w in workers if w.killed_at]
        if killed:
            at = killed[0].killed_at
            f["failover_gap_s"], f["failover_gap_starts_s_after_kill"] = _largest_gap_after(gaps, at)
            f["failover_partition_gap_s"] = partition_gap_after(at)
    return f
