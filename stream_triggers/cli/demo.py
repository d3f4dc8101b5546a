"""``stream-triggers demo``: the getting-started questionnaire on a real broker, end to end.

What it does, step by step (each step printed as it happens):

1. start the embedded Tansu broker and create the six topics under the prefix ``demo``;
2. start one stream worker and one task executor as separate processes, through the
   very CLI a deployment uses (``stream-triggers worker ...``, ``stream-triggers executor
   --import stream_triggers.cli.demo_tasks ...``);
3. configure several questionnaire sessions and fire their triggers in a shuffled order,
   interleaved across sessions, plus the cookbook's "super session": an applicant's
   ``applicant:<id>`` session whose ``t_compareResponses`` waits for page 3 of a Flora and
   page 6 of a Fauna questionnaire, fed by those two questionnaires' sessions;
4. tail ``task-runs``, ``task-results`` and ``sessions`` and print what arrives, until every
   session is finalized and no requested task is still running;
5. print each session's outcome (instances, statuses, results), stop the processes by
   PID and the broker - also on Ctrl-C or SIGTERM.

Deterministic for a given ``--seed`` (the tasks are too, see :mod:`stream_triggers.cli.demo_tasks`);
exit code 0 when every session finalized in time, 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_triggers.cli.demo_tasks import QUESTIONNAIRE, SUPER_SESSION
from stream_triggers.types import TERMINAL_STATUSES

__all__ = ["run_demo", "plan_sessions"]

PREFIX = "demo"
PARTITIONS = 4
TIMEOUT_S = 45.0
"""How long sessions get to finalize once their triggers are fired."""

_NAMES = ("Marcus", "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret")
_AGENTS = ("Firefox/126.0", "Chrome/125.0.6422", "Safari/17.4")
_QUESTIONS = ("likesPlants", "likesAnimals", "outdoors", "city", "gardens", "pets", "hikes", "zoo")
_TERMINAL = TERMINAL_STATUSES

Echo = Callable[[str], Any]


@dataclass
class Fire:
    """One step of the plan: a trigger (with kwargs) fired for a session."""

    session: str
    trigger: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    configurations: dict[str, dict[str, Any]]
    """Session UID -> configuration, in the order the sessions start."""
    fires: list[Fire]


def plan_sessions(sessions: int, seed: int) -> Plan:
    """The demo's sessions and the (shuffled, interleaved) triggers fired for them."""
    rng = random.Random(seed)
    configurations: dict[str, dict[str, Any]] = {}
    per_session: dict[str, list[list[Fire]]] = {}

    def questionnaire(uid: str, pages: int, embedded: bool, super_uid: str | None = None) -> None:
        configurations[uid] = QUESTIONNAIRE
        name = rng.choice(_NAMES)
        agent = rng.choice(_AGENTS)
        # Each inner list is fired as one step: a page, then (if any) the super session's trigger.
        steps: list[list[Fire]] = []
        for number in range(1, pages + 1):
            responses = {q: rng.choice(("yes", "no")) for q in rng.sample(_QUESTIONS, 3)}
            step = [Fire(uid, "pageReceived", {"number": number, "responses": responses, "userAgent": agent})]
            if number == 1:
                step.insert(0, Fire(uid, "firstPageReceived", {"responses": {"name": name, **responses}}))
            if super_uid is not None:
                kind = uid.split(":")[0]
                step.append(Fire(super_uid, f"{kind}_page{number}", {"responses": responses}))
            steps.append(step)
        steps.append([Fire(uid, "questionnaireComplete")])
        if embedded:
            steps.append([Fire(uid, "isEmbeddedApplication")])
        rng.shuffle(steps)
        per_session[uid] = steps

    for n in range(1, sessions + 1):
        questionnaire(f"questionnaire-{n}", pages=rng.randint(2, 4), embedded=n % 3 == 0)
    applicant = f"applicant:{rng.randint(1000, 9999)}"
    configurations[applicant] = SUPER_SESSION
    number = applicant.split(":")[1]
    questionnaire(f"flora:{number}", pages=4, embedded=False, super_uid=applicant)
    questionnaire(f"fauna:{number}", pages=6, embedded=False, super_uid=applicant)

    fires: list[Fire] = []
    while per_session:
        uid = rng.choice(sorted(per_session))
        fires.extend(per_session[uid].pop(0))
        if not per_session[uid]:
            del per_session[uid]
    return Plan(configurations, fires)


class _Child:
    """A worker or executor process started through the CLI, logging to a file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        command = [sys.executable, "-m", "stream_triggers.cli", *args]
        self.shown = "stream-triggers " + " ".join(args)
        with open(log_path, "wb") as log:
            # Own session: a terminal's Ctrl-C reaches the demo only, which stops us in order.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (finish in-flight work, commit, leave), SIGKILL after ``timeout`` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class _Interrupted(Exception):
    """SIGTERM: stop everything and leave (Ctrl-C is a KeyboardInterrupt already)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise _Interrupted()


