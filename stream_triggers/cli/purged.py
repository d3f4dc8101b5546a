"""Was a session purged?  Its ``SessionPurged`` record on ``<prefix>.sessions``, if still there.

The changelog forgets a purged session entirely (its tombstones are compacted away after
``delete.retention.ms``); the sessions topic keeps the ``SessionPurged`` record for its
own retention, so ``inspect`` can tell "purged" from "never seen" while it lasts.  The
record sits on the session's partition (murmur2 of the UID, like every keyed record).
"""

from __future__ import annotations

import time
from typing import Any

from stream_triggers.events.codec import CodecError, decode
from stream_triggers.kafka import clients
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics

__all__ = ["find_purge", "purge_message"]


def find_purge(
    bootstrap: str, prefix: str, uid: str, timeout_s: float = 20.0, kafka_config: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The last ``SessionPurged`` record of ``uid`` (None: none, or the topic could not be read in time)."""
    topic = Topics(prefix).sessions
    key = uid.encode()
    consumer = clients.consumer(bootstrap, "inspect", kafka_config=kafka_config, enable_partition_eof=True)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        found = None
        start = {partition_for(key, len(metadata.partitions)): 0}
        for batch in clients.read_to_end(consumer, topic, start, timeout_s):
            for message in batch:
                if message.key() != key:
                    continue
                try:
                    type_name, record = decode(message.value() or b"")
                except CodecError:
                    continue
                if type_name == "SessionPurged":
                    found = record
        return found
    except clients.ReadTimeout:
        return None
    finally:
        consumer.close()


def purge_message(uid: str, record: dict[str, Any]) -> str:
    """What ``inspect`` says of a purged session."""
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record["produced_at"] / 1e6))
    why = "its retention after sessionFinalized" if record["reason"] == "retention" else "its TTL without input"
    return (
        f"Session {uid!r} is not found: it was purged at {at} ({why}; last input applied at offset "
        f"{record['input_partition']}:{record['applied_offset']}). A new input for it starts an empty session."
    )
