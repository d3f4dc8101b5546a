"""``--fetch-min-bytes``: the broker holds an input fetch until that much input is there.

Under a steady stream, fewer and larger fetches: fewer loop turns for the worker and, on
Tansu, fewer listings of the partition's batches (docs/operating.md).  Only the input
consumer asks for it: the restore must not wait for bytes that never come.  (An out-of-range
value is a usage error: tests/cli/test_checkpoint_interval.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import stream_triggers.stream.worker as worker_module
from stream_triggers.stream.worker import StreamWorker, WorkerSettings
from tests.support import worker_settings


def test_the_default_asks_for_any_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_settings(monkeypatch, ["--state-dir", str(tmp_path)]).fetch_min_bytes == 1


def test_the_option_and_the_environment_reach_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_option = worker_settings(monkeypatch, ["--state-dir", str(tmp_path), "--fetch-min-bytes", "10000"])
    by_env = worker_settings(monkeypatch, ["--state-dir", str(tmp_path)], {"STREAM_TRIGGERS_FETCH_MIN_BYTES": "512"})
    assert (by_option.fetch_min_bytes, by_env.fetch_min_bytes) == (10_000, 512)


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
