"""``--checkpoint-interval-ms``: how long applied batches wait for their checkpoint."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stream_triggers.cli.main import cli


def _settings(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str] | None = None):
    import stream_triggers.cli.run as run
    import stream_triggers.stream.worker as worker_module

    seen = {}

    class Worker:
        def __init__(self, settings) -> None:
            seen["settings"] = settings

        def install_signal_handlers(self) -> None: ...

        def run(self) -> None: ...

    monkeypatch.setattr(run, "check_broker", lambda *args: None)
    monkeypatch.setattr(worker_module, "StreamWorker", Worker)
    result = CliRunner().invoke(cli, ["worker", "--bootstrap", "127.0.0.1:1", *args], env=env)
    assert result.exit_code == 0, result.output
    return seen["settings"]


def test_the_default_is_20_ms(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(monkeypatch, ["--state-dir", str(tmp_path)]).checkpoint_interval_s == pytest.approx(0.02)


def test_the_option_and_the_environment_reach_the_worker(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_option = _settings(monkeypatch, ["--state-dir", str(tmp_path), "--checkpoint-interval-ms", "250"])
    by_env = _settings(monkeypatch, ["--state-dir", str(tmp_path)], {"STREAM_TRIGGERS_CHECKPOINT_INTERVAL_MS": "0"})
    assert (by_option.checkpoint_interval_s, by_env.checkpoint_interval_s) == (0.25, 0.0)


def test_a_negative_interval_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path), "--checkpoint-interval-ms", "-5"]
    )
    assert result.exit_code == 2 and "--checkpoint-interval-ms" in result.output
