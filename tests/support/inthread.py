"""A stream worker running in a thread of the test process (for tests that reach into it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stream_triggers.stream.worker import StreamWorker, WorkerSettings


@contextmanager
def worker_in_thread(settings: WorkerSettings) -> Iterator[StreamWorker]:
    """Start a worker on ``settings``, wait until it serves, stop it (and its thread) after."""
    running = StreamWorker(settings)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        assert running.ready.wait(45)
        yield running
    finally:
        running.stop()
        thread.join(60)
        assert not thread.is_alive()
