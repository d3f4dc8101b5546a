"""Shared fixtures: one embedded Tansu broker per test session, fresh topics per test.

Any test that uses the ``broker`` fixture (directly or through ``topics``) is marked
``broker`` automatically, so ``pytest -m "not broker"`` skips exactly those.  The helpers
behind the fixtures live in ``tests.support``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stream_triggers.engine import native
from stream_triggers.engine.native import ENGINE_ENV
from stream_triggers.kafka.topics import Topics
from stream_triggers.ops.broker import EmbeddedBroker
from tests.support import fresh_topics, running_broker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        choices=("python", "native"),
        default=os.environ.get(ENGINE_ENV) or "python",
        help="The engine of the workers the tests start (default python, or $STREAM_TRIGGERS_ENGINE).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """The coverage floor (pyproject) holds for the suite, not for a run of a few named tests."""
    # Workers started here (in process, or as CLI processes: cli_env passes it on) run this
    # engine; with "native", those of a custom manager class run on Python (auto).
    engine = config.getoption("engine")
    if engine == "native" and not native.available():
        pytest.exit("--engine native: the native core is not installed (pip install ./native)", 4)
    os.environ[ENGINE_ENV] = "auto" if engine == "native" else "python"
    coverage = config.pluginmanager.getplugin("_cov")
    if coverage is not None and config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        coverage.options.cov_fail_under = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free loopback port (in-memory: a fresh cluster every run).

    One per pytest process: under pytest-xdist (``scripts/test.sh``) each worker starts its own.
    """
    with running_broker(tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    """The six topics under a prefix of this test's own, created on ``broker``."""
    return fresh_topics(broker.bootstrap)
