"""``--session-retention`` / ``--session-ttl`` durations: plain seconds or 30s, 15m, 12h, 7d."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stream_triggers.cli.durations import parse_duration
from stream_triggers.cli.main import cli
from tests.support import worker_settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("30s", 30), ("15m", 900), ("12h", 43_200), ("7d", 604_800), ("1.5h", 5_400), (" 2 d ", 172_800)],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7w", "-5", "1h30m", "ten", "0", "0s", "1e3"])
def test_anything_else_is_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("option", ["--session-retention", "--session-ttl"])
def test_a_bad_duration_is_a_usage_error_naming_the_option(option: str, tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path), option, "3 weeks"]
    )
    assert result.exit_code == 2
    assert option in result.output and "'3 weeks' is not a duration" in result.output


def test_the_environment_sets_them_too(tmp_path) -> None:
    result = CliRunner().invoke(
        cli,
        ["worker", "--bootstrap", "127.0.0.1:1", "--state-dir", str(tmp_path)],
        env={"STREAM_TRIGGERS_SESSION_TTL": "soon"},
    )
    assert result.exit_code == 2
    assert "--session-ttl" in result.output and "'soon' is not a duration" in result.output


def test_good_durations_reach_the_worker_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = worker_settings(
        monkeypatch,
        ["--state-dir", str(tmp_path), "--session-retention", "15m"],
        {"STREAM_TRIGGERS_SESSION_TTL": "7d"},
    )
    assert (settings.session_retention_s, settings.session_ttl_s) == (900, 604_800)
