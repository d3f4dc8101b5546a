"""The user's Kafka client settings on the command line, as kcat takes them.

``-X key=value`` (repeatable) and ``--kafka-config FILE`` (a Java-style properties file,
``$STREAM_TRIGGERS_KAFKA_CONFIG``) merge into one dict of librdkafka settings, ``-X`` winning;
the command hands it to every Kafka client it builds (``kafka_config``).

Checked before anything else: librdkafka itself refuses an unknown property or an invalid
value when a client is built, so one throw-away client is built from the settings (no
bootstrap servers: it connects nowhere) and a refusal is a usage error naming the setting.
Secrets (any setting with ``password`` or ``secret`` in its name, private keys) are masked
wherever the CLI shows settings or librdkafka's messages about them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from stream_triggers.cli.options import env_option

__all__ = ["kafka_options", "load_kafka_config", "parse_properties", "redacted", "is_secret"]

_SECRET_WORDS = ("password", "secret")
_SECRET_KEYS = frozenset({"ssl.key.pem", "sasl.oauthbearer.config", "ssl_key"})
_MASK = "***"


def is_secret(key: str) -> bool:
    """Whether the value of setting ``key`` must never be shown."""
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(word in lowered for word in _SECRET_WORDS)


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` fit to show: every secret value replaced by ``***``."""
    return {key: _MASK if is_secret(key) else value for key, value in config.items()}


def parse_properties(text: str, source: str = "properties") -> dict[str, str]:
    """A Java-style properties file: ``key=value`` / ``key: value`` / ``key value`` lines,
    ``#`` and ``!`` comments, a trailing backslash continues a line."""
    settings: dict[str, str] = {}
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        if not line or line[0] in "#!":
            continue
        key, value = _split(line)
        if not key:
            raise ValueError(f"{source}, line {number}: no setting name in {raw.strip()!r}")
        settings[key] = value
    return settings


def _split(line: str) -> tuple[str, str]:
    """``key`` and ``value`` at the first ``=``, ``:`` or blank (whichever comes first)."""
    for index, char in enumerate(line):
        if char in "=:" or char.isspace():
            key, rest = line[:index].strip(), line[index + 1 :].strip()
            if char.isspace() and rest[:1] in ("=", ":"):
                rest = rest[1:].strip()
            return key, rest
    return line, ""


def load_kafka_config(settings: Iterable[str], file: str | None) -> dict[str, str]:
    """The file's settings, then each ``key=value`` of ``settings``; checked by librdkafka.

    Raises :class:`click.BadParameter` naming the setting that is malformed, unknown or invalid.
    """
    config: dict[str, str] = {}
    if file is not None:
        try:
            with open(file, encoding="utf-8") as handle:
                config.update(parse_properties(handle.read(), file))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--kafka-config'") from None
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{_shown(setting)!r} is not KEY=VALUE", param_hint="'-X'")
        config[key.strip()] = value.strip()
    _check(config)
    return config


def _shown(setting: str) -> str:
    key, sep, _value = setting.partition("=")
    return f"{key}={_MASK}" if sep and is_secret(key) else setting


def _check(config: Mapping[str, str]) -> None:
    """Build (and drop) a client from ``config``: librdkafka names what it refuses."""
    from confluent_kafka import KafkaException, Producer

    if not config:
        return
    try:
        Producer({**config, "log_level": 0})  # no bootstrap.servers: it connects nowhere
    except (KafkaException, ValueError, TypeError) as exc:
        error = exc.args[0] if exc.args else exc
        message = error.str() if hasattr(error, "str") else str(error)
        for key, value in config.items():
            if is_secret(key) and value:
                message = message.replace(value, _MASK)
        raise click.BadParameter(
            f"Kafka client setting refused: {message}", param_hint="'-X' / '--kafka-config'"
        ) from None


def kafka_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-X`` and ``--kafka-config``; the command receives their merged ``kafka_config``."""

    @functools.wraps(f)
    def command(*args: Any, kafka_settings: tuple[str, ...], kafka_config_file: str | None, **kwargs: Any) -> Any:
        return f(*args, kafka_config=load_kafka_config(kafka_settings, kafka_config_file), **kwargs)

    command = env_option(
        "--kafka-config",
        "kafka_config_file",
        type=click.Path(exists=True, dir_okay=False),
        help="Kafka client settings from a properties file (key=value lines, as for the Java clients); "
        "-X settings win over it.",
    )(command)
    return env_option(
        "-X",
        "kafka_settings",
        env="KAFKA_SETTINGS",
        multiple=True,
        metavar="KEY=VALUE",
        help="A librdkafka client setting for every Kafka client of the command, e.g. "
        "-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 (repeatable; the variable: "
        "space-separated).",
    )(command)
