"""Bounded blocking calls: a client call that may hang while the broker does not answer.

librdkafka's synchronous commit and ``Consumer.close()`` take no timeout; a process that
must exit on SIGTERM runs them in a daemon thread and stops waiting after a limit (the
call goes on in the background until the process exits).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["bounded"]

log = logging.getLogger(__name__)


def bounded(call: Callable[[], Any], limit_s: float, what: str) -> bool:
    """Run ``call`` for at most ``limit_s`` seconds; False (and a warning) if it did not return.

    An exception ``call`` raises is logged, and counts as returned.
    """

    def target() -> None:
        try:
            call()
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)

    thread = threading.Thread(target=target, name=f"bounded-{what}", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        log.warning("%s: no answer within %s s, given up", what, limit_s)
        return False
    return True
