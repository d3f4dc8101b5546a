"""``--checkpoint-interval-ms``: how long applied batches wait for their checkpoint."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stream_triggers.cli.main import cli
from tests.support import worker_settings


def test_the_default_is_100_ms(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_settings(monkeypatch, ["--state-dir", str(tmp_path)]).checkpoint_interval_s == pytest.approx(0.1)


def test_the_option_and_the_environment_reach_the_worker(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_option = worker_settings(monkeypatch, ["--state-dir", str(tmp_path), "--checkpoint-interval-ms", "250"])
    env = {"STREAM_TRIGGERS_CHECKPOINT_INTERVAL_MS": "0"}
    by_env = worker_settings(monkeypatch, ["--state-dir", str(tmp_path)], env)
    assert (by_option.checkpoint_interval_s, by_env.checkpoint_interval_s) == (0.25, 0.0)


def test_a_negative_interval_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path), "--checkpoint-interval-ms", "-5"]
    )
    assert result.exit_code == 2 and "--checkpoint-interval-ms" in result.output


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("worker", "--fetch-wait-ms", "-1"),
        ("worker", "--fetch-min-bytes", "0"),
        ("worker", "--linger-ms", "-1"),
        ("worker", "--session-timeout-ms", "0"),
        ("worker", "--metrics-port", "70000"),
        ("executor", "--session-timeout-ms", "-6000"),
        ("executor", "--metrics-port", "0"),
        ("executor", "--fetch-wait-ms", "-1"),
    ],
)
def test_an_out_of_range_setting_is_a_usage_error_naming_it(tmp_path, command: str, option: str, value: str) -> None:
    """Caught before any client is made, not as a librdkafka error later."""
    args = [command, "--bootstrap", "127.0.0.1:1", option, value]
    args += ["--state-dir", str(tmp_path)] if command == "worker" else []
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and option in result.output and value in result.output
