"""Kafka client settings on the command line (``-X key=value``, ``--kafka-config FILE``).

Offline: parsing, merging, librdkafka refusing what it does not know (exit 2, naming the
setting), secrets kept out of ``--help`` and error messages, and the settings handed to the
worker and the executor.  Against the broker: every client a command builds through
``kafka.clients`` gets the settings, and a setting that must break the connection does so on
every command that talks to Kafka.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from stream_triggers.cli import cli
from stream_triggers.cli.kafka_settings import load_kafka_config, parse_properties, redacted
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port
from tests.support import Proc, run_cli

EXIT_USAGE, EXIT_BROKER = 2, 3

KAFKA_COMMANDS = [
    ["topics", "create"],
    ["configure", "s", "{tmp}/config.json"],
    ["fire", "s", "go"],
    ["inspect", "s"],
    ["replay", "s", "t_a#0"],
    ["skip", "s", "t_a#0"],
    ["mark-logs-resolved", "s", "t_a#0"],
    ["update-status", "s", "t_a#0", "finished"],
    ["tail", "events", "--max", "1"],
    ["dead-letters", "list"],
    ["dead-letters", "replay"],
    ["worker", "--state-dir", "{tmp}/state"],
    ["executor"],
]
"""Every command that talks to Kafka (``{tmp}``: the test's temporary directory)."""


def command_line(command: list[str], tmp_path: Path, *options: str) -> list[str]:
    """``command`` with ``options`` right after the command name(s), before its arguments."""
    (tmp_path / "config.json").write_text(json.dumps({"t_a": {"after": ["go"], "run": "x"}}))
    words = [word.replace("{tmp}", str(tmp_path)) for word in command]
    names = 2 if words[0] in ("topics", "dead-letters") else 1
    return [*words[:names], *options, *words[names:]]


def test_properties_files_read_as_the_java_clients_read_them() -> None:
    text = "# comment\n! also\n\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\n"
    text += "sasl.username alice\nsasl.jaas.config=a \\\n  b\nempty=\n"
    assert parse_properties(text) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.jaas.config": "a b",
        "empty": "",
    }


def test_settings_merge_file_then_x_and_librdkafka_checks_them(tmp_path: Path) -> None:
    file = tmp_path / "client.properties"
    file.write_text("security.protocol=ssl\nclient.id=from-file\n")
    merged = load_kafka_config(["client.id=from-x", "socket.timeout.ms = 5000"], str(file))
    assert merged == {"security.protocol": "ssl", "client.id": "from-x", "socket.timeout.ms": "5000"}
    assert load_kafka_config([], None) == {}
    with pytest.raises(click.BadParameter, match=r'No such configuration property: "no\.such\.setting"'):
        load_kafka_config(["no.such.setting=1"], None)
    refused = r'Invalid value "bogus" for configuration property "security\.protocol"'
    with pytest.raises(click.BadParameter, match=refused):
        load_kafka_config(["security.protocol=bogus"], None)
    with pytest.raises(click.BadParameter, match=r"'=x' is not KEY=VALUE"):
        load_kafka_config(["=x"], None)


def test_secrets_are_masked_where_settings_are_shown() -> None:
    config = {"sasl.password": "p", "ssl.key.password": "k", "sasl.oauthbearer.client.secret": "s", "acks": "all"}
    assert redacted(config) == {
        "sasl.password": "***",
        "ssl.key.password": "***",
        "sasl.oauthbearer.client.secret": "***",
        "acks": "all",
    }


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_kafka_command_refuses_an_unknown_setting_with_exit_2(command: list[str], tmp_path: Path) -> None:
    args = command_line(command, tmp_path, "--bootstrap", "127.0.0.1:1", "-X", "no.such.setting=1")
    done = CliRunner().invoke(cli, args, env={"STREAM_TRIGGERS_KAFKA_SETTINGS": "sasl.password=hunter2"})
    assert done.exit_code == EXIT_USAGE, done.output
    assert 'No such configuration property: "no.such.setting"' in done.output
    assert "hunter2" not in done.output
    shown = CliRunner().invoke(cli, [*command_line(command, tmp_path), "--help"])
    assert "-X KEY=VALUE" in shown.output and "STREAM_TRIGGERS_KAFKA_CONFIG" in shown.output


def test_secrets_never_appear_in_help(tmp_path: Path) -> None:
    file = tmp_path / "secret.properties"
    file.write_text("sasl.password=hunter2\n")
    env = {"STREAM_TRIGGERS_KAFKA_SETTINGS": "ssl.key.password=hunter2", "STREAM_TRIGGERS_KAFKA_CONFIG": str(file)}
    for command in KAFKA_COMMANDS:
        shown = CliRunner().invoke(cli, [*command_line(command, tmp_path), "--help"], env=env)
        assert shown.exit_code == 0 and "hunter2" not in shown.output


class Captured:
    """Stands in for StreamWorker / TaskExecutor: keeps the settings, runs nothing."""

    settings: Any = None

    def __init__(self, settings: Any) -> None:
        Captured.settings = settings
        self.stats: dict[str, Any] = {}

    def install_signal_handlers(self) -> None:
        pass

    def run(self) -> None:
        pass


