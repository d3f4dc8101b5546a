"""How the worker takes its input: ``--fetch-wait-ms``, ``--linger-ms``, ``--fetch-min-bytes``.

Under a steady stream, fewer and larger fetches and turns: less work per event for the
worker and, on Tansu, fewer listings of the partition's batches (docs/operating.md).  The
fetch minimum is the input consumer's alone: the restore must not wait for bytes that never
come.  (Out-of-range values are usage errors: tests/cli/test_checkpoint_interval.py; how the
loop lingers: tests/stream/test_pace.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import stream_triggers.stream.worker as worker_module
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import worker_settings


def test_the_defaults_fetch_any_byte_within_100_ms_and_do_not_linger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = worker_settings(monkeypatch, ["--state-dir", str(tmp_path)])
    assert (settings.fetch_min_bytes, settings.fetch_wait_ms, settings.linger_s) == (1, 100, 0.0)
    assert (WorkerSettings.fetch_wait_ms, WorkerSettings.linger_s) == (100, 0.0)  # the library's defaults too


@pytest.mark.parametrize(
    ("option", "by_option", "by_env", "attribute", "expected"),
    [
        ("--linger-ms", "0", "35", "linger_s", (0.0, 0.035)),
        ("--fetch-min-bytes", "10000", "512", "fetch_min_bytes", (10_000, 512)),
    ],
)
def test_the_option_and_the_environment_reach_the_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    by_option: str,
    by_env: str,
    attribute: str,
    expected: tuple[float, float],
) -> None:
    variable = "STREAM_TRIGGERS_" + option[2:].replace("-", "_").upper()
    from_option = worker_settings(monkeypatch, ["--state-dir", str(tmp_path), option, by_option])
    from_env = worker_settings(monkeypatch, ["--state-dir", str(tmp_path)], {variable: by_env})
    assert (getattr(from_option, attribute), getattr(from_env, attribute)) == expected


def test_only_the_input_consumer_asks_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, dict[str, Any]] = {}
    real_consumer = worker_module.clients.consumer

    def recording_consumer(bootstrap: str, role: str, group: str | None = None, **settings: Any) -> Any:
        made[role] = settings
        return real_consumer(bootstrap, role, group, **settings)

    monkeypatch.setattr(worker_module.clients, "consumer", recording_consumer)
    settings = WorkerSettings(
        bootstrap="127.0.0.1:9", state_dir=str(tmp_path), topic_prefix="t", fetch_min_bytes=65_536
    )
    worker = StreamWorker(settings)
    try:
        assert made["worker"]["fetch_min_bytes"] == 65_536
        assert "fetch_min_bytes" not in made["worker-restore"]
    finally:
        worker._consumer.close()
        worker._restorer.close()
