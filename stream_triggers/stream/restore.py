"""Restore: bring each newly owned partition's store up to its changelog partition's end.

The end is found by fetching to EOF (:func:`~stream_triggers.kafka.clients.read_to_end`),
not by ListOffsets: Tansu's high watermark can be wrong, a fetch's EOF is not.  Records
are read from the store's checkpoint on and written in one RocksDB batch per fetched
batch, with the new checkpoint, so an interrupted restore resumes where it stopped.

A record only replaces what the store holds if it is newer (owner epoch, then applied
offset), and a record stamped with an epoch below one already seen in its partition
is stale - written by a worker that had lost the partition - and skipped
(docs/fencing.md).  So no restore ever takes a session back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.state_format import StateFormatError, newer, state_epoch
from stream_triggers.kafka.clients import read_to_end
from stream_triggers.stream.partition import Partition

__all__ = ["RestoreResult", "checkpoints_past_the_end", "restore"]

log = logging.getLogger(__name__)


@dataclass
class RestoreResult:
    records: int = 0
    stale: int = 0
    """Records skipped: stamped with an epoch below one seen before them, or older than the store's."""
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
    max_epoch = {p.number: p.store.max_epoch for p in partitions}
    start = {number: offset + 1 for number, offset in last.items()}
    for batch in read_to_end(client, changelog, start, timeout_s, on_progress=on_progress, should_stop=should_stop):
        rows: dict[int, dict[str, tuple[str, int, bytes]]] = {}
        for message in batch:
            number, offset = message.partition(), message.offset()
            if offset <= last[number]:
                continue
            last[number] = offset
            kept = rows.setdefault(number, {})
            try:
                _, snapshot = decode(message.value())
                uid, applied, state = snapshot["session_uid"], snapshot["applied_offset"], snapshot["state"]
                epoch = state_epoch(state)
            except (CodecError, StateFormatError) as exc:
                log.error("skipping unreadable changelog record %d:%d: %s", number, offset, exc)
                continue
            if epoch < max_epoch[number]:
                result.stale += 1
                log.warning(
                    "skipping stale changelog record %d:%d of %s: owner epoch %d, the partition is at %d",
                    number,
                    offset,
                    uid,
                    epoch,
                    max_epoch[number],
                )
                continue
            max_epoch[number] = epoch
            partition = by_number[number]
            current = kept.get(uid)
            if current is None:
                stored = partition.store.get(uid)
                current = None if stored is None else (uid, stored[0], stored[1])
            if current is not None and not newer(epoch, applied, _epoch_of(current[2]), current[1]):
                result.stale += 1
                continue
            kept[uid] = (uid, applied, state)
            partition.forget(uid)
        for number, partition_rows in rows.items():
            by_number[number].store.write(partition_rows.values(), last[number], max_epoch[number])
            result.records += len(partition_rows)
    result.complete = not (should_stop is not None and should_stop())
    result.seconds = time.monotonic() - started
    return result


def checkpoints_past_the_end(
    client: Consumer, changelog: str, partitions: list[Partition], timeout_s: float
) -> dict[int, int]:
    """Partitions whose store's checkpoint lies past their changelog's end -> that end.

    It happens when the changelog was recreated, a broker lost its data, or the workers
    moved to another cluster: a restore from the checkpoint would wait for records that
    never come (Tansu) or silently skip some (a reset on Apache Kafka).  The listed high
    watermark cannot decide alone (Tansu lists the newest batch's base offset + 1, below
    the real end), so when the checkpoint is past it the end is found by fetching from it
    to the partition's EOF - at most the newest batch.
    """
    suspects = {}
    for partition in partitions:
        checkpoint = partition.store.changelog_checkpoint
        if checkpoint < 0:
            continue
        _low, high = client.get_watermark_offsets(TopicPartition(changelog, partition.number), timeout=timeout_s)
        if checkpoint + 1 > high:
            suspects[partition.number] = (checkpoint, max(high, 0))
    if not suspects:
        return {}
    ends = {number: start for number, (_checkpoint, start) in suspects.items()}
    for batch in read_to_end(client, changelog, ends, timeout_s):
        for message in batch:
            ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
    return {number: end for number, end in ends.items() if suspects[number][0] + 1 > end}


def _epoch_of(state: bytes) -> int:
    """The epoch of stored state; unreadable state is older than anything."""
    try:
        return state_epoch(state)
    except StateFormatError:
        return -1
