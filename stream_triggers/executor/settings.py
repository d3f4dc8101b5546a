"""What an executor process is told: where, which tasks, how many at once, how long to wait."""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExecutorSettings", "import_task_modules"]

log = logging.getLogger(__name__)


@dataclass
class ExecutorSettings:
    bootstrap: str
    imports: list[str] = field(default_factory=list)
    runner: str = "kafka"
    group: str | None = None
    topic_prefix: str = "triggers"
    concurrency: int = 4
    max_in_flight: int = 1_000
    """Requests taken and not yet reported (queued for the pool, running, cooling down)
    beyond which fetching pauses; queued ones are handed back on revoke and shutdown."""
    session_timeout_ms: int = 6_000
    fetch_wait_ms: int = 100
    """How long the broker may hold a fetch of task requests that finds nothing.  Apache Kafka
    answers it when a request arrives; Tansu looks again at half the time left, so there a
    request may wait up to half this more.  With 10 an idle executor fetched a hundred times a
    second, which kept an idle Tansu at 8 % of a core (``bench/idle.py --process executor``)."""
    max_poll_interval_ms: int = 300_000
    report_timeout_s: float = 10.0
    """How long one attempt to report an outcome waits for the broker's acknowledgement.
    A failed attempt is retried (the request stays uncommitted) until the executor stops."""
    shutdown_timeout_s: float = 20.0
    """Bound on a shutdown (tasks in hand, flush, commit, leaving the group), so SIGTERM ends
    the process even while the broker does not answer (fits Kubernetes' default 30 s grace
    period); a revoke waits as long for the tasks of the partitions it takes away."""
    max_report_bytes: int | None = None
    """Largest status report the executor publishes; an outcome above it is reported as
    ``failed`` (:class:`~stream_triggers.executor.reports.OutcomeTooLarge`) instead.
    Default: ``message.max.bytes`` of ``kafka_config`` (librdkafka's 1,000,000) less 1 KiB."""
    kafka_config: dict[str, Any] = field(default_factory=dict)
    """The user's librdkafka settings (security, timeouts...), for every client the executor builds."""
    consumer_config: dict[str, Any] = field(default_factory=dict)

    @property
    def group_id(self) -> str:
        return self.group or f"stream-triggers-executor-{self.runner}"


def import_task_modules(modules: Iterable[str]) -> dict[str, str]:
    """Import the modules defining tasks; returns module -> error for those that failed."""
    errors = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            errors[module] = "".join(traceback.format_exception_only(exc)).strip()
            log.error("cannot import task module %s: %s", module, errors[module])
    return errors
