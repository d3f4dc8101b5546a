"""What a long-running process of the product shares: a stop flag, signals, liveness, readiness.

The stream worker and the task executor both subclass :class:`Lifecycle`; the metrics
server's health checks read any object with ``loop_at`` and ``ready`` (see
:class:`~stream_triggers.ops.health.Health`), so they never import either process.
"""

from __future__ import annotations

import signal
import threading
import time


class Lifecycle:
    """Stop flag, SIGTERM/SIGINT handling, loop heartbeat and readiness of one process."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        """Set while the process serves (e.g. partitions assigned and restored)."""
        self.loop_at: float | None = None
        """``time.monotonic()`` of the last loop turn; None unless the loop is running."""
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the loop to finish the work in hand and shut down cleanly."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for a clean stop (the loop finishes its batch first)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def heartbeat(self) -> None:
        """Stamp one loop turn (liveness); long steps such as a restore call it too."""
        self.loop_at = time.monotonic()
