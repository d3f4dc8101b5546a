"""``<prefix>.owners``: which worker serves which ``events`` partition, and where to ask it.

Why a topic: a reader of one session (the ``kafka`` storage, ``stream-triggers
inspect``) asks the worker that owns the session's partition for its committed state
(interactive queries, docs/queries.md) instead of scanning the changelog partition.
It must find that worker.  Kafka Streams puts each member's query endpoint in the
group's member metadata; on Tansu 0.6, ``DescribeGroups`` answers a stable group with
no members (and ``ListGroups`` with no groups), so the group cannot tell a reader
anything.  Instead each worker, once it restored a newly assigned partition, writes
one record here: key = the partition number, value = its endpoint and its owner
epoch (the group generation stamped on every state it writes, docs/fencing.md).

The topic is compacted with one partition: a reader reads it whole (one record per
partition and rebalance, a few kilobytes) and keeps, per partition, the record with
the highest epoch - a worker that lost a partition never writes to it again, and the
next owner writes with a higher epoch, so the newest owner always wins however the
records interleave.

Why JSON and not Avro like the stream's records: the value is an operator-readable
directory entry (``tail``, kcat), not part of the event stream; no schema evolution
is needed beyond "unknown keys are ignored".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka.clients import ReadTimeout, publish_and_wait

__all__ = [
    "OwnerRecord",
    "OwnersFormatError",
    "decode_owner",
    "encode_owner",
    "latest_owners",
    "publish_owners",
    "read_owners",
]


class OwnersFormatError(StreamTriggersError, ValueError):
    """An owners record that is not what a worker writes."""


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """``partition`` is served at ``endpoint`` (``host:port``) by the owner of ``epoch``."""

    partition: int
    endpoint: str
    epoch: int
    group: str = ""
    advertised_at: float = 0.0
    """Unix time of the advertisement (for operators)."""


def encode_owner(record: OwnerRecord) -> tuple[bytes, bytes]:
    """(key, value) of the owners record."""
    value = {
        "partition": record.partition,
        "endpoint": record.endpoint,
        "epoch": record.epoch,
        "group": record.group,
        "advertised_at": record.advertised_at,
    }
    return str(record.partition).encode(), json.dumps(value, separators=(",", ":")).encode()


def decode_owner(value: bytes) -> OwnerRecord:
    try:
        data = json.loads(value)
        return OwnerRecord(
            partition=int(data["partition"]),
            endpoint=str(data["endpoint"]),
            epoch=int(data["epoch"]),
            group=str(data.get("group", "")),
            advertised_at=float(data.get("advertised_at", 0.0)),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise OwnersFormatError(f"not an owners record: {value[:80]!r} ({exc})") from exc


def publish_owners(
    producer: Producer,
    topic: str,
    partitions: Mapping[int, int],
    endpoint: str,
    group: str,
    timeout_s: float,
) -> None:
    """Advertise ``endpoint`` as the owner of ``{partition: epoch}``; return once acknowledged."""
    now = time.time()
    records = []
    for number, epoch in sorted(partitions.items()):
        key, value = encode_owner(OwnerRecord(number, endpoint, epoch, group, now))
        records.append((topic, key, value, 0))
    publish_and_wait(producer, records, timeout_s, f"owner records of partitions {sorted(partitions)}")


def latest_owners(messages: Iterable[Any]) -> dict[int, OwnerRecord]:
    """Partition -> the owner with the highest epoch among ``messages`` (later records win ties)."""
    owners: dict[int, OwnerRecord] = {}
    for message in messages:
        value = message.value()
        if value is None:
            continue
        try:
            record = decode_owner(value)
        except OwnersFormatError:
            continue  # not ours; a reader falls back to the changelog for that partition
        kept = owners.get(record.partition)
        if kept is None or record.epoch >= kept.epoch:
            owners[record.partition] = record
    return owners


def read_owners(client: Consumer, topic: str, timeout_s: float) -> dict[int, OwnerRecord]:
    """Read the whole owners topic (``client`` has ``enable.partition.eof``).

    Message by message with ``poll``, not ``read_to_end``'s batched ``consume``: that
    one waits out its whole timeout unless a full batch arrives, and this topic holds
    a handful of records - the wait would be most of a reader's fast path.
    """
    messages: list[Any] = []
    client.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReadTimeout(f"reading {topic}: no end within {timeout_s} s")
            message = client.poll(min(left, 0.5))
            if message is None:
                continue
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                return latest_owners(messages)
            else:
                raise KafkaException(error)
    finally:
        client.unassign()
