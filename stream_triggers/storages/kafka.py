"""The application side of the stream: manager calls become events on ``triggers.events``.

``TriggerManager(storage_backends.get('kafka', uid=..., bootstrap=..., kafka_config={...}))``
publishes each operation (configure, fire, replay, skip, status and metadata updates) as
an event keyed by the session UID, through an idempotent producer, and waits until the
broker acknowledged it.  The stream workers apply it; hooks run there, not here.

Reads (tasks, instances, unresolved tasks...) return the state the workers last
committed for the session.  They ask the worker that owns the session's partition
(storages/owner_reads.py, docs/queries.md: a read costs one session, not a partition);
when no owner answers within ``owner_wait_s``, they read the session's changelog
partition to its end; when that times out too, :class:`SessionUnreadable` says what
each path answered (``read_from`` chooses one path only).  A session no worker has
committed yet is a clear :class:`SessionNotFound`.

Direct edits: under ``acquire_lock()``, edits of an instance read from here (its status
or metadata) are published by ``save()`` as the events the manager would publish
(``InstanceStatusUpdateRequested``, ``InstanceMetadataUpdateRequested``); an edit no
event expresses (``create_instance()``, changed kwargs, a removed metadata key) raises
:class:`UnsupportedEdit` at once.  Nothing is dropped silently.

Early refusals: a replay, skip, status or metadata update, or logs-resolved mark is
checked against the session's committed state before it is published (when the session
has one), and raises what the worker would answer (``UnknownInstance``,
``OperationNotAllowed``).  The committed state may lag events still in flight, so a
refusal can be retried once they are applied; the worker's dead letter stays the final
word for what passes here.  ``check_committed=False`` publishes without the check (one
changelog read less, for callers that checked already).

Bounded waits: every broker call (a publish, a metadata lookup, a changelog read)
waits at most ``timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`), then raises
:class:`BrokerTimeout` naming what was not answered; a publish that timed out may or
may not have reached the broker (the worker ignores a duplicate status report, not a
duplicate fire).  After a timeout or a fatal producer error the process-wide producer is
replaced, so a broker that lost its data costs one failed publish (storages/producers.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from stream_triggers.engine import (
    Effect,
    Input,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    SessionState,
    SkipRequested,
    StatusUpdated,
    step,
)
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import encode
from stream_triggers.events.envelope import event_record
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import decode_state
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.kafka import clients
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.kafka.topics import Topics
from stream_triggers.storages.base import BaseTriggerStorage, utc_now
from stream_triggers.storages.owner_reads import OwnerUnavailable, read_from_owner
from stream_triggers.storages.producers import _producers as _producers  # (tests drop them between brokers)
from stream_triggers.storages.producers import retire_if_broken, shared_producer
from stream_triggers.types import Status, TaskConfig, TaskInstance

__all__ = [
    "BOOTSTRAP_ENV",
    "DEFAULT_TIMEOUT_S",
    "BrokerTimeout",
    "KafkaStorage",
    "RecordTooLarge",
    "SessionNotFound",
    "SessionUnreadable",
    "UnsupportedEdit",
    "shared_producer",
]

BOOTSTRAP_ENV = "STREAM_TRIGGERS_BOOTSTRAP"

DEFAULT_TIMEOUT_S = 10.0
"""Seconds a kafka storage waits for the broker (publish, metadata, changelog read) before
raising :class:`BrokerTimeout`."""

READ_FROM = ("auto", "owner", "changelog")

_DEFAULT_MAX_RECORD_BYTES = 1_000_000  # librdkafka's message.max.bytes
_RECORD_OVERHEAD_BYTES = 1_024  # headers, key and batch framing around the value

_partition_counts: dict[tuple[str, str], int] = {}


class SessionNotFound(StreamTriggersError, LookupError):
    """No worker has committed state for this session (yet)."""


class BrokerTimeout(StreamTriggersError, KafkaException):
    """The broker did not answer within the storage's ``timeout_s``."""


class SessionUnreadable(BrokerTimeout):
    """Neither the session's owner nor (when allowed) its changelog partition answered in time."""


class RecordTooLarge(StreamTriggersError, ValueError):
    """An event is larger than a Kafka record may be (``message.max.bytes``)."""


