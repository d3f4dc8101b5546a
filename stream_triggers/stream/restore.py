"""Restore: bring each newly owned partition's store up to its changelog partition's end.

The end is found by fetching to EOF (:func:`~stream_triggers.kafka.clients.read_to_end`),
not by ListOffsets: Tansu's high watermark can be wrong, a fetch's EOF is not.  Records
are read from the store's checkpoint on and written in one RocksDB batch per fetched
batch, with the new checkpoint, so an interrupted restore resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer

from stream_triggers.events.codec import CodecError, decode
from stream_triggers.kafka.clients import read_to_end
from stream_triggers.stream.partition import Partition

__all__ = ["RestoreResult", "restore"]

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    records: int = 0
    seconds: float = 0.0
    complete: bool = True
    """False when ``should_stop`` ended the read early (the stores hold a consistent prefix)."""


def restore(
    client: Consumer,
    changelog: str,
    partitions: list[Partition],
    timeout_s: float,
    *,
    on_progress: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RestoreResult:
    """Replay ``changelog`` into each partition's store, from its checkpoint to the end.

    Raises :class:`~stream_triggers.kafka.clients.ReadTimeout` when a partition does
    not reach its end within ``timeout_s``.
    """
    result = RestoreResult()
    if not partitions:
        return result
    started = time.monotonic()
    by_number = {p.number: p for p in partitions}
    last = {p.number: p.store.changelog_checkpoint for p in partitions}
    start = {number: offset + 1 for number, offset in last.items()}
    for batch in read_to_end(client, changelog, start, timeout_s, on_progress=on_progress, should_stop=should_stop):
        rows: dict[int, list[tuple[str, int, bytes]]] = {}
        for message in batch:
            number, offset = message.partition(), message.offset()
            if offset <= last[number]:
                continue
            last[number] = offset
            rows.setdefault(number, [])
            try:
                _, snapshot = decode(message.value())
            except CodecError as exc:
                log.error("skipping unreadable changelog record %d:%d: %s", number, offset, exc)
                continue
            uid = snapshot["session_uid"]
            rows[number].append((uid, snapshot["applied_offset"], snapshot["state"]))
            by_number[number].forget(uid)
        for number, partition_rows in rows.items():
            by_number[number].store.write(partition_rows, last[number])
            result.records += len(partition_rows)
    result.complete = not (should_stop is not None and should_stop())
    result.seconds = time.monotonic() - started
    return result
