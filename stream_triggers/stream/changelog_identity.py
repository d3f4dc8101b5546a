"""Which changelog a partition store reflects: its checkpoint names a record, offset + digest.

A local store is a cache of the changelog.  It may be trusted only while the record its
checkpoint names is still there, byte for byte: a recreated changelog, a broker that lost
its data or a move to another cluster all fail that check, however far the new changelog
has grown since, and the worker rebuilds the store (docs/faults.md).
"""

from __future__ import annotations

import hashlib
import struct
from contextlib import closing

from confluent_kafka import Consumer, TopicPartition

from stream_triggers.kafka.clients import read_to_end
from stream_triggers.stream.partition import Partition

__all__ = ["CHANGELOG_RECORD", "changelog_record_row", "stores_of_another_changelog"]

_OFFSET = struct.Struct(">q")
_DIGEST_BYTES = 16

_LOST = " (the changelog was recreated or lost data, or this is another cluster)"
"""What a store of another changelog means (the log line says it)."""

CHANGELOG_RECORD = b"m:changelog-record"
"""Store key of the identity of the last changelog record the store reflects: offset + digest."""


def _digest(key: bytes | None, value: bytes | None) -> bytes:
    """A digest of a changelog record's key and value (a tombstone and an empty value differ)."""
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for part in (key, value):
        digest.update(b"\x00" if part is None else b"\x01" + _OFFSET.pack(len(part)) + part)
    return digest.digest()


def changelog_record_row(offset: int, key: bytes | None, value: bytes | None) -> tuple[bytes, bytes]:
    """The store row saying "this store reflects the changelog up to this very record".

    Written with every checkpoint (restore, the batch commit), in the same write batch.
    """
    return CHANGELOG_RECORD, _OFFSET.pack(offset) + _digest(key, value)


def stores_of_another_changelog(
    client: Consumer, changelog: str, partitions: list[Partition], timeout_s: float
) -> dict[int, str]:
    """Partitions whose store does not reflect ``changelog`` as it is -> why.

    A store reflects the changelog only if the record its identity names (offset, digest
    of key and value: :func:`changelog_record_row`) is at that offset, and the partition
    reaches the store's checkpoint.  It fails when the changelog was recreated, a broker
    lost its data, or the workers moved to another cluster - however far the new
    changelog has grown since - and also when compaction removed that very record (a
    later record of the same key, from another owner: the store is rebuilt, which is
    always safe, RocksDB being a cache of the changelog).  A store with a checkpoint but
    no identity was written by an earlier version and is rebuilt once.

    The read starts at the identity's offset, or at the listed high watermark when that
    is below it (never out of range; Tansu lists the newest batch's base offset + 1, below
    the real end, so the partition's EOF decides), and stops once every store is decided.
    """
    reasons: dict[int, str] = {}
    wanted: dict[int, tuple[int, bytes, int]] = {}  # number -> (identity offset, digest, checkpoint)
    start: dict[int, int] = {}
    for partition in partitions:
        checkpoint = partition.store.changelog_checkpoint
        if checkpoint < 0:
            continue
        identity = partition.store.get_raw(CHANGELOG_RECORD)
        if identity is None or len(identity) != _OFFSET.size + _DIGEST_BYTES:
            reasons[partition.number] = "it does not say which changelog record that is (an earlier version wrote it)"
            continue
        offset = _OFFSET.unpack_from(identity)[0]
        wanted[partition.number] = (offset, identity[_OFFSET.size :], checkpoint)
        _low, high = client.get_watermark_offsets(TopicPartition(changelog, partition.number), timeout=timeout_s)
        start[partition.number] = min(offset, max(high, 0))
    verified: set[int] = set()
    decided: set[int] = set()
    with closing(read_to_end(client, changelog, start, timeout_s)) as batches:
        for batch in batches:
            for message in batch:
                number, at = message.partition(), message.offset()
                if number in decided or at < wanted[number][0]:
                    continue
                offset, digest, checkpoint = wanted[number]
                if number not in verified:
                    if at != offset:
                        reasons[number] = (
                            f"its record at offset {offset} is gone, the next one is at {at} (compacted away, "
                            "or the changelog was recreated or lost data, or this is another cluster)"
                        )
                    elif _digest(message.key(), message.value()) != digest:
                        reasons[number] = f"the record at offset {offset} is not the one it applied{_LOST}"
                    else:
                        verified.add(number)
                    if number in reasons:
                        decided.add(number)
                        continue
                if at >= checkpoint:
                    decided.add(number)
            if decided >= set(wanted):
                break
    for number, (offset, _, checkpoint) in wanted.items():
        if number not in decided:
            missing = checkpoint if number in verified else offset
            reasons[number] = f"that partition ends before offset {missing}{_LOST}"
    return reasons