@contextmanager
def _signals(handler: Any) -> Iterator[None]:
    """SIGTERM (and, when ignoring, SIGINT) handled by ``handler`` within the block (main thread only)."""
    sigs = (signal.SIGTERM,) if handler is _interrupt else (signal.SIGTERM, signal.SIGINT)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in sigs}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(
    sessions: int = 3,
    seed: int = 7,
    metrics_port: int | None = None,
    echo: Echo = print,
    timeout: float = TIMEOUT_S,
) -> int:
    """Run the demo; returns the exit code (0 all sessions finalized, 1 not, 130 interrupted)."""
    from stream_triggers.ops.broker import BrokerError, EmbeddedBroker

    if sessions < 1:
        echo("error: --sessions must be at least 1")
        return 2
    started = time.monotonic()
    plan = plan_sessions(sessions, seed)
    workdir = Path(tempfile.mkdtemp(prefix="stream-triggers-demo-"))
    broker = EmbeddedBroker(log_path=workdir / "tansu.log")
    children: list[_Child] = []
    code = 1
    with _signals(_interrupt):
        try:
            echo(
                f"stream-triggers demo: {sessions} questionnaire(s) and the cookbook's applicant super session "
                f"({len(plan.configurations)} sessions, seed {seed})"
            )
            broker.start()
            echo(f"broker    Tansu (pid {broker.pid}) on {broker.bootstrap}")
            if _run(broker.bootstrap, plan, workdir, children, metrics_port, echo, started, timeout):
                code = 0
        except BrokerError as exc:
            echo(f"error: {exc}")
        except (KeyboardInterrupt, _Interrupted):
            echo("interrupted: stopping the executor, the worker and the broker")
            code = 130
        finally:
            with _signals(signal.SIG_IGN):  # the clean-up is bounded; let it finish
                for child in reversed(children):  # executor first: its last reports reach the worker
                    exit_code = child.stop()
                    echo(f"{_clock(started)} stopped {child.name} (pid {child.pid}, exit code {exit_code})")
                broker.stop()
                if code == 1:
                    echo(f"logs kept in {workdir}")
                else:
                    shutil.rmtree(workdir, ignore_errors=True)
                echo(f"done in {time.monotonic() - started:.1f} s")
    return code


def _run(
    bootstrap: str,
    plan: Plan,
    workdir: Path,
    children: list[_Child],
    metrics_port: int | None,
    echo: Echo,
    started: float,
    timeout: float,
) -> bool:
    from confluent_kafka import Producer

    from stream_triggers.kafka.topics import Topics, create_topics
    from stream_triggers.manager import TriggerManager
    from stream_triggers.storages.kafka import KafkaStorage

    topics = Topics(PREFIX)
    create_topics(bootstrap, topics, partitions=PARTITIONS)
    echo(f"topics    {', '.join(topics.all)} ({PARTITIONS} partitions)")
    # A short group session timeout: one machine, and joins take about half of it on Tansu.
    common = ["--bootstrap", bootstrap, "--topic-prefix", PREFIX, "--session-timeout-ms", "3000"]
    worker_args = ["worker", *common, "--state-dir", str(workdir / "state"), "--group", f"{PREFIX}-workers"]
    executor_args = ["executor", *common, "--import", "stream_triggers.cli.demo_tasks"]
    executor_args += ["--group", f"{PREFIX}-executors"]
    if metrics_port is not None:
        worker_args += ["--metrics-port", str(metrics_port)]
        executor_args += ["--metrics-port", str(metrics_port + 1)]
    for name, args in (("worker", worker_args), ("executor", executor_args)):
        child = _Child(name, args, workdir / f"{name}.log")
        children.append(child)
        echo(f"{name:<9} pid {child.pid}: {child.shown}")
    if metrics_port is not None:
        echo(f"metrics   http://127.0.0.1:{metrics_port}/metrics (worker), :{metrics_port + 1} (executor)")

    watcher = _Watcher(bootstrap, topics, echo, started)
    # A producer of our own, dropped before the broker stops (Tansu waits for connected clients).
    # murmur2_random, like every producer of the project: a session's events must share a partition.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1, "partitioner": "murmur2_random"}
    )
    managers = {
        uid: TriggerManager(KafkaStorage(uid, bootstrap, PREFIX, producer=producer)) for uid in plan.configurations
    }
    try:
        for uid, configuration in plan.configurations.items():
            managers[uid].update_configuration(configuration)
            echo(f"{_clock(started)} configure {uid}: {', '.join(configuration)}")
        for step in plan.fires:
            managers[step.session].fire(step.trigger, step.kwargs)
            kwargs = f" {_json(step.kwargs)}" if step.kwargs else ""
            echo(f"{_clock(started)} fire      {step.session} {step.trigger}{kwargs}")
            watcher.poll(0)
        echo(f"{_clock(started)} all {len(plan.fires)} triggers fired; waiting for the tasks to run")

        deadline = time.monotonic() + timeout
        wanted = set(plan.configurations)
        quiet_since = None
        while time.monotonic() < deadline:
            for child in children:
                if not child.alive():
                    echo(f"error: the {child.name} exited with code {child.process.returncode}:")
                    echo(child.log_tail())
                    return False
            if watcher.poll(0.2):
                quiet_since = None
            elif wanted <= watcher.finalized and not watcher.pending:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 0.5:  # late cascades would show by now
                    break
        missing = sorted(wanted - watcher.finalized)
        echo(f"{_clock(started)} outcome")
        _print_outcomes(plan, _committed_states(bootstrap, topics, set(plan.configurations)), echo)
        if missing:
            echo(f"error: not finalized within {timeout:.0f} s: {', '.join(missing)}")
            for child in children:
                echo(f"--- {child.name} log (last lines) ---\n{child.log_tail()}")
            return False
        echo(f"all {len(wanted)} sessions finalized ({len(watcher.finalized_events)} SessionFinalized events)")
        return True
    finally:
        watcher.close()
        managers.clear()
        del producer


