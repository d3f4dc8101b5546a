"""A broker of a test's own, which the test can pause or replace by an empty one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port
from stream_triggers.storages import kafka as kafka_storage

PARTITIONS = 4


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

    def restart_empty(self) -> None:
        """Stop the broker (its data goes with it), start an empty one, recreate the topics."""
        self.broker.stop(remove_log=False)
        self.generation += 1
        self.broker = self._start()
        create_topics(self.bootstrap, self.topics, partitions=PARTITIONS)
        # The application restarts too: the kafka storage's process-wide idempotent producer,
        # still bound to the lost cluster, had an event unacknowledged for 30 s when reused
        # (see docs/faults.md).
        self.forget_application_producer()

    def forget_application_producer(self) -> None:
        producer = kafka_storage._producers.pop(self.bootstrap, None)
        if producer is not None:
            producer.flush(0)

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
