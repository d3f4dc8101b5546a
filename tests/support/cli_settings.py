"""The ``WorkerSettings`` a ``stream-triggers worker`` command line builds, without starting a worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from click.testing import CliRunner


def worker_settings(monkeypatch: pytest.MonkeyPatch, args: list[str], env: Mapping[str, str] | None = None) -> Any:
    """Run ``stream-triggers worker --bootstrap 127.0.0.1:1 *args`` with a stand-in worker; its settings.

    The command must succeed (exit 0); the broker is not asked.
    """
    import stream_triggers.cli.run as run
    import stream_triggers.stream.worker as worker_module
    from stream_triggers.cli.main import cli

    seen = {}

    class Worker:
        def __init__(self, settings: Any) -> None:
            seen["settings"] = settings

        def install_signal_handlers(self) -> None: ...

        def run(self) -> None: ...

    monkeypatch.setattr(run, "check_broker", lambda *args: None)
    monkeypatch.setattr(worker_module, "StreamWorker", Worker)
    result = CliRunner().invoke(cli, ["worker", "--bootstrap", "127.0.0.1:1", *args], env=env)
    assert result.exit_code == 0, result.output
    return seen["settings"]
