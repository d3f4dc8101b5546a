"""Every ``stream-triggers`` subcommand, run as a subprocess against the real broker.

One worker and one executor (started through the CLI) serve the module's sessions; tests
that need processes of their own (env-var configuration, the broker, the demo) start them.
Exit codes: 0 ok, 3 broker unreachable, 4 unknown session, 5 invalid input.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from stream_triggers.cli import cli as main_cli
from stream_triggers.cli.demo_tasks import QUESTIONNAIRE, FailsOnce, WhoRunsMe, subject_id
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port
from stream_triggers.types import TaskInstance
from tests.support import Pipeline, Proc, Record, read_topic, run_cli, wait_until

pytestmark = pytest.mark.broker

PARTITIONS = 4
EXIT_BROKER, EXIT_SESSION, EXIT_INPUT = 3, 4, 5
LINE = re.compile(r"^\d+:\d+ key=\S+ ")


@pytest.fixture(scope="module")
def app(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A worker and an executor on topics of the module's own."""
    topics = Topics(prefix=f"c{uuid.uuid4().hex[:12]}")
    create_topics(broker.bootstrap, topics, partitions=PARTITIONS)
    pipeline = Pipeline(broker.bootstrap, topics, tmp_path_factory.mktemp("cli"))
    pipeline.worker()
    pipeline.executor()
    try:
        yield pipeline
    finally:
        pipeline.stop_all()


def cli(app: Pipeline, *args: str, input: str | None = None, expect: int = 0) -> str:
    """``stream-triggers ARGS --bootstrap ... --topic-prefix ...``; returns stdout, checks the exit code."""
    command, *rest = args
    full = [command, "--bootstrap", app.bootstrap, "--topic-prefix", app.topics.prefix, *rest]
    done = run_cli(*full, input=input)
    assert done.returncode == expect, f"{full}: exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout if expect == 0 else done.stderr


def result(instance: TaskInstance) -> Any:
    return instance.metadata[TaskInstance.META_RESULT]


# -- topics, configure, fire, inspect ------------------------------------------------------------


def test_topics_create_makes_every_topic_then_finds_them(broker: EmbeddedBroker) -> None:
    prefix = f"c{uuid.uuid4().hex[:12]}"
    options = ["--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "--partitions", "2"]
    first = run_cli("topics", "create", *options)
    assert first.returncode == 0, first.stderr
    names = Topics(prefix).all
    assert first.stdout.splitlines() == [f"{name}: created" for name in names]
    again = run_cli("topics", "create", *options)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"{name}: exists" for name in names]


@pytest.mark.slow
def test_configure_from_a_file_and_stdin_fire_with_kwargs_and_inspect(app: Pipeline, tmp_path: Path) -> None:
    config = tmp_path / "questionnaire.json"
    config.write_text(json.dumps(QUESTIONNAIRE))
    assert cli(app, "configure", "cli-q", str(config)).strip() == "configured 3 task(s) for cli-q"
    small = json.dumps({"t_who": {"after": ["go"], "run": WhoRunsMe.name}})
    assert cli(app, "configure", "cli-small", "-", input=small).strip() == "configured 1 task(s) for cli-small"

    first = {"responses": {"name": "Marcus", "q1": "yes"}}
    assert cli(app, "fire", "cli-q", "firstPageReceived", "--kwargs", json.dumps(first)).strip() == (
        "fired firstPageReceived for cli-q"
    )
    page = {"number": 1, "responses": {"q1": "yes"}, "userAgent": "Firefox/126.0"}
    cli(app, "fire", "cli-q", "pageReceived", "--kwargs", json.dumps(page))
    cli(app, "fire", "cli-q", "questionnaireComplete")
    cli(app, "fire", "cli-small", "go")
    app.wait_finalized("cli-q")
    app.wait_finalized("cli-small")

    text = cli(app, "inspect", "cli-q")
    assert text.startswith("session cli-q: 3 task(s), 3 finished; finalized")
    for expected in ("TASK", "t_importBrowserMetadata", "isEmbeddedApplication", "INSTANCE", "RESULT / FAILURE"):
        assert expected in text
    subject = subject_id("cli-q", "Marcus")
    assert re.search(rf"t_importSubject#0 +finished .*\{{\"subjectId\": {subject}, \"name\": \"Marcus\"\}}", text)
    assert "unresolved tasks: none" in text
    assert re.search(r"questionnaireComplete +\{\}", text)

    document = json.loads(cli(app, "inspect", "cli-q", "--json"))
    assert document["session_uid"] == "cli-q"
    assert document["finalized"] is True
    assert document["unresolved_tasks"] == []
    assert {i["name"]: i["status"] for i in document["instances"]} == {
        "t_importSubject#0": "finished",
        "t_importResponses#0": "finished",
        "t_importBrowserMetadata#0": "finished",
    }
    responses = next(i for i in document["instances"] if i["name"] == "t_importResponses#0")
    assert responses["kwargs"]["t_importSubject"] == {"subjectId": subject, "name": "Marcus"}
    assert responses["result"] == {"subjectId": subject, "page": 1, "answers": 1}
    assert responses["failure"] is None
    assert set(responses["timestamps"]) >= {"created", "scheduled", "running", "finished"}
    assert document["tasks"]["t_importResponses"] == {
        "after": ["t_importSubject"],
        "andEvery": "pageReceived",
        "run": QUESTIONNAIRE["t_importResponses"]["run"],
    }
    assert document["latest_kwargs"]["pageReceived"] == page

    small_doc = json.loads(cli(app, "inspect", "cli-small", "--json"))
    assert small_doc["instances"][0]["result"]["pid"] > 0


