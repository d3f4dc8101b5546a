"""Our worker processes, the sampler of their CPU and memory, and stopping by PID."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from stream_triggers.kafka.topics import Topics

from .common import (
    STOP_TIMEOUT_S,
    log,
)

_ASSIGNED = re.compile(r"assigned partitions \[\d")
_ENGINE = re.compile(r"(?<![\w.])engine[\"']?\s*[=:]\s*[\"']?([A-Za-z][\w.-]*)")  # not "x.engine: ..."


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
            log(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            os.kill(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage


def high_water_mark(pid: int) -> int:
    """Bytes of the process's RSS high-water mark (``VmHWM``; 0 where /proc does not say)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """CPU seconds and RSS high-water mark of named processes every ``period`` s (psutil).

    The peak RSS of a process is its own high-water mark (``VmHWM``: every page it ever
    held at once, sampled peaks in between included), not ``wait4``'s ``ru_maxrss``:
    Linux counts in that the parent's RSS when it spawned the child (a 300 MB parent's
    ``/bin/true`` reports 300 MB), so a worker started late in a long run reported the
    harness's memory as its own.
    """

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True, name="sampler")
        self.period = period
        self.procs: dict[str, psutil.Process] = {}
        self.samples: dict[str, list[tuple[float, float, int]]] = {}
        """name -> ``(time, CPU seconds, RSS high-water mark in bytes)`` per sample."""
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
                    peak = max(proc.memory_info().rss, high_water_mark(proc.pid))  # (RSS where /proc has no VmHWM)
                    self.samples[name].append((now, cpu.user + cpu.system, peak))
                except psutil.Error:
                    pass
            self.done.wait(self.period)

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(5)

    def peak_rss_mb(self, name: str) -> float | None:
        """The process's peak RSS: its high-water mark at the last sample (MB)."""
        samples = self.samples.get(name)
        return round(max(s[2] for s in samples) / 2**20, 1) if samples else None

    def names(self) -> list[str]:
        with self.lock:
            return list(self.procs)

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

    def engine(self) -> str | None:
        """The engine the worker reports: its stats' ``engine`` field, else an ``engine=...`` log line."""
        stats = self.stats() or {}
        if isinstance(stats.get("engine"), str):
            return stats["engine"]
        try:
            found = _ENGINE.search(self.log_path.read_text(errors="replace"))
        except OSError:
            return None
        return found.group(1) if found else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_command(
    a: argparse.Namespace, bootstrap: str, topics: Topics, group: str, state_dir: Path, stats: Path
) -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "stream_triggers.cli"]
    cmd = base + ["worker", "--bootstrap", bootstrap, "--state-dir", str(state_dir), "--group", group]
    cmd += ["--topic-prefix", topics.prefix, "--stats-out", str(stats)]
    for option, value in (
        ("--fetch-wait-ms", a.worker_fetch_wait_ms),
        ("--linger-ms", a.worker_linger_ms),
        ("--fetch-min-bytes", a.worker_fetch_min_bytes),
        ("--checkpoint-interval-ms", a.worker_checkpoint_interval_ms),
        ("--batch-size", a.batch_size),
    ):
        if value is not None:
            cmd += [option, str(value)]
    for setting in a.worker_kafka:
        cmd += ["-X", setting]
    return cmd


def start_profiler(out: str, pid: int) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    binary = str(exe) if exe.exists() else shutil.which("py-spy")
    if binary is None:
        log("py-spy not found (pip install py-spy); no profile")
        return None
    cmd = [binary, "record", "--pid", str(pid), "--rate", "100", "-o", out]
    if out.endswith((".txt", ".folded")):
        cmd += ["--format", "raw"]
    elif out.endswith(".json"):
        cmd += ["--format", "speedscope"]
    log("profiling: " + shlex.join(cmd))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
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
