"""Bytes each side wrote to the broker: key + value sizes of its changelog and output topics.

Read after the run, while the run's broker is still up, so that both sides are measured
the same way (what is in the topics, not what a client says it sent).  A size per input
event compares designs: how much state the worker writes back, how much it publishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream_triggers.kafka import clients

READ_TIMEOUT_S = 120.0


def list_topics(bootstrap: str) -> list[str]:
    """The names of the topics on the broker (internal ``__`` ones left out)."""
    metadata = clients.admin(bootstrap).list_topics(timeout=10)
    return sorted(name for name in metadata.topics if not name.startswith("__"))


def topic_bytes(bootstrap: str, topic: str, timeout_s: float = READ_TIMEOUT_S) -> dict[str, int]:
    """Records and key/value bytes of every partition of ``topic``, read from the beginning."""
    metadata = clients.admin(bootstrap).list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    reader = clients.consumer(bootstrap, "bench-bytes", enable_partition_eof=True, fetch_wait_max_ms=10)
    records = key_bytes = value_bytes = 0
    try:
        start = {number: 0 for number in partitions}
        for batch in clients.read_to_end(reader, topic, start, timeout_s):
            for message in batch:
                records += 1
                key_bytes += len(message.key() or b"")
                value_bytes += len(message.value() or b"")
    finally:
        reader.close()
    return {"records": records, "key_bytes": key_bytes, "value_bytes": value_bytes, "bytes": key_bytes + value_bytes}


def bytes_written(
    bootstrap: str, changelogs: Iterable[str], outputs: Iterable[str], input_events: int
) -> dict[str, Any]:
    """Per-topic sizes and the two figures: changelog and output bytes per input event."""
    changelog = {topic: topic_bytes(bootstrap, topic) for topic in changelogs}
    output = {topic: topic_bytes(bootstrap, topic) for topic in outputs}
    changelog_total = sum(size["bytes"] for size in changelog.values())
    output_total = sum(size["bytes"] for size in output.values())
    return {
        "changelog_topics": changelog,
        "output_topics": output,
        "changelog_bytes": changelog_total,
        "output_bytes": output_total,
        "changelog_bytes_per_event": round(changelog_total / input_events, 2) if input_events else None,
        "output_bytes_per_event": round(output_total / input_events, 2) if input_events else None,
    }


def per_event_figures(sizes: dict[str, Any] | None) -> dict[str, Any]:
    """The figures of :func:`bytes_written` (``None`` when the topics could not be read)."""
    sizes = sizes or {}
    return {key: sizes.get(key) for key in ("changelog_bytes_per_event", "output_bytes_per_event")}


def try_bytes_written(
    bootstrap: str, changelogs: Iterable[str], outputs: Iterable[str], input_events: int
) -> dict[str, Any]:
    """:func:`bytes_written`, or ``{"error": ...}``: a failed read must not lose the run's other figures."""
    try:
        return bytes_written(bootstrap, changelogs, outputs, input_events)
    except Exception as exc:  # a benchmark reports what it could not measure
        return {"error": f"{type(exc).__name__}: {exc}"}
