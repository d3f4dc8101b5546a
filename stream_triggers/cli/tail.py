"""``stream-triggers tail``: decode and print the records of one topic, one line each.

Reads every partition of the topic without joining a consumer group (nothing is
committed, nobody's offsets move).  A line is ``<partition>:<offset> <key> <Type>
field=value ...``; ``*_json`` fields are shown as the JSON they carry, timestamps
(``*_at``, ``not_before``; microseconds since the epoch) as ISO 8601 UTC, bytes by size.
A changelog ``SessionSnapshot`` also gets a summary of the state it holds.  A record
that cannot be decoded is printed as such - tailing never stops on bad data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from stream_triggers.cli.kafka_settings import kafka_options
from stream_triggers.cli.options import EXIT_INPUT, bootstrap_option, check_broker, env_option, fail, prefix_option
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.state_format import (
    KIND_HEADER,
    KIND_INSTANCE,
    StateFormatError,
    decode_state,
    state_kind,
    unpack,
)
from stream_triggers.events.state_parts import read_header
from stream_triggers.kafka import clients

__all__ = ["SHORT_NAMES", "format_record", "resolve_topic", "tail", "tail_topic"]

SHORT_NAMES = ("events", "task-runs", "task-results", "sessions", "changelog", "dead-letter")
_TIMESTAMP_FIELDS = frozenset({"produced_at", "cause_produced_at", "not_before"})


def resolve_topic(topic: str, prefix: str, existing: set[str]) -> str:
    """The full topic name for a full or short (``events``, ``task-runs``, ...) name.

    Raises :class:`LookupError` naming what exists when the topic is not on the broker.
    """
    full = f"{prefix}.{topic}" if topic in SHORT_NAMES else topic
    if full in existing:
        return full
    ours = sorted(name for name in existing if name.startswith(f"{prefix}."))
    raise LookupError(
        f"no topic {full!r} on the broker. Give a full topic name or a short one "
        f"({', '.join(SHORT_NAMES)}) under --topic-prefix {prefix!r}; "
        + (f"topics under that prefix: {', '.join(ours)}." if ours else "no topics exist under that prefix.")
    )


def tail_topic(
    bootstrap: str,
    prefix: str,
    topic: str,
    from_beginning: bool = True,
    max_records: int | None = None,
    idle_exit: float | None = None,
    echo: Callable[[str], Any] = print,
    *,
    kafka_config: Mapping[str, Any] | None = None,
) -> int:
    """Print the records of ``topic`` until ``max_records`` were printed, ``idle_exit`` seconds
    passed without a record, or Ctrl-C; returns how many were printed."""
    # A reader: partitions assigned, never a group joined, nothing committed.
    consumer = clients.consumer(bootstrap, "tail", kafka_config=kafka_config, fetch_wait_max_ms=50)
    printed = 0
    try:
        metadata = consumer.list_topics(timeout=10)
        existing = {name for name, meta in metadata.topics.items() if meta.error is None}
        full = resolve_topic(topic, prefix, existing)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(full, p, start) for p in sorted(metadata.topics[full].partitions)])
        last_record = time.monotonic()
        while max_records is None or printed < max_records:
            wait = 0.2 if idle_exit is None else max(0.0, min(0.2, last_record + idle_exit - time.monotonic()))
            batch = consumer.consume(100 if max_records is None else min(100, max_records - printed), wait)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    continue
                echo(format_record(message.partition(), message.offset(), message.key(), message.value()))
                printed += 1
                last_record = time.monotonic()
                if max_records is not None and printed >= max_records:
                    break
            if idle_exit is not None and not batch and time.monotonic() - last_record >= idle_exit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return printed


@click.command()
@bootstrap_option
@prefix_option
@click.argument("topic")
@env_option(
    "--from-beginning/--from-end",
    env="TAIL_FROM_BEGINNING",
    default=True,
    show_default=True,
    help="Start at the oldest record kept, or print only records that arrive from now on.",
)
@env_option(
    "--max",
    "max_records",
    env="TAIL_MAX",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many records [default: never].",
)
@env_option(
    "--idle-exit",
    env="TAIL_IDLE_EXIT",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds without records [default: never; Ctrl-C stops].",
)
@kafka_options
def tail(
    bootstrap: str,
    topic_prefix: str,
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    idle_exit: float | None,
    kafka_config: dict[str, str],
) -> None:
    """Decode and print records of TOPIC (a full name, or a short one: events, task-runs, ...)."""
    check_broker(bootstrap, kafka_config)
    try:
        tail_topic(
            bootstrap,
            topic_prefix,
            topic,
            from_beginning,
            max_records,
            idle_exit,
            click.echo,
            kafka_config=kafka_config,
        )
    except LookupError as exc:
        fail(str(exc), EXIT_INPUT)


def format_record(partition: int, offset: int, key: bytes | None, value: bytes | None) -> str:
    """One line for one record, whatever its bytes."""
    head = f"{partition}:{offset} {_key(key)}"
    if value is None:
        return f"{head} <tombstone>"
    try:
        type_name, record = decode(value)
    except CodecError as exc:
        return f"{head} <undecodable {exc.reason}: {exc}> ({len(value)} bytes)"
    key_text = None if key is None else key.decode("utf-8", "replace")
    fields = [
        f"{name}={_field(name, field)}"
        for name, field in record.items()
        if not (name == "session_uid" and field == key_text)
    ]
    line = f"{head} {type_name} {' '.join(fields)}"
    if type_name == "SessionSnapshot":
        line += f" | {_state_summary(record['state'])}"
    return line


def _key(key: bytes | None) -> str:
    if key is None:
        return "key=-"
    try:
        return f"key={_text(key.decode())}"
    except UnicodeDecodeError:
        return f"key={key!r}"


def _field(name: str, value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if name.endswith("_json") and isinstance(value, str):
        try:
            return json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            return _text(value)
    if name in _TIMESTAMP_FIELDS and isinstance(value, int) and value > 0:
        return datetime.fromtimestamp(value / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, str):
        return _text(value)
    return json.dumps(value)


def _text(value: str) -> str:
    """A string as is when it reads unambiguously, else JSON-quoted."""
    if value and not any(c.isspace() or c in "\"'=|" for c in value) and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


def _state_summary(data: bytes) -> str:
    try:
        kind = state_kind(data)
        if kind == KIND_HEADER:  # a session in parts (docs/state-format.md)
            return f"state: header part, {read_header(data).instance_count} instances"
        if kind == KIND_INSTANCE:
            row = unpack(data[10:])
            return f"state: instance part {row[2]} {row[4]}"
        state = decode_state(data)
    except StateFormatError as exc:
        return f"state: <unreadable: {exc}>"
    counts: dict[str, int] = {}
    for instance in state.instances.values():
        counts[str(instance.status)] = counts.get(str(instance.status), 0) + 1
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    unresolved = ", ".join(config.name for config in state.unresolved_tasks()) or "none"
    parts = [
        f"state: {len(state.tasks)} task(s)",
        f"instances: {statuses}",
        f"unresolved: {unresolved}",
        f"fired: {', '.join(state.latest_kwargs) or 'none'}",
    ]
    return "; ".join(parts)
