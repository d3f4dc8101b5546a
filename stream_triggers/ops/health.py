"""Liveness and readiness of a long-running process (``/healthz``, ``/readyz``).

Read through :class:`Probed`, a small protocol that the stream worker and the task
executor satisfy (both are :class:`~stream_triggers.ops.lifecycle.Lifecycle`s), so this
module never imports either.

* alive: the loop turned within ``stall_after`` seconds (or it has not started yet and
  the process is younger than that); once the loop has run and stopped, not alive;
* ready: alive, and ``ready`` is set right now.  The process clears ``ready`` whenever
  it serves nothing (a worker that owns no partitions, or is restoring them; an executor
  with no task-runs partition), and every probe reads it afresh: readiness is never
  cached, so it turns false as soon as the process loses its partitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["DEFAULT_STALL_AFTER", "Health", "Probed"]

DEFAULT_STALL_AFTER = 180.0
"""Seconds without a loop turn after which ``/healthz`` fails (a batch flush may take 60 s)."""


class Probed(Protocol):
    """What the probes read: the loop's last turn and the readiness flag."""

    @property
    def loop_at(self) -> float | None:
        """``time.monotonic()`` of the last loop turn; None unless the loop runs."""

    @property
    def ready(self) -> threading.Event:
        """Set while the process serves."""


class Health:
    """Liveness and readiness of a process whose loop stamps ``loop_at`` (monotonic seconds)."""

    def __init__(
        self,
        target: Probed,
        stall_after: float = DEFAULT_STALL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.stall_after = stall_after
        self.clock = clock
        self.created = clock()
        self._seen_running = False

    def alive(self) -> tuple[bool, str]:
        now = self.clock()
        loop_at = self.target.loop_at
        if loop_at is None:
            if self._seen_running:
                return False, "stopped"
            if now - self.created < self.stall_after:
                return True, "starting"
            return False, f"loop not started after {now - self.created:.0f} s"
        self._seen_running = True
        age = now - loop_at
        if age > self.stall_after:
            return False, f"loop stalled for {age:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        alive, why = self.alive()
        if not alive:
            return False, why
        if not self.target.ready.is_set():
            return False, "serving no partitions (none assigned, or not restored yet)"
        return True, "ready"