class UnsupportedEdit(StreamTriggersError, RuntimeError):
    """A direct edit of the session that no event can carry to the worker."""


_CHECKED_INPUTS = (ReplayRequested, SkipRequested, StatusUpdated, MetadataUpdated, LogsResolved)
"""Inputs about one existing instance: checked against the committed state before publishing."""


def max_record_bytes(kafka_config: Mapping[str, Any] | None) -> int:
    """The largest event value worth producing under these client settings."""
    limit = int((kafka_config or {}).get("message.max.bytes", _DEFAULT_MAX_RECORD_BYTES))
    return limit - _RECORD_OVERHEAD_BYTES


def state_of(snapshot: Mapping[str, Any]) -> tuple[SessionState, int]:
    """The session state and the applied input offset a changelog snapshot carries."""
    return decode_state(snapshot["state"]), snapshot["applied_offset"]


class KafkaStorage(BaseTriggerStorage):
    """Publishes a session's operations as events; reads its committed state."""

    default_task_runner_name = "kafka"

    def __init__(
        self,
        uid: str,
        bootstrap: str | None = None,
        topic_prefix: str = "triggers",
        *,
        producer: Producer | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        kafka_config: Mapping[str, Any] | None = None,
        check_committed: bool = True,
        owner_wait_s: float = 3.0,
        read_from: str = "auto",
    ) -> None:
        """``check_committed=False`` skips the early refusals (for callers that checked already)."""
        super().__init__(uid)
        bootstrap = bootstrap or os.environ.get(BOOTSTRAP_ENV)
        if not bootstrap:
            raise ValueError(f"The kafka storage needs the broker address: pass bootstrap=... or set ${BOOTSTRAP_ENV}.")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}.")
        if read_from not in READ_FROM:
            raise ValueError(f"read_from must be one of {', '.join(READ_FROM)}, not {read_from!r}.")
        self.bootstrap = bootstrap
        self.topics = Topics(topic_prefix)
        self.timeout_s = timeout_s
        self.kafka_config = dict(kafka_config or {})
        """The user's librdkafka settings (security, timeouts...), for every client this storage builds."""
        self._given_producer = producer
        """The caller's producer (the caller owns it), or None: the process-wide one (storages/producers.py)."""
        self.check_committed = check_committed
        self.owner_wait_s = owner_wait_s
        """How long a read tries the session's owner (re-reading who it is) before the changelog."""
        self.read_from = read_from
        """``auto``: the owner, else the changelog; ``owner``: only the owner; ``changelog``: only the changelog."""
        self.read_source = ""
        """Where the last read came from: ``owner HOST:PORT (...)`` or ``changelog ...``."""
        self._key = uid.encode()

    @property
    def _producer(self) -> Producer:
        """Looked up at each use: a shared producer found broken is replaced (storages/producers.py)."""
        if self._given_producer is not None:
            return self._given_producer
        return shared_producer(self.bootstrap, self.kafka_config, timeout_s=self.timeout_s)

    def fresh(self) -> KafkaStorage:
        return KafkaStorage(
            self.uid,
            self.bootstrap,
            self.topics.prefix,
            producer=self._given_producer,
            timeout_s=self.timeout_s,
            kafka_config=self.kafka_config,
            check_committed=self.check_committed,
            owner_wait_s=self.owner_wait_s,
            read_from=self.read_from,
        )

    # -- writes: publish -----------------------------------------------------------------

    def apply(self, event: Input) -> list[Effect]:
        """Check ``event`` against the committed state, publish it; the owning worker applies it."""
        if self.check_committed and isinstance(event, _CHECKED_INPUTS):
            self._refuse_early(event)
        self.publish(event)
        self.invalidate_cache()  # the committed state will change
        return []

    def _refuse_early(self, event: Input) -> None:
        """Raise what the worker would answer, if the committed state already shows it."""
        try:
            committed = self.state
        except SessionNotFound:
            return  # nothing committed yet: the worker decides (dead letter if invalid)
        step(committed, event)  # UnknownInstance, OperationNotAllowed... as the worker would raise

    def publish(self, event: Input, *, timeout_s: float | None = None, max_bytes: int | None = None) -> None:
        """Publish one input for this session and wait for the broker's acknowledgement.

        Raises :class:`RecordTooLarge` (nothing sent) when the record exceeds ``max_bytes``
        (default: from ``message.max.bytes``) or the broker refuses its size, and
        :class:`BrokerTimeout` when the broker does not acknowledge it in time.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        limit = max_record_bytes(self.kafka_config) if max_bytes is None else max_bytes
        type_name, fields = record_from_input(event)
        value = encode(type_name, event_record(type_name, self.uid, **fields))
        if len(value) > limit:
            raise RecordTooLarge(
                f"{type_name} for session {self.uid!r} is {len(value):,} bytes, above the {limit:,}-byte "
                f"record limit (message.max.bytes less framing): make the payload smaller."
            )
        what = f"{type_name} for session {self.uid!r}"
        producer = self._producer
        try:
            clients.publish_and_wait(
                producer, [(self.topics.events, self._key, value, self._events_partition())], timeout_s, what
            )
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            retired = retire_if_broken(producer, error, what)
            raise _clear_error(exc, what, self.bootstrap, timeout_s, retired) from exc

    def _events_partition(self) -> int:
        """The session's partition, computed here so any producer (whatever its partitioner)
        puts the session's events where the worker, the executors and the changelog expect."""
        count = _partition_counts.get((self.bootstrap, self.topics.events))
        if count is None:
            count = self._partition_count(self.topics.events, self._producer)
            _partition_counts[(self.bootstrap, self.topics.events)] = count
        return partition_for(self._key, count)

    def _partition_count(self, topic: str, client: Any) -> int:
        try:
            metadata = client.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise _clear_error(exc, f"metadata of {topic!r}", self.bootstrap, self.timeout_s) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise SessionNotFound(
                f"Topic {topic!r} does not exist on {self.bootstrap} (run `stream-triggers topics create`)."
            )
        return len(found.partitions)

    def save(self) -> None:
        """Publish the edits made to instances read under the lock (operations were published by ``apply``).

        Every edit is checked before the first is published: one that no event carries
        raises :class:`UnsupportedEdit` and nothing is sent.
        """
        if not self.has_lock:
            raise RuntimeError("You must ``acquire_lock`` before saving!")
        if self._state is None or not self._views:
            return
        events = [event for view in self._views.values() for event in self._edit_events(view)]
        for event in events:
            self.publish(event)
        if events:
            self.invalidate_cache()

    def _edit_events(self, view: TaskInstance) -> list[Input]:
        """The events that carry the edits of ``view`` (none if unchanged)."""
        assert self._state is not None
        stored = self._state.instances.get(view.name)
        if stored is None or view.same_as(stored):
            return []
        if view.kwargs != stored.kwargs or set(view.abandon_state) != set(stored.abandon_state):
            raise UnsupportedEdit(
                f"Instance {view.name!r}: the kafka storage cannot publish changed kwargs or abandon state "
                f"(no event carries them); use replay_failed_instance(..., replacement_kwargs) instead."
            )
        if view.config is not stored.config:
            raise UnsupportedEdit(f"Instance {view.name!r}: its task configuration cannot be swapped by hand.")
        removed = sorted(set(stored.metadata) - set(view.metadata))
        if removed:
            raise UnsupportedEdit(
                f"Instance {view.name!r}: the kafka storage cannot remove metadata keys {removed} "
                f"(metadata updates merge); set them to None instead."
            )
        changed = {k: v for k, v in view.metadata.items() if k not in stored.metadata or stored.metadata[k] != v}
        status = Status(view.status)
        if status != stored.status:
            return [StatusUpdated(view.name, status, changed, False, None, utc_now())]
        return [MetadataUpdated(view.name, changed, utc_now())]

    def create_instance(self, task_config: TaskConfig | str, **kwargs: Any) -> TaskInstance:
        """Refused: no event creates an instance by hand (instances come from fires and replays)."""
        name = task_config.name if isinstance(task_config, TaskConfig) else task_config
        raise UnsupportedEdit(
            f"create_instance({name!r}) cannot be published by the kafka storage: instances are created by "
            f"the worker when triggers fire (andEvery for more than one) or by replay_failed_instance()."
        )

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        raise NotImplementedError("the kafka storage publishes events; it never writes state itself")

    def _session_lock(self) -> nullcontext[None]:
        return nullcontext()  # the worker owning the partition serialises the session

    # -- reads: the owner, else the changelog -----------------------------------------------

    def _load_state(self) -> tuple[SessionState | None, int]:
        snapshot = self.read_snapshot()
        if snapshot is None:
            raise SessionNotFound(
                f"No committed state for session {self.uid!r} in {self.topics.changelog!r} on "
                f"{self.bootstrap}: no worker has applied an event for it yet, or it was purged "
                f"(--session-retention / --session-ttl), or the bootstrap address / topic prefix is wrong; "
                f"read from {self.read_source}."
            )
        return state_of(snapshot)

    def read_snapshot(self) -> dict[str, Any] | None:
        """The session's committed ``SessionSnapshot`` (its state still encoded), or None.

        From the owner of its partition first, else read from its changelog partition to
        the end (as ``read_from`` allows); :class:`SessionUnreadable` when neither answered.
        """
        consumer = clients.consumer(self.bootstrap, "reader", kafka_config=self.kafka_config, enable_partition_eof=True)
        topic = self.topics.changelog
        try:
            count = self._partition_count(topic, consumer)
            partition = partition_for(self._key, count)
            reader = ChangelogReader(self.uid)  # newest state, never a stale writer's (docs/fencing.md)
            unavailable = "not asked (read_from='changelog')"
            if self.read_from != "changelog":
                try:
                    answer = read_from_owner(
                        consumer, self.topics.owners, self.uid, partition, count, self.owner_wait_s, self.timeout_s
                    )
                except OwnerUnavailable as exc:
                    unavailable = str(exc)
                    if self.read_from == "owner":
                        raise SessionUnreadable(f"session {self.uid!r}: no owner answered: {unavailable}") from exc
                else:
                    owner = answer.owner
                    self.read_source = f"owner {owner.endpoint} (partition {partition}, epoch {owner.epoch})"
                    if answer.snapshot is not None:
                        reader.offer(answer.snapshot, partition)
                    return reader.snapshot()
            try:
                for batch in clients.read_to_end(consumer, topic, {partition: 0}, self.timeout_s):
                    for message in batch:
                        reader.add(message.key(), message.value(), partition, message.headers())
            except KafkaException as exc:
                error = _clear_error(exc, f"{topic}[{partition}]", self.bootstrap, self.timeout_s)
                if self.read_from == "changelog" or not isinstance(error, BrokerTimeout):
                    raise error from exc
                raise SessionUnreadable(
                    f"session {self.uid!r}: no owner of partition {partition} answered ({unavailable}), and {error}"
                ) from exc
            self.read_source = f"changelog {topic}[{partition}] (owner: {unavailable})"
            return reader.snapshot()
        finally:
            consumer.close()


