"""Reading one session from the worker that owns it (interactive queries, docs/queries.md).

A read of one session should cost what that session costs, not what its changelog
partition ever held.  So the reader looks up the partition's owner in
``<prefix>.owners`` (one small compacted topic, kafka/owners.py) and asks it over HTTP
(ops/queries.py) for the session's committed record.  An answer counts only if it
comes from the advertised owner epoch or a later one; anything else - connection
refused, the partition moved on (404) or is still being restored (503) - is retried
with a fresh look at the owners topic until ``wait_s`` has passed, and then the
caller falls back to the changelog.  A partition no worker ever advertised (workers
without ``--metrics-port``, or an older topic set) falls back at once: waiting would
only slow every read of such a deployment down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException

from stream_triggers.kafka.owners import OwnerRecord, read_owners
from stream_triggers.ops.queries import OwnerUnavailable, ask_owner

__all__ = ["OwnerRead", "OwnerUnavailable", "read_from_owner"]

RETRY_PAUSE_S = 0.2


@dataclass(frozen=True, slots=True)
class OwnerRead:
    """The owner's answer: ``snapshot`` is a ``SessionSnapshot``-shaped record, None if it has no such session."""

    snapshot: dict[str, Any] | None
    owner: OwnerRecord


def read_from_owner(
    client: Consumer,
    owners_topic: str,
    uid: str,
    partition: int,
    partitions: int,
    wait_s: float,
    http_timeout_s: float,
) -> OwnerRead:
    """Ask the owner of ``partition`` for ``uid``; :class:`OwnerUnavailable` after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    tried: list[str] = []
    while True:
        left = max(0.05, deadline - time.monotonic())
        try:
            owner = read_owners(client, owners_topic, left).get(partition)
        except KafkaException as exc:
            raise OwnerUnavailable(f"cannot read {owners_topic}: {exc}") from exc
        if owner is None:
            never = f"no worker advertised partition {partition} in {owners_topic}"
            raise OwnerUnavailable("; then ".join([*tried, never]))  # not worth waiting for: see above
        try:
            answer = ask_owner(owner.endpoint, uid, partitions, min(http_timeout_s, left))
        except OwnerUnavailable as exc:
            problem = str(exc)
        else:
            if answer.partition == partition and answer.epoch >= owner.epoch:
                return OwnerRead(_snapshot(uid, answer.partition, answer.applied_offset, answer.state), owner)
            problem = (
                f"{owner.endpoint} answered for partition {answer.partition} epoch {answer.epoch}, "
                f"not partition {partition} epoch >= {owner.epoch}"
            )
        if not tried or tried[-1] != problem:
            tried.append(problem)
        if time.monotonic() + RETRY_PAUSE_S > deadline:
            raise OwnerUnavailable("; then ".join(tried))
        time.sleep(RETRY_PAUSE_S)


def _snapshot(uid: str, partition: int, applied_offset: int, state: bytes | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "session_uid": uid,
        "produced_at": 0,
        "state": state,
        "input_partition": partition,
        "applied_offset": applied_offset,
    }
