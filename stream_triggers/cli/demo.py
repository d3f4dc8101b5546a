"""``stream-triggers demo``: the getting-started questionnaire on a real broker, end to end.

What it does, step by step (each step printed as it happens):

1. start the embedded Tansu broker and create the topics under the prefix ``demo``;
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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from stream_triggers.cli.demo_plan import Plan, plan_sessions
from stream_triggers.cli.demo_watch import Watcher, clock, committed_states, print_outcomes
from stream_triggers.cli.options import env_option

__all__ = ["demo", "run_demo"]

PREFIX = "demo"
PARTITIONS = 4
TIMEOUT_S = 45.0
"""How long sessions get to finalize once their triggers are fired."""

Echo = Callable[[str], Any]


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
                    echo(f"{clock(started)} stopped {child.name} (pid {child.pid}, exit code {exit_code})")
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
    from stream_triggers.kafka import clients
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

    watcher = Watcher(bootstrap, topics, PARTITIONS, echo, started)
    # A producer of our own, dropped before the broker stops (Tansu waits for connected clients).
    producer = clients.producer(bootstrap, "demo")
    managers = {
        uid: TriggerManager(KafkaStorage(uid, bootstrap, PREFIX, producer=producer)) for uid in plan.configurations
    }
    try:
        for uid, configuration in plan.configurations.items():
            managers[uid].update_configuration(configuration)
            echo(f"{clock(started)} configure {uid}: {', '.join(configuration)}")
        for step in plan.fires:
            managers[step.session].fire(step.trigger, step.kwargs)
            kwargs = f" {json.dumps(step.kwargs, separators=(', ', ': '))}" if step.kwargs else ""
            echo(f"{clock(started)} fire      {step.session} {step.trigger}{kwargs}")
            watcher.poll(0)
        echo(f"{clock(started)} all {len(plan.fires)} triggers fired; waiting for the tasks to run")

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
        echo(f"{clock(started)} outcome")
        states = committed_states(bootstrap, topics, PARTITIONS, set(plan.configurations))
        print_outcomes(plan, states, echo)
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


@click.command()
@env_option(
    "--sessions",
    env="DEMO_SESSIONS",
    type=int,
    default=3,
    show_default=True,
    help="Questionnaire sessions to run.",
)
@env_option(
    "--seed",
    env="DEMO_SEED",
    type=int,
    default=7,
    show_default=True,
    help="Seed of the shuffled trigger order and the answers (same seed, same run).",
)
@env_option(
    "--metrics-port",
    env="DEMO_METRICS_PORT",
    type=int,
    default=None,
    help="Worker metrics port (executor: +1) [default: no metrics].",
)
def demo(sessions: int, seed: int, metrics_port: int | None) -> None:
    """Start a broker, topics, a worker and an executor; run the questionnaire example."""
    sys.exit(run_demo(sessions=sessions, seed=seed, metrics_port=metrics_port, echo=click.echo))