_TIMEOUTS = frozenset({KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT})


def _clear_error(exc: KafkaException, what: str, bootstrap: str, timeout_s: float, retired: bool = False) -> Exception:
    """A broker error as the caller should see it: a size refusal, a timeout, or as it came."""
    if isinstance(exc, (BrokerTimeout, RecordTooLarge)):
        return exc
    error = exc.args[0] if exc.args else None
    code = error.code() if isinstance(error, KafkaError) else None
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return RecordTooLarge(f"{what}: the broker refused the record as too large ({error.str()}).")
    if isinstance(exc, clients.ReadTimeout):
        return BrokerTimeout(
            f"{what}: not read to its end within {timeout_s} s (the kafka storage's timeout_s): the broker "
            f"at {bootstrap} is slow or does not answer, or the partition is larger than that allows."
        )
    again = " The producer was replaced: the next publish uses a new one." if retired else ""
    if code in _TIMEOUTS:
        return BrokerTimeout(
            f"{what}: the broker at {bootstrap} did not answer within {timeout_s} s (the kafka storage's "
            f"timeout_s); a publish may or may not have been applied.{again}"
        )
    if retired:
        return KafkaException(KafkaError(code if code is not None else KafkaError._FAIL, f"{what}: {exc}.{again}"))
    return exc
