"""Long-running ``stream-triggers`` processes (worker, executor, broker, demo), stopped by PID only.

Each process logs to a file of its own; what it owns and whether it restored is read back
from that log.  SIGTERM stops a process cleanly, SIGKILL is a crash; nothing is ever
stopped by name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .waits import WAIT_S, wait_until


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    if script.exists():
        return [str(script)]
    found = shutil.which("stream-triggers")
    return [found] if found else [sys.executable, "-m", "stream_triggers.cli"]


CLI = _cli()
"""How to run ``stream-triggers`` (the console script of this environment)."""


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI process: no STREAM_TRIGGERS_* leaking in from outside."""
    # The engine the test run asked for (tests/conftest.py) and the fault suite's injections.
    keep = ("STREAM_TRIGGERS_ENGINE",)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_TRIGGERS_") or k in keep}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, input: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``stream-triggers ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [*CLI, *args], input=input, capture_output=True, text=True, env=cli_env(env), timeout=timeout, check=False
    )


_PARTITIONS_LINE = re.compile(r"\b(assigned|revoked) (?:task-runs )?partitions \[([0-9, ]*)\]")
_RESTORED_LINE = re.compile(r"\brestored partitions \[[0-9, ]*\]: (\d+) changelog records")


class Proc:
    """One long-running CLI process; its output (stdout and stderr) goes to ``log_path``.

    ``wrapper``: a command that runs the CLI (``exec "$@"``), e.g. in a mount namespace of its own.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*wrapper, *CLI, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(env),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def state_dir(self) -> str:
        """The worker's ``--state-dir``."""
        return self.option("--state-dir")

    def option(self, name: str) -> str:
        """The value the process was started with for ``name`` (e.g. ``--group``)."""
        return self.args[self.args.index(name) + 1]

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def owned(self) -> set[int] | None:
        """Partitions owned according to the log (None: never assigned yet)."""
        owned: set[int] | None = None
        for kind, numbers in _PARTITIONS_LINE.findall(self.log()):
            parts = {int(n) for n in numbers.replace(" ", "").split(",") if n}
            if kind == "assigned":
                owned = (owned or set()) | parts
            elif owned is not None:
                owned -= parts
        return owned

    def assignments(self) -> int:
        """How many times the process was assigned partitions so far."""
        return sum(1 for kind, _ in _PARTITIONS_LINE.findall(self.log()) if kind == "assigned")

    def restored(self) -> int:
        """Changelog records a worker restored so far, by its log."""
        return sum(int(n) for n in _RESTORED_LINE.findall(self.log()))

    def _alive(self) -> None:
        if not self.running:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def wait_log(self, text: str, timeout: float = WAIT_S) -> None:
        """Wait until the log contains ``text`` (AssertionError with the log's tail otherwise)."""

        def seen() -> bool:
            if text in self.log():
                return True
            self._alive()
            return False

        try:
            wait_until(seen, f"{self.name} logging {text!r}", timeout, every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def wait_owning(self, timeout: float = WAIT_S) -> set[int]:
        """Wait until the process owns at least one partition; returns them."""
        self.wait_log("assigned", timeout)
        return wait_until(lambda: self.owned(), f"{self.name} owning partitions", timeout, every=0.1)

    def wait_assigned(self, timeout: float = WAIT_S, after: int = 0) -> set[int]:
        """Wait for assignment number ``after + 1`` (an empty one counts); returns the partitions owned."""

        def assigned() -> bool:
            self._alive()
            return self.assignments() > after

        try:
            wait_until(assigned, f"{self.name} assigned partitions", timeout, every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None
        return self.owned() or set()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM by PID, wait for the exit; returns the exit code."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL by PID (a crash) and reap it."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
