"""The processes of one topic prefix (workers, executors) and the application that feeds them.

Workers and executors get consumer groups of this pipeline's own, so pipelines of
different tests never rebalance each other.  Whatever a pipeline started is killed
(by PID) when it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from stream_triggers.kafka.topics import Topics

from .app import App
from .processes import Proc

STOP_S = 15.0
"""How long a process may take to stop cleanly at teardown before it is killed."""
SESSION_TIMEOUT_MS = "3000"
"""Group session timeout of the processes a pipeline starts: joins take about half of it, and a
SIGKILLed member is noticed after it (the CLI's default is 6 s)."""
CRASH_SESSION_TIMEOUT_MS = "1500"
"""For tests that kill workers again and again (few inputs, no broker fault): each successor
waits about twice the session timeout for the group to drop the dead member and settle."""


class Pipeline(App):
    """Workers and executors of one test (or module) on ``topics``, logs under ``tmp_path``."""

    def __init__(
        self, bootstrap: str, topics: Topics, tmp_path: Path, *, session_timeout_ms: str | None = SESSION_TIMEOUT_MS
    ) -> None:
        super().__init__(bootstrap, topics)
        self.tmp_path = tmp_path
        self.id = uuid.uuid4().hex[:8]
        self.group = f"workers-{self.id}"
        """The workers' consumer group."""
        self.session_timeout_ms = session_timeout_ms
        self.started: list[Proc] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    def _common(self, group: str) -> list[str]:
        args = ["--bootstrap", self.bootstrap, "--topic-prefix", self.topics.prefix, "--group", group]
        if self.session_timeout_ms is not None:
            args += ["--session-timeout-ms", self.session_timeout_ms]
        return args

    def _start(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()
    ) -> Proc:
        proc = Proc(name, args, self.tmp_path / f"{name}-{len(self.started)}.log", env, wrapper)
        self.started.append(proc)
        return proc

    def state_dir(self, name: str) -> str:
        return str(self.tmp_path / f"state-{name}")

    def worker(
        self,
        name: str | None = None,
        *,
        state_dir: str | None = None,
        group: str | None = None,
        manager: str | None = None,
        extra: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> Proc:
        """Start ``stream-triggers worker`` (its own state dir unless ``state_dir`` is given).

        ``env``: variables for this process only (the others' environment stays clean of
        ``STREAM_TRIGGERS_*``), e.g. ``STREAM_TRIGGERS_FAULTS`` for the fault suite.
        ``wrapper``: a command the worker runs under (see :class:`Proc`).
        """
        name = name or f"w{len(self.started)}"
        args = ["worker", *self._common(group or self.group), "--state-dir", state_dir or self.state_dir(name)]
        if manager is not None:
            args += ["--manager", manager]
        return self._start(name, [*args, *extra], env, wrapper)

    def executor(
        self,
        *extra: str,
        name: str = "executor",
        runner: str | None = None,
        imports: Iterable[str] = ("stream_triggers.cli.demo_tasks",),
    ) -> Proc:
        """Start ``stream-triggers executor`` (a group per runner, importing the demo tasks)."""
        args = ["executor", *self._common(f"executors-{runner or 'kafka'}-{self.id}")]
        for module in imports:
            args += ["--import", module]
        if runner is not None:
            args += ["--runner", runner]
        return self._start(name, [*args, *extra])

    def stop_all(self) -> None:
        """Stop every process started (SIGTERM by PID, SIGKILL if ignored) and drop the application's producer.

        A clean exit lets a process write its coverage data.
        """
        for proc in self.started:
            if proc.running:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.close()

    def report(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail(60)}" for p in self.started)