@pytest.mark.slow
def test_replay_with_kwargs_and_skip_with_a_cascaded_result(app: Pipeline) -> None:
    configuration = json.dumps(
        {
            "t_flaky": {"after": ["go"], "run": FailsOnce.name},
            "t_next": {"after": ["t_flaky"], "run": WhoRunsMe.name},
        }
    )
    for uid in ("cli-replay", "cli-skip"):
        cli(app, "configure", uid, "-", input=configuration)
        cli(app, "fire", uid, "go")
        app.wait_status(uid, "t_flaky#0", "failed")

    document = json.loads(cli(app, "inspect", "cli-replay", "--json"))
    [failed] = [i for i in document["instances"] if i["name"] == "t_flaky#0"]
    assert failed["failure"]["type"] == "builtins.ValueError"
    assert failed["failure"]["message"] == "ValueError: t_flaky#0 fails on its first attempt."
    assert document["unresolved_tasks"] == ["t_flaky", "t_next"]
    assert "ValueError: t_flaky#0 fails on its first attempt." in cli(app, "inspect", "cli-replay")

    out = cli(app, "replay", "cli-replay", "t_flaky#0", "--kwargs", '{"go": {"fixed": true}}', "--wait")
    assert out.strip() == "replay: t_flaky#0 is now replayed"
    state = app.wait_finalized("cli-replay")
    assert state.instances["t_flaky#0"].status == "replayed"
    assert result(state.instances["t_flaky#1"]) == {"attempt": 2, "kwargs": {"go": {"fixed": True}}}
    assert state.instances["t_next#0"].status == "finished"

    out = cli(app, "skip", "cli-skip", "t_flaky#0", "--cascade", "--result", '{"attempt": 0}')
    assert out.startswith("skip of t_flaky#0 requested: the worker owning cli-skip applies it")
    assert "--wait waits for the outcome" in out
    state = app.wait_finalized("cli-skip")
    assert state.instances["t_flaky#0"].status == "skipped"
    assert "t_flaky#1" not in state.instances
    assert state.instances["t_next#0"].kwargs == {"t_flaky": {"attempt": 0}}
    assert state.instances["t_next#0"].status == "finished"


def test_replay_and_skip_of_what_does_not_exist_exit_4_and_publish_nothing(app: Pipeline) -> None:
    uid = "cli-known"
    cli(app, "configure", uid, "-", input=json.dumps({"t_who": {"after": ["go"], "run": WhoRunsMe.name}}))
    cli(app, "fire", uid, "go")
    app.wait_status(uid, "t_who#0", "finished")
    events_before = len(events_of(app, uid))

    for command in ("replay", "skip"):
        error = cli(app, command, "cli-never-configured", "t_who#0", expect=EXIT_SESSION)
        assert error.startswith("error: unknown session: No committed state for session 'cli-never-configured'")
        error = cli(app, command, uid, "t_nope#0", "--wait", expect=EXIT_SESSION)
        assert f"session '{uid}' has no task instance 't_nope#0' (instances: t_who#0)" in error
        error = cli(app, command, uid, "t_who#0", expect=EXIT_INPUT)
        assert f"t_who#0 is finished: only a failed instance can be {command}" in error
    assert len(events_of(app, uid)) == events_before
    assert events_of(app, "cli-never-configured") == []


