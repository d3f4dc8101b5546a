"""What the fault suite's tests share: a broker a test can pause or replace by an empty
one, and the part of a session's state that two runs of the same inputs must agree on."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port
from stream_triggers.storages import kafka as kafka_storage
from stream_triggers.types import TaskInstance

from .app import App
from .brokers import PARTITIONS


class RestartableBroker:
    """A broker of this test's own on a fixed port, which can be paused, or replaced by an empty one."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.generation = 0
        self.broker = self._start()
        self.bootstrap = self.broker.bootstrap
        self.topics = Topics(prefix="lost")
        create_topics(self.bootstrap, self.topics, partitions=PARTITIONS)

    def _start(self) -> EmbeddedBroker:
        log = self.tmp_path / f"tansu-{self.generation}.log"
        return EmbeddedBroker(port=self.port, log_path=log).start()

    def restart_empty(self, *apps: App) -> None:
        """Stop the broker (its data goes with it), start an empty one, recreate the topics.

        The ``apps`` restart too: an idempotent producer still bound to the lost cluster
        (theirs, or the kafka storage's process-wide one) had an event unacknowledged for
        30 s when reused (see docs/faults.md).
        """
        self.broker.stop(remove_log=False)
        self.generation += 1
        self.broker = self._start()
        create_topics(self.bootstrap, self.topics, partitions=PARTITIONS)
        for app in apps:
            app.close()
        self.forget_application_producer()

    def forget_application_producer(self) -> None:
        """Drop the kafka storage's process-wide producers bound to this broker (without waiting)."""
        for key in [key for key in kafka_storage._producers if key[0] == self.bootstrap]:
            kafka_storage._producers.pop(key).flush(0)

    def pause(self) -> None:
        """SIGSTOP the broker process: it holds every connection and answers nothing."""
        os.kill(self._pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._pid(), signal.SIGCONT)

    def _pid(self) -> int:
        pid = self.broker.pid
        assert pid is not None, "the broker is not running"
        return pid

    def stop(self) -> None:
        self.broker.stop(remove_log=False)


def projection(state: Any) -> dict[str, Any]:
    """What must be equal between two runs of the same inputs: everything but the timestamps."""
    if state is None:
        return {}
    instances = {}
    for name, instance in state.instances.items():
        metadata = {k: v for k, v in instance.metadata.items() if k != TaskInstance.META_TIMESTAMPS}
        instances[name] = (str(instance.status), dict(instance.kwargs), metadata, sorted(instance.abandon_state))
    return {
        "tasks": sorted(state.tasks),
        "instances": instances,
        "latest_kwargs": {k: dict(v) for k, v in state.latest_kwargs.items()},
    }
