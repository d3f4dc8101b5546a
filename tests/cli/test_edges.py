"""The CLI at its edges, without a broker: usage errors, input refused before any broker is
contacted, help text and environment variables for every option.

The bootstrap address of these tests is a free port nothing listens on: a command that
contacted the broker before refusing its input would exit 3 (broker unreachable), so exit 5
shows the input was refused first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from stream_triggers.cli import cli
from stream_triggers.ops.broker import free_port
from tests.support import run_cli

EXIT_USAGE, EXIT_BROKER, EXIT_INPUT = 2, 3, 5


@pytest.fixture(scope="module")
def nowhere() -> str:
    return f"127.0.0.1:{free_port()}"


def test_an_unknown_log_level_is_a_usage_error(nowhere: str) -> None:
    done = run_cli("--log-level", "NOPE", "fire", "s", "go", "--bootstrap", nowhere)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert "'NOPE' is not one of" in done.stderr and "--log-level" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fire", "s", "start", "--kwargs", "[1,2]"), "--kwargs must be a mapping (a JSON object), not a list"),
        (("fire", "", "start"), "the session UID must not be empty"),
        (("fire", "s", " "), "the trigger name must not be empty"),
        (("topics", "create", "--partitions", "0"), "--partitions must be at least 1, not 0"),
        (("topics", "create", "--replication", "0"), "--replication must be at least 1, not 0"),
        (("configure", "", "-"), "the session UID must not be empty"),
        (("inspect", ""), "the session UID must not be empty"),
        (("replay", "s", "t_a#0", "--kwargs", "7"), "--kwargs must be a mapping (a JSON object), not a int"),
        (("skip", "s", "t_a#0", "--result", '"x"'), "--result must be a mapping (a JSON object), not a str"),
        (("skip", "", "t_a#0"), "the session UID must not be empty"),
        (("mark-logs-resolved", "s", ""), "the instance name must not be empty"),
        (("update-status", "s", "t_a#0", "failed", "--metadata", "[]"), "--metadata must be a mapping"),
    ],
)
def test_input_checked_locally_exits_5_before_any_broker_is_contacted(
    nowhere: str, args: tuple[str, ...], message: str
) -> None:
    command = ["topics", "create"] if args[0] == "topics" else [args[0]]
    rest = args[len(command) :]
    done = run_cli(*command, "--bootstrap", nowhere, *rest, input='{"t_a": {"after": ["go"], "run": "x"}}')
    assert done.returncode == EXIT_INPUT, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unusable_state_dir_is_a_clear_error(nowhere: str, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # permissions do not bind root: a path under a regular file cannot be created either
        (tmp_path / "a-file").write_text("")
        state_dir = tmp_path / "a-file" / "state"
    else:
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        state_dir = read_only / "state"
    done = run_cli("worker", "--bootstrap", nowhere, "--state-dir", str(state_dir))
    assert done.returncode == EXIT_INPUT, done.stderr
    assert f"error: --state-dir '{state_dir}' is not a writable directory" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_dead_letters_against_an_unreachable_broker_exits_3(nowhere: str) -> None:
    for command in ("list", "replay"):
        done = run_cli("dead-letters", command, "--bootstrap", nowhere, timeout=30)
        assert done.returncode == EXIT_BROKER, done.stderr
        assert f"cannot reach the Kafka broker at {nowhere}" in done.stderr
        assert "Traceback" not in done.stderr


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_option_has_help_and_an_environment_variable_shown_in_help() -> None:
    missing = []
    for name, command in [("(group)", cli), *commands(cli)]:
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_eager:  # --help, --version
                continue
            if not (param.help and param.envvar and param.show_envvar):
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []
    for name, command in commands(cli):
        shown = command.get_help(click.Context(command, info_name=name))
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_eager:
                assert param.envvar in shown, (name, param.envvar)