def test_wait_reports_a_request_the_worker_rejected(app: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The instance moved on between the CLI's check and the worker's turn (simulated by skipping
    the check): --wait finds the request's own dead letter and says so."""
    uid = "cli-rejected"
    cli(app, "configure", uid, "-", input=json.dumps({"t_who": {"after": ["go"], "run": WhoRunsMe.name}}))
    cli(app, "fire", uid, "go")
    finished = app.wait_status(uid, "t_who#0", "finished")
    monkeypatch.setattr("stream_triggers.cli.instance._known_instance", lambda *args: finished)
    options = ["--bootstrap", app.bootstrap, "--topic-prefix", app.topics.prefix]

    done = CliRunner().invoke(main_cli, ["update-status", *options, uid, "t_nope#0", "finished", "--wait"])
    assert done.exit_code == EXIT_SESSION, done.output
    assert "the worker rejected the status update:" in done.output and "unknown_instance" in done.output
    finished.status = "failed"  # what the check would have seen a moment earlier
    done = CliRunner().invoke(main_cli, ["replay", *options, uid, "t_who#0", "--wait"])
    assert done.exit_code == EXIT_INPUT, done.output
    assert "the worker rejected the replay:" in done.output and "operation_not_allowed" in done.output


def test_mark_logs_resolved_and_update_status(app: Pipeline) -> None:
    uid = "cli-by-hand"
    cli(app, "configure", uid, "-", input=json.dumps({"t_flaky": {"after": ["go"], "run": FailsOnce.name}}))
    cli(app, "fire", uid, "go")
    failed = app.wait_status(uid, "t_flaky#0", "failed")
    assert TaskInstance.META_LOGS_RESOLVED not in failed.metadata

    out = cli(app, "mark-logs-resolved", uid, "t_flaky#0", "--wait")
    assert out.strip() == "logs resolution: t_flaky#0 is now failed"
    assert app.state(uid).instances["t_flaky#0"].metadata[TaskInstance.META_LOGS_RESOLVED] is True

    out = cli(app, "update-status", uid, "t_flaky#0", "finished", "--metadata", '{"by": "hand"}', "--wait")
    assert out.strip() == "status update: t_flaky#0 is now finished"
    instance = app.state(uid).instances["t_flaky#0"]
    assert instance.status == "finished" and instance.metadata["by"] == "hand"

    cli(app, "update-status", uid, "t_nope#0", "finished", expect=EXIT_SESSION)
    error = cli(app, "update-status", uid, "t_flaky#0", "done", expect=2)
    assert "'done' is not one of" in error


def events_of(app: Pipeline, uid: str) -> list[Record]:
    """The records of the events topic keyed by ``uid``."""
    return [record for record in read_topic(app.bootstrap, app.topics.events) if record.key == uid.encode()]


# -- tail ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tail_decodes_every_topic_and_shows_undecodable_records(app: Pipeline) -> None:
    uid = "cli-tail"
    cli(app, "configure", uid, "-", input=json.dumps({"t_who": {"after": ["go"], "run": WhoRunsMe.name}}))
    cli(app, "fire", uid, "go", "--kwargs", '{"n": 1}')
    app.wait_finalized(uid)
    app.produce_raw(b"cli-garbage", b"\x00\x01 not a record", topic=app.topics.events)
    wait_until(lambda: "cli-garbage" in cli(app, "tail", "dead-letter", "--idle-exit", "0.5"), "the dead letter")

    def tail(*args: str) -> list[str]:
        lines = cli(app, "tail", *args).splitlines()
        assert all(LINE.match(line) for line in lines), lines
        return lines

    assert len(tail("events", "--max", "2")) == 2
    events = [line for line in tail("events", "--idle-exit", "1") if "key=cli-" in line]
    assert any(f"key={uid} TriggerFired" in line and 'kwargs_json={"n":1}' in line for line in events)
    assert any(f"key={uid} ConfigurationUpdated" in line and '"run":"' in line for line in events)
    assert any(f"key={uid} InstanceStatusReported" in line and "status=finished" in line for line in events)
    assert any("key=cli-garbage <undecodable undecodable:" in line for line in events)

    results = [line for line in tail("task-results", "--idle-exit", "1") if f"key={uid} " in line]
    assert len(results) == 1 and "InstanceStatusChanged" in results[0]
    assert '"result":{"pid":' in results[0]
    runs = [line for line in tail("task-runs", "--idle-exit", "1") if f"key={uid} " in line]
    assert len(runs) == 1 and "TaskRunRequested" in runs[0] and "instance=t_who#0" in runs[0]
    snapshots = [line for line in tail("changelog", "--idle-exit", "1") if f"key={uid} " in line]
    assert snapshots and "SessionSnapshot" in snapshots[-1]
    assert "state: 1 task(s); instances: 1 finished; unresolved: none" in snapshots[-1]
    finalized = [line for line in tail(f"{app.topics.prefix}.sessions", "--idle-exit", "1") if f"key={uid} " in line]
    assert len(finalized) == 1 and "SessionFinalized" in finalized[0]
    letters = [line for line in tail("dead-letter", "--idle-exit", "1") if "key=cli-garbage" in line]
    assert len(letters) == 1 and "DeadLetter" in letters[0] and "reason=undecodable" in letters[0]
    assert tail("events", "--from-end", "--idle-exit", "0.5") == []

    error = cli(app, "tail", "no-such-topic", "--max", "1", expect=EXIT_INPUT)
    assert "no topic 'no-such-topic'" in error and "task-runs" in error

    listed = run_cli(
        "dead-letters", "list", "--bootstrap", app.bootstrap, "--topic-prefix", app.topics.prefix,
        "--session", "cli-garbage",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "cli-garbage" in listed.stdout and "undecodable" in listed.stdout


# -- error paths ---------------------------------------------------------------------------------


def test_unknown_session_on_inspect_exits_4(app: Pipeline) -> None:
    error = cli(app, "inspect", "never-configured", expect=EXIT_SESSION)
    assert "No committed state for session 'never-configured'" in error


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("fire", "go", "--kwargs", "{bad"), None, "--kwargs is not valid JSON"),
        (("fire", "go", "--kwargs", "[1]"), None, "must be a mapping"),
        (("configure", "-"), "not json", "the configuration is not valid JSON"),
        (("configure", "-"), '{"t_a": {"after": "go", "run": "x"}}', "directive 'after' must be a list"),
        (("configure", "-"), '{"t_a": {"after": ["go"]}}', "directive 'run' is required"),
        (("replay", "t_a#0", "--kwargs", "{"), None, "--kwargs is not valid JSON"),
        (("skip", "t_a#0", "--result", "nope"), None, "--result is not valid JSON"),
    ],
)
def test_bad_input_exits_5_and_publishes_nothing(
    app: Pipeline, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    uid = f"cli-bad-{uuid.uuid4().hex[:8]}"
    command, *rest = args
    error = cli(app, command, uid, *rest, input=stdin, expect=EXIT_INPUT)
    assert error.startswith("error: ") and message in error
    # Another event of the same session, accepted: once it is on the topic, so would the bad one be.
    cli(app, "fire", uid, "after-the-bad-one")
    assert [record.type for record in events_of(app, uid)] == ["TriggerFired"]


def test_publishing_without_the_topics_exits_5_at_once(broker: EmbeddedBroker) -> None:
    for command in (["fire", "s", "go"], ["replay", "s", "t_a#0"], ["skip", "s", "t_a#0"]):
        done = run_cli(*command, "--bootstrap", broker.bootstrap, "--topic-prefix", "no-topics-here", timeout=20)
        assert done.returncode == EXIT_INPUT, (command, done.stderr)
        assert "topic 'no-topics-here.events' does not exist" in done.stderr
        assert "stream-triggers topics create" in done.stderr


def test_unknown_manager_on_worker_exits_5(app: Pipeline, tmp_path: Path) -> None:
    error = cli(app, "worker", "--state-dir", str(tmp_path / "state"), "--manager", "nope", expect=EXIT_INPUT)
    assert "Unknown trigger manager 'nope'; registered trigger managers: default, finalizing." in error


@pytest.mark.slow
def test_unreachable_broker_exits_3(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"t_a": {"after": ["go"], "run": WhoRunsMe.name}}))
    commands = [
        ["topics", "create"],
        ["configure", "s", str(config)],
        ["fire", "s", "go"],
        ["inspect", "s"],
        ["replay", "s", "t_a#0"],
        ["skip", "s", "t_a#0"],
        ["mark-logs-resolved", "s", "t_a#0"],
        ["update-status", "s", "t_a#0", "finished"],
        ["dead-letters", "list"],
        ["tail", "events", "--max", "1"],
        ["worker", "--state-dir", str(tmp_path / "state")],
        ["executor"],
    ]
    # In parallel: each waits a few seconds for the broker before giving up.
    procs = [
        Proc(f"cli-{i}", [*command, "--bootstrap", address], tmp_path / f"cli-{i}.log")
        for i, command in enumerate(commands)
    ]
    for command, proc in zip(commands, procs, strict=True):
        assert proc.process.wait(60) == EXIT_BROKER, (command, proc.log())
        assert f"cannot reach the Kafka broker at {address}" in proc.log(), (command, proc.log())
        assert "%3|" not in proc.log()  # one clear line, no librdkafka noise


