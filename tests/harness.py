"""Real processes for the executor and CLI suites (tests/executor, tests/cli).

Workers, executors, the broker command and the demo run as subprocesses of the real
CLI, each logging to a file of its own; they are stopped by PID only (SIGTERM, or
SIGKILL for crash tests), and whatever a test leaves running is killed at teardown.
The application side publishes through ``TriggerManager(KafkaStorage(...))`` as a user
would, and reads sessions back the same way (the state the workers committed).

Every wait polls a condition until a deadline, never a blind sleep: process start-up
plus a Tansu group join take a few seconds, and other jobs share the two CPUs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from stream_triggers.engine import SessionState
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound
from stream_triggers.types import TaskInstance

__all__ = [
    "CLI",
    "Pipeline",
    "Proc",
    "Record",
    "committed_offset",
    "read_topic",
    "run_cli",
    "uid_on_partition",
    "wait_until",
]

WAIT_S = 45.0
"""Default deadline for anything the pipeline must do (start-up and group joins included)."""
SESSION_TIMEOUT_MS = "3000"
"""Group session timeout of the processes the tests start: joins take about half of it, and a
SIGKILLed member is noticed after it (the CLI's default is 6 s)."""


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_TRIGGERS_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, input: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``stream-triggers ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [*CLI, *args], input=input, capture_output=True, text=True, env=cli_env(env), timeout=timeout, check=False
    )


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S, every: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


_PARTITIONS_LINE = re.compile(r"\b(assigned|revoked) (?:task-runs )?partitions \[([0-9, ]*)\]")


class Proc:
    """One long-running CLI process (worker, executor, broker, demo); output to a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*CLI, *args],
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

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
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

    def option(self, name: str) -> str:
        """The value the process was started with for ``name`` (e.g. ``--group``)."""
        return self.args[self.args.index(name) + 1]

    def wait_log(self, text: str, timeout: float = WAIT_S) -> None:
        """Wait until the log contains ``text`` (AssertionError with the log's tail otherwise)."""

        def seen() -> bool:
            if text in self.log():
                return True
            if not self.running:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            return False

        try:
            wait_until(seen, f"{self.name} logging {text!r}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def wait_owning(self, timeout: float = WAIT_S) -> set[int]:
        """Wait until the process owns at least one partition; returns them."""
        self.wait_log("assigned", timeout)
        return wait_until(lambda: self.owned(), f"{self.name} owning partitions", timeout)

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


class Pipeline:
    """The processes of one topic prefix, and the application's view of its sessions.

    Workers and executors get consumer groups of this pipeline's own, so pipelines of
    different tests never rebalance each other.
    """

    def __init__(self, bootstrap: str, topics: Topics, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.tmp_path = tmp_path
        self.id = uuid.uuid4().hex[:8]
        self.started: list[Proc] = []
        self._producer: Producer | None = None

    def _common(self) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--topic-prefix", self.topics.prefix]

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, args, self.tmp_path / f"{name}-{len(self.started)}.log")
        self.started.append(proc)
        return proc

    def worker(self, *extra: str, name: str = "worker") -> Proc:
        state = self.tmp_path / f"state-{name}-{len(self.started)}"
        args = ["worker", *self._common(), "--state-dir", str(state), "--group", f"workers-{self.id}"]
        return self._start(name, [*args, "--session-timeout-ms", SESSION_TIMEOUT_MS, *extra])

    def executor(
        self,
        *extra: str,
        name: str = "executor",
        runner: str | None = None,
        imports: Iterable[str] = ("stream_triggers.cli.demo_tasks",),
    ) -> Proc:
        group = f"executors-{runner or 'kafka'}-{self.id}"
        args = ["executor", *self._common(), "--group", group, "--session-timeout-ms", SESSION_TIMEOUT_MS]
        for module in imports:
            args += ["--import", module]
        if runner is not None:
            args += ["--runner", runner]
        return self._start(name, [*args, *extra])

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill()
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None  # disconnects (Tansu waits for connected clients when it stops)

    def report(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail(40)}" for p in self.started)

    # -- the application side ------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        """The application's producer: murmur2_random, as every producer of the project."""
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "linger.ms": 1,
                    "partitioner": "murmur2_random",
                }
            )
        return self._producer

    def storage(self, uid: str, **options: Any) -> KafkaStorage:
        """The kafka storage of a session, on the pipeline's own producer (not the process-wide one)."""
        return KafkaStorage(uid, self.bootstrap, self.topics.prefix, producer=self.producer, **options)

    def manager(self, uid: str) -> TriggerManager:
        return TriggerManager(self.storage(uid))

    def state(self, uid: str) -> SessionState | None:
        """The session as the workers last committed it (None before any commit)."""
        try:
            return self.storage(uid, timeout_s=15).state
        except SessionNotFound:
            return None

    def wait_session(
        self, uid: str, condition: Callable[[SessionState], Any], what: str, timeout: float = WAIT_S
    ) -> SessionState:
        """Poll the committed state of ``uid`` until ``condition(state)`` holds; returns that state."""
        last: list[SessionState | None] = [None]

        def check() -> SessionState | None:
            state = last[0] = self.state(uid)
            return state if state is not None and condition(state) else None

        try:
            return wait_until(check, f"session {uid}: {what}", timeout, every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last state: {describe(last[0])}\n{self.report()}") from None

    def wait_status(self, uid: str, instance: str, status: str, timeout: float = WAIT_S) -> TaskInstance:
        state = self.wait_session(
            uid,
            lambda s: instance in s.instances and s.instances[instance].status == status,
            f"{instance} {status}",
            timeout,
        )
        return state.instances[instance]

    def wait_finalized(self, uid: str, timeout: float = WAIT_S) -> SessionState:
        return self.wait_session(uid, lambda s: "sessionFinalized" in s.latest_kwargs, "finalized", timeout)

    def produce_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Put arbitrary bytes on a topic (for dead-letter tests)."""
        self.producer.produce(topic, value, key)
        assert self.producer.flush(15) == 0


def describe(state: SessionState | None) -> str:
    if state is None:
        return "none committed"
    return ", ".join(f"{name}={instance.status}" for name, instance in state.instances.items()) or "no instances"


def uid_on_partition(prefix: str, partitions: int, wanted: Iterable[int]) -> str:
    """A fresh session UID whose records land on one of the ``wanted`` partitions."""
    wanted = set(wanted)
    while True:
        uid = f"{prefix}-{uuid.uuid4().hex[:8]}"
        if partition_for(uid.encode(), partitions) in wanted:
            return uid


@dataclass(frozen=True)
class Record:
    """One record of a topic; ``type`` is None when it would not decode."""

    type: str | None
    value: dict[str, Any]
    key: bytes | None
    partition: int
    offset: int
    raw: bytes | None

    def __getitem__(self, field: str) -> Any:
        return self.value[field]


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Record]:
    """Every record of ``topic`` as the broker has it now (read to each partition's end, no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        }
    )
    records: list[Record] = []
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: end of partitions not reached in {timeout} s"
            for message in consumer.consume(1000, 0.1):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                raw = message.value()
                try:
                    type_name, value = decode(raw or b"")
                except CodecError:
                    type_name, value = None, {}
                records.append(Record(type_name, value, message.key(), message.partition(), message.offset(), raw))
    finally:
        consumer.close()
    return records


def committed_offset(bootstrap: str, topic: str, group: str, partition: int) -> int:
    """The offset ``group`` committed on ``topic[partition]`` (negative: none), without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [committed] = consumer.committed([TopicPartition(topic, partition)], timeout=15)
        return committed.offset
    finally:
        consumer.close()
