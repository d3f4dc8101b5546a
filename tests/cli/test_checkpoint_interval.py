"""``--checkpoint-interval-ms``: how long applied batches wait for their checkpoint."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stream_triggers.cli.main import cli
from tests.support import worker_settings


def test_the_default_is_20_ms(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
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