# -- processes and environment variables ---------------------------------------------------------


def test_env_vars_instead_of_options_and_sigterm_stops_worker_and_executor(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"c{uuid.uuid4().hex[:12]}"
    env = {"STREAM_TRIGGERS_BOOTSTRAP": broker.bootstrap, "STREAM_TRIGGERS_TOPIC_PREFIX": prefix}
    created = run_cli("topics", "create", env={**env, "STREAM_TRIGGERS_PARTITIONS": "2"})
    assert created.returncode == 0, created.stderr
    assert f"{prefix}.events: created" in created.stdout
    common = {**env, "STREAM_TRIGGERS_SESSION_TIMEOUT_MS": "3000", "STREAM_TRIGGERS_LOG_LEVEL": "INFO"}
    worker = Proc(
        "worker",
        ["worker"],
        tmp_path / "worker.log",
        env={**common, "STREAM_TRIGGERS_STATE_DIR": str(tmp_path / "state"), "STREAM_TRIGGERS_GROUP": f"w-{prefix}"},
    )
    executor = Proc(
        "executor",
        ["executor"],
        tmp_path / "executor.log",
        env={
            **common,
            "STREAM_TRIGGERS_IMPORT": "stream_triggers.cli.demo_tasks",
            "STREAM_TRIGGERS_EXECUTOR_GROUP": prefix,
        },
    )
    try:
        configuration = json.dumps({"t_who": {"after": ["go"], "run": WhoRunsMe.name}})
        assert run_cli("configure", "env-session", "-", input=configuration, env=env).returncode == 0
        assert run_cli("fire", "env-session", "go", "--kwargs", '{"via": "env"}', env=env).returncode == 0
        reader = Pipeline(broker.bootstrap, Topics(prefix), tmp_path)
        state = reader.wait_finalized("env-session")
        assert result(state.instances["t_who#0"]) == {"pid": executor.pid}
        inspected = run_cli("inspect", "env-session", "--json", env=env)
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["latest_kwargs"]["go"] == {"via": "env"}
        reader.stop_all()
        worker.wait_log(f"group=w-{prefix}")
        executor.wait_log(f"group={prefix}")

        assert executor.terminate() == 0
        assert worker.terminate() == 0
        assert "executor stopped" in executor.log()
        assert "worker stopped" in worker.log()
    finally:
        worker.kill()
        executor.kill()


def test_broker_prints_its_bootstrap_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = Proc("broker", ["broker"], tmp_path / "broker.log")
    try:
        proc.wait_log("ready on")
        address = wait_until(lambda: re.search(r"^(127\.0\.0\.1:\d+)$", proc.log(), re.M), "the bootstrap line")[1]
        created = run_cli("topics", "create", "--bootstrap", address, "--partitions", "1")
        assert created.returncode == 0, created.stderr
        assert proc.terminate(timeout=20) == 0
    finally:
        proc.kill()
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def two_free_ports() -> int:
    """A port P such that P and P + 1 are free now (the demo's worker and executor metrics)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def test_demo_runs_to_success() -> None:
    port = two_free_ports()
    done = run_cli("demo", "--sessions", "2", "--seed", "3", "--metrics-port", str(port), timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert f"metrics   http://127.0.0.1:{port}/metrics (worker), :{port + 1} (executor)" in out
    assert "all 5 sessions finalized (5 SessionFinalized events)" in out
    for session in ("questionnaire-1", "questionnaire-2", "applicant:"):
        assert f"FINALIZED {session}" in out
    assert re.search(r"t_compareResponses#0 +finished +\{\"common\": ", out)
    assert re.search(r"stopped executor \(pid \d+, exit code 0\)", out)
    assert re.search(r"stopped worker \(pid \d+, exit code 0\)", out)


# Ctrl-C as a terminal delivers it, whatever this test run inherited: a shell starts a
# background job with SIGINT ignored, an ignored signal stays ignored across exec, and
# Python then leaves it ignored (the demo would run to its end, exit 0).
_WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])",
]


def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    proc = Proc("demo", ["demo"], tmp_path / "demo.log", wrapper=_WITH_CTRL_C)
    try:
        proc.wait_log("triggers fired", timeout=60)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # the broker, the worker, the executor
        os.kill(proc.pid, signal.SIGINT)
        assert proc.process.wait(60) == 130
    finally:
        proc.kill()
    assert "interrupted: stopping the executor, the worker and the broker" in proc.log()
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