class _Watcher:
    """Tails task-runs, task-results and sessions; prints what arrives and keeps count."""

    def __init__(self, bootstrap: str, topics: Any, echo: Echo, started: float) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.echo = echo
        self.started = started
        self.topics = topics
        # Topics are read side by side, so a result may show before its request does.
        self.requested: set[tuple[str, str]] = set()
        self.resolved: set[tuple[str, str]] = set()
        self.finalized: set[str] = set()
        self.finalized_events: list[str] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "stream-triggers-demo-watch",  # assign only: never joins
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        names = (topics.task_runs, topics.task_results, topics.sessions)
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for name in names for p in range(PARTITIONS)])

    @property
    def pending(self) -> set[tuple[str, str]]:
        """Requested runs without a final status yet."""
        return self.requested - self.resolved

    def poll(self, timeout: float) -> bool:
        """Print what arrived within ``timeout`` s; returns whether anything did."""
        from stream_triggers.events.codec import CodecError, decode

        messages = self._consumer.consume(500, timeout)
        seen = False
        for message in messages:
            if message.error() is not None:
                continue
            seen = True
            try:
                type_name, record = decode(message.value())
            except CodecError as exc:
                self.echo(f"{_clock(self.started)} ?         undecodable record on {message.topic()}: {exc}")
                continue
            self._show(type_name, record)
        return seen

    def _show(self, type_name: str, record: dict[str, Any]) -> None:
        uid = record["session_uid"]
        at = _clock(self.started)
        if type_name == "TaskRunRequested":
            self.requested.add((uid, record["instance"]))
            task = record["run"].rpartition(".")[2]
            self.echo(f"{at} run       {uid} {record['instance']} -> {task} (runner {record['runner']})")
        elif type_name == "InstanceStatusChanged":
            status = record["status"]
            if status in _TERMINAL:
                self.resolved.add((uid, record["instance"]))
            metadata = json.loads(record["metadata_json"])
            detail = ""
            if status == "finished":
                detail = _json(metadata.get("result", {}))
            elif status == "failed":
                detail = metadata.get("exceptionType", "")
            self.echo(f"{at} {status:<9} {uid} {record['instance']} {detail}".rstrip())
        elif type_name == "SessionFinalized":
            self.finalized.add(uid)
            self.finalized_events.append(record["event_id"])
            self.echo(f"{at} FINALIZED {uid} (SessionFinalized {record['event_id']})")

    def close(self) -> None:
        self._consumer.close()


def _committed_states(bootstrap: str, topics: Any, uids: set[str]) -> dict[str, Any]:
    """The newest committed state of each session, read from the changelog in one pass."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from stream_triggers.events.codec import CodecError, decode
    from stream_triggers.events.state_format import StateFormatError, decode_state

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "stream-triggers-demo-read",  # assign only: never joins
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    snapshots: dict[str, bytes] = {}
    try:
        consumer.assign([TopicPartition(topics.changelog, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        at_end: set[int] = set()
        deadline = time.monotonic() + 10
        while len(at_end) < PARTITIONS and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                try:
                    _, snapshot = decode(message.value())
                except CodecError:
                    continue
                if snapshot["session_uid"] in uids:
                    snapshots[snapshot["session_uid"]] = snapshot["state"]
    finally:
        consumer.close()
    states = {}
    for uid, data in snapshots.items():
        try:
            states[uid] = decode_state(data)
        except StateFormatError:
            continue
    return states


def _print_outcomes(plan: Plan, states: dict[str, Any], echo: Echo) -> None:
    from stream_triggers.cli.inspect import session_document

    for uid in plan.configurations:
        if uid not in states:
            echo(f"  {uid}: no committed state")
            continue
        document = session_document(uid, states[uid])
        flag = "finalized" if document["finalized"] else "NOT finalized"
        echo(f"  {uid} ({flag})")
        for instance in document["instances"]:
            detail = instance["result"] if instance["result"] is not None else ""
            if instance["failure"]:
                detail = instance["failure"]["message"]
            elif instance["waiting_for"]:
                detail = "waiting for " + ", ".join(instance["waiting_for"])
            shown = _json(detail) if isinstance(detail, dict) else detail
            echo(f"    {instance['name']:<28} {instance['status']:<9} {shown}".rstrip())


def _clock(started: float) -> str:
    return f"[{time.monotonic() - started:5.1f}s]"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))
