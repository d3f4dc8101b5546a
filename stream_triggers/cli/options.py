"""What every command shares: exit codes, the common options, and the checks made before work.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 broker unreachable, 4 unknown session or
instance, 5 invalid input.  Every option also reads an environment variable
(``STREAM_TRIGGERS_<NAME>``), shown in ``--help``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import click

__all__ = [
    "ENV",
    "LOG_LEVELS",
    "EXIT_BROKER",
    "EXIT_FAILURE",
    "EXIT_INPUT",
    "EXIT_SESSION",
    "bootstrap_option",
    "env_option",
    "check_broker",
    "check_name",
    "check_state_dir",
    "fail",
    "fetch_wait_option",
    "json_arg",
    "json_mapping_arg",
    "prefix_option",
]

EXIT_FAILURE, EXIT_BROKER, EXIT_SESSION, EXIT_INPUT = 1, 3, 4, 5

ENV = "STREAM_TRIGGERS_"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

BROKER_WAIT_S = 8.0
"""How long a command waits for the broker to answer before exiting 3."""


def fail(message: str, code: int) -> NoReturn:
    """One ``error:`` line on stderr, then exit ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def env_option(*decls: str, env: str | None = None, **settings: Any) -> Callable[[Any], Any]:
    """``click.option`` that also reads ``STREAM_TRIGGERS_<NAME>``, shown in ``--help``: NAME is
    ``env``, else the first long flag's (``--state-dir`` -> ``STATE_DIR``)."""
    if env is None:
        flag = next(d for d in decls if d.startswith("--"))
        env = flag.split("/")[0][2:].replace("-", "_").upper()
    return click.option(*decls, envvar=ENV + env, show_envvar=True, **settings)


def bootstrap_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return env_option(
        "--bootstrap",
        required=True,
        help="Kafka bootstrap servers (host:port).",
    )(f)


def fetch_wait_option(fetched: str) -> Callable[[Any], Any]:
    """``--fetch-wait-ms`` of a process that consumes ``fetched`` (worker and executor: one
    environment variable, so a deployment sets both at once)."""
    return env_option(
        "--fetch-wait-ms",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        help=f"How long the broker may hold a fetch of {fetched} that finds nothing (Kafka answers it "
        "when records arrive; Tansu looks again at half the time left).",
    )


def _legal_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from stream_triggers.kafka.topics import Topics

    try:
        Topics(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def prefix_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return env_option(
        "--topic-prefix",
        default="triggers",
        show_default=True,
        callback=_legal_prefix,
        help="Prefix of the topics (PREFIX.events, PREFIX.task-runs, ...).",
    )(f)


def check_broker(
    bootstrap: str, kafka_config: Mapping[str, Any] | None = None, timeout: float = BROKER_WAIT_S
) -> set[str]:
    """The broker's topic names, asked with the user's client settings; exit 3 when it does not answer."""
    from stream_triggers.kafka import clients

    try:
        # librdkafka's own connection errors (log_level 0: none) would bury the one line below.
        quiet = {**(kafka_config or {}), "log_level": 0}  # the keyword form would read log.level
        metadata = clients.admin(bootstrap, kafka_config=quiet).list_topics(timeout=timeout)
    except Exception as exc:
        fail(f"cannot reach the Kafka broker at {bootstrap} ({exc}); is it running?", EXIT_BROKER)
    return set(metadata.topics)


def json_arg(text: str | None, what: str) -> Any:
    """``text`` parsed as JSON (None stays None); exit 5 naming ``what`` when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc}", EXIT_INPUT)


def json_mapping_arg(text: str | None, what: str) -> dict[str, Any] | None:
    """Like :func:`json_arg`, and the value must be a JSON object: checked here, before any broker."""
    value = json_arg(text, what)
    if value is not None and not isinstance(value, dict):
        fail(f"{what} must be a mapping (a JSON object), not a {type(value).__name__}", EXIT_INPUT)
    return value


def check_name(value: str, what: str) -> str:
    """A session UID, trigger or instance name: not empty, not only blanks (exit 5 otherwise)."""
    if not value.strip():
        fail(f"{what} must not be empty", EXIT_INPUT)
    return value


def check_state_dir(path: str) -> None:
    """Create ``path`` if needed and prove it writable (exit 5 with the reason, not a traceback)."""
    import os
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=path))
    except OSError as exc:
        fail(f"--state-dir {path!r} is not a writable directory: {exc.strerror or exc}", EXIT_INPUT)
