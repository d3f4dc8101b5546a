"""The topics of a stream-triggers deployment, and their idempotent creation.

Why explicit configs: Tansu reports back only the topic configs set at creation, and a
changelog that is not compacted grows forever, so every topic is created with its
``cleanup.policy`` (and ``retention.ms`` for the non-compacted ones) spelled out.

Why the partition check: the worker restores a partition's session state from the
changelog partition with the same number, so ``events`` and ``changelog`` must have the
same partition count (co-partitioned).  An existing topic's count wins over the
requested one; two existing topics that disagree are an error, never silently used.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka import clients

__all__ = ["DEFAULT_PREFIX", "TopicsError", "Topics", "create_topics", "topic_configs"]

DEFAULT_PREFIX = "triggers"
_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")
_log = logging.getLogger(__name__)


class TopicsError(StreamTriggersError, RuntimeError):
    """The topics could not be created, or existing ones break the stream contract."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under ``prefix`` (``triggers.events``, ``triggers.task-runs``, ...)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _LEGAL.match(self.prefix) or len(self.prefix) > 200:
            raise ValueError(f"topic prefix {self.prefix!r} must be 1-200 characters of [A-Za-z0-9._-]")

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def task_runs(self) -> str:
        return f"{self.prefix}.task-runs"

    @property
    def task_results(self) -> str:
        return f"{self.prefix}.task-results"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}.sessions"

    @property
    def changelog(self) -> str:
        return f"{self.prefix}.changelog"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def owners(self) -> str:
        """Which worker serves which partition's state (:mod:`stream_triggers.kafka.owners`)."""
        return f"{self.prefix}.owners"

    @property
    def all(self) -> tuple[str, ...]:
        return (
            self.events,
            self.task_runs,
            self.task_results,
            self.sessions,
            self.changelog,
            self.dead_letter,
            self.owners,
        )


CHANGELOG_DELETE_RETENTION_MS = 7 * 24 * 3600 * 1000
"""How long compaction keeps a purged session's tombstones: a worker's state dir that was
offline for less than this still sees them on restore (docs/operating.md, "Sessions that end")."""


def topic_configs(topics: Topics, name: str) -> dict[str, str]:
    """The configs ``name`` is created with: compacted changelog and owners, everything else kept forever."""
    if name == topics.changelog:
        return {"cleanup.policy": "compact", "delete.retention.ms": str(CHANGELOG_DELETE_RETENTION_MS)}
    if name == topics.owners:
        return {"cleanup.policy": "compact"}
    return {"cleanup.policy": "delete", "retention.ms": "-1"}


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    # All topics, never list_topics(topic=...): a metadata request naming a missing topic
    # auto-creates it (Tansu: 4 partitions, no configs) unless the client says otherwise.
    metadata = admin.list_topics(timeout=timeout)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}


def create_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 4,
    replication: int = 1,
    *,
    timeout: float = 30.0,
    kafka_config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Create the topics that are missing; returns ``{topic: "created" | "exists"}``.

    ``kafka_config``: the user's client settings (security...) for the admin client.

    ``events`` and ``changelog`` always end up with the same partition count: if one
    exists, the other is created like it; if both exist and differ, :class:`TopicsError`.
    """
    if partitions < 1 or replication < 1:
        raise ValueError(f"partitions ({partitions}) and replication ({replication}) must be at least 1")
    admin = clients.admin(bootstrap, kafka_config=kafka_config, allow_auto_create_topics="false", logger=_log)
    deadline = time.monotonic() + timeout
    try:
        existing = _partition_counts(admin, timeout)
    except KafkaException as exc:
        raise TopicsError(f"cannot read topic metadata from {bootstrap}: {exc}") from exc
    pair = [existing[name] for name in (topics.events, topics.changelog) if name in existing]
    if len(set(pair)) > 1:
        raise _mismatch(topics, existing)
    pair_count = pair[0] if pair else partitions
    if pair_count != partitions:
        _log.warning("%s and %s keep %d partitions (not %d)", topics.events, topics.changelog, pair_count, partitions)

    def count(name: str) -> int:
        if name == topics.owners:
            return 1  # read whole by every reader (kafka/owners.py)
        return pair_count if name in (topics.events, topics.changelog) else partitions

    new = [
        NewTopic(name, count(name), replication, config=topic_configs(topics, name))
        for name in topics.all
        if name not in existing
    ]
    result = {name: "exists" for name in topics.all if name in existing}
    if new:
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator is fine
                    raise TopicsError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
                result[name] = "exists"
    _await_visible(admin, topics, deadline)
    return {name: result[name] for name in topics.all}


def _await_visible(admin: AdminClient, topics: Topics, deadline: float) -> None:
    """Wait until metadata shows them all (Kafka propagates creation lazily), then check co-partitioning."""
    while True:
        try:
            counts = _partition_counts(admin, max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            raise TopicsError(f"cannot read topic metadata: {exc}") from exc
        if all(counts.get(name) for name in topics.all):
            break
        if time.monotonic() > deadline:
            missing = [name for name in topics.all if not counts.get(name)]
            raise TopicsError(f"topics {missing} did not appear in the metadata (with partitions) in time")
        time.sleep(0.1)
    if counts[topics.events] != counts[topics.changelog]:
        raise _mismatch(topics, counts)


def _mismatch(topics: Topics, counts: Mapping[str, int]) -> TopicsError:
    return TopicsError(
        f"{topics.events} has {counts[topics.events]} partitions but {topics.changelog} has "
        f"{counts[topics.changelog]}: they must be co-partitioned (same count), because each events "
        f"partition's state is restored from the changelog partition with the same number. "
        f"Recreate {topics.changelog} with {counts[topics.events]} partitions."
    )
