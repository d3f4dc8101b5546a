"""Waiting for something to happen: poll a condition until a deadline, never a blind sleep.

Process start-up plus a Tansu group join take a few seconds (about half of
``session.timeout.ms``), and other jobs share the two CPUs, so every deadline is generous
while the wait itself ends as soon as the condition holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

WAIT_S = 45.0
"""Default deadline for anything a process must do (start-up and group joins included)."""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S, every: float = 0.2) -> Any:
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)