def test_worker_and_executor_get_the_settings_restore_timeout_max_in_flight_and_fetch_wait(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("stream_triggers.cli.run.check_broker", lambda *args, **kwargs: set())
    monkeypatch.setattr("stream_triggers.stream.worker.StreamWorker", Captured)
    monkeypatch.setattr("stream_triggers.executor.TaskExecutor", Captured)
    file = tmp_path / "client.properties"
    file.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n")
    env = {"STREAM_TRIGGERS_KAFKA_CONFIG": str(file), "STREAM_TRIGGERS_RESTORE_TIMEOUT": "7.5"}
    options = ["--bootstrap", "b:9092", "-X", "sasl.username=alice", "-X", "sasl.password=pw"]
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "pw",
    }

    done = CliRunner().invoke(cli, ["worker", *options, "--state-dir", str(tmp_path / "state")], env=env)
    assert done.exit_code == 0, done.output
    assert Captured.settings.kafka_config == expected
    assert Captured.settings.restore_timeout_s == 7.5

    done = CliRunner().invoke(cli, ["executor", *options], env={**env, "STREAM_TRIGGERS_MAX_IN_FLIGHT": "12"})
    assert done.exit_code == 0, done.output
    assert Captured.settings.kafka_config == expected
    assert Captured.settings.max_in_flight == 12
    done = CliRunner().invoke(cli, ["executor", *options, "--max-in-flight", "3"], env=env)
    assert Captured.settings.max_in_flight == 3
    assert Captured.settings.fetch_wait_ms == 100  # the default, as the worker's
    # the deployment files' STREAM_TRIGGERS_FETCH_WAIT_MS reaches executors as well as workers
    done = CliRunner().invoke(cli, ["executor", *options], env={**env, "STREAM_TRIGGERS_FETCH_WAIT_MS": "500"})
    assert done.exit_code == 0, done.output
    assert Captured.settings.fetch_wait_ms == 500
    CliRunner().invoke(cli, ["executor", *options, "--fetch-wait-ms", "25"], env=env)
    assert Captured.settings.fetch_wait_ms == 25


# -- against the broker --------------------------------------------------------------------------


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every client built through kafka.clients while the test runs: (kind, its kafka_config)."""
    seen: list[tuple[str, Any]] = []
    for kind in ("consumer", "producer", "admin"):
        real = getattr(clients, kind)

        def recording(*args: Any, _real: Any = real, _kind: str = kind, **kwargs: Any) -> Any:
            seen.append((_kind, dict(kwargs.get("kafka_config") or {})))
            return _real(*args, **kwargs)

        monkeypatch.setattr(clients, kind, recording)
    return seen


def test_every_client_a_command_builds_gets_the_settings(broker: EmbeddedBroker, built: list[Any]) -> None:
    prefix = f"k{uuid.uuid4().hex[:12]}"
    setting = {"client.id": f"probe-{prefix}"}  # harmless, and visible in what each client was given
    options = ["--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "-X", f"client.id={setting['client.id']}"]
    configuration = json.dumps({"t_a": {"after": ["go"], "run": "stream_triggers.testing.DevNullTask"}})
    runs = [
        (["topics", "create", *options, "--partitions", "1"], 0),
        (["configure", *options, "s", "-"], 0),
        (["fire", *options, "s", "go"], 0),
        (["tail", *options, "events", "--max", "2"], 0),
        (["dead-letters", "list", *options], 0),
        (["inspect", *options, "s"], 4),  # no worker here: the session has no committed state
    ]
    for args, code in runs:
        before = len(built)
        done = CliRunner().invoke(cli, args, input=configuration)
        assert done.exit_code == code, (args, done.output)
        made = built[before:]
        assert made, args
        assert all(setting.items() <= config.items() for _kind, config in made), (args, made)


def test_a_setting_that_breaks_the_connection_breaks_every_command(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Plain-text Tansu cannot speak TLS: every command must fail to connect (exit 3), and the
    password given beside it must show nowhere, not even in debug logs."""
    prefix = f"k{uuid.uuid4().hex[:12]}"
    create_topics(broker.bootstrap, Topics(prefix), partitions=1)
    settings = ["-X", "security.protocol=ssl", "-X", "ssl.key.password=hunter2"]
    options = ["--bootstrap", broker.bootstrap, "--topic-prefix", prefix, *settings]
    procs = [
        Proc(f"ssl-{i}", ["--log-level", "DEBUG", *command_line(command, tmp_path, *options)], tmp_path / f"{i}.log")
        for i, command in enumerate(KAFKA_COMMANDS)
    ]
    for command, proc in zip(KAFKA_COMMANDS, procs, strict=True):
        assert proc.process.wait(60) == EXIT_BROKER, (command, proc.log())
        assert f"cannot reach the Kafka broker at {broker.bootstrap}" in proc.log(), (command, proc.log())
        assert "hunter2" not in proc.log()
    plain = run_cli("topics", "create", "--bootstrap", broker.bootstrap, "--topic-prefix", prefix)
    assert plain.returncode == 0, plain.stderr  # the same command without the setting works


def test_settings_file_from_the_environment_is_used(tmp_path: Path) -> None:
    file = tmp_path / "bad.properties"
    file.write_text("no.such.setting=1\n")
    done = run_cli(
        "fire", "s", "go", "--bootstrap", f"127.0.0.1:{free_port()}", env={"STREAM_TRIGGERS_KAFKA_CONFIG": str(file)}
    )
    assert done.returncode == EXIT_USAGE and 'No such configuration property: "no.such.setting"' in done.stderr
