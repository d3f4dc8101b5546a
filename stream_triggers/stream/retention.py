"""Sessions that end: purge a session ``--session-retention`` after its finalization, or
``--session-ttl`` after its last input, even when its partition receives no more input.

The worker's loop calls :meth:`RetentionSweep.tick` every turn; every ``purge_interval_s``
it sweeps with the worker's wall clock (the engine never reads a clock).  The deadlines
come from what the state records hold - the time of the last input applied (the header
record's ``produced_at``) and of the finalization (its ``finalized-at`` header) - kept
beside each session in RocksDB with indexes ordered by them
(:mod:`~stream_triggers.stream.store`), so they survive restarts and rebalances and a
sweep reads only expired sessions.

A sweep follows the batch's commit order (:mod:`~stream_triggers.stream.checkpoint`),
between batches:

1. a membership probe (a synchronous commit of the committed offsets): a worker that
   lost the partition purges nothing, and the offsets the candidates are checked against
   are durable; only sessions whose last input lies below them are purged, so none of
   their inputs is consumed again (a late input starts a fresh session);
2. one ``SessionPurged`` record per session to ``<prefix>.sessions``, flushed - a
   session never disappears without its record (at least once, deterministic ids);
3. the owner check again, then a tombstone for **every changelog key** of each session
   (its header first, then its instance parts, then its whole-session key, which a session
   once stored whole may still have in the changelog), each marked
   with the owner epoch and the applied offset it ends (:mod:`~stream_triggers.events.tombstones`),
   flushed;
4. one RocksDB batch deleting every store key of the sessions (parts, pending parts,
   whole value, quarantine, ages and index entries) and moving the changelog checkpoint
   past the tombstones; the sessions leave the cache (and the native core's memory).

A crash before 3 leaves the session whole everywhere (the next sweep purges it again,
its ``SessionPurged`` a duplicate with the same ``event_id``).  A crash during 3 leaves
some of its tombstones in the changelog: any one of them ends the whole session for
every reader (restore, ``kafka`` storage, ``inspect``), so nothing is half purged, and a
restart applies them on restore before the partition is served.  That restore (on the
same state dir or an empty one) also notes the tombstones still owed (``d:`` keys:
:meth:`~stream_triggers.stream.restore._Writes.owe`), and the next sweep writes them, so
no record of the session outlives the purge's tombstones in the compacted changelog.  A crash after 3 and
before 4 leaves the sessions in RocksDB behind a checkpoint the tombstones follow: the
restore deletes them.  A partition still catching up on a backlog (lag of a batch or
more, or unknown) is not swept: an input waiting there may be for a session that is not
idle at all.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice

from confluent_kafka import Producer

from stream_triggers.events.codec import encode
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.events.state_parts import split_key
from stream_triggers.events.tombstones import tombstone_headers
from stream_triggers.kafka.topics import Topics
from stream_triggers.stream import faults
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import OWED, PartitionStore, SessionAges

__all__ = ["Expired", "RetentionSweep"]

log = logging.getLogger(__name__)

_LONG = struct.Struct(">q")

OwnerCheck = Callable[[float], Callable[[], bool]]
"""``owner_check(batch_began)`` -> ``still_owner()`` (the worker's; probes the group when the
work began more than half a session timeout ago, so ``-inf`` always probes)."""


@dataclass(frozen=True)
class Expired:
    """A session past one of its deadlines."""

    uid: str
    reason: str  # "retention" or "ttl"
    applied_offset: int
    input_at: int
    finalized_at: int


class RetentionSweep:
    """Finds and purges expired sessions of a worker's partitions."""

    def __init__(
        self, settings: WorkerSettings, topics: Topics, producer: Producer, checkpoint: Checkpoint, stats: WorkerStats
    ) -> None:
        self.retention_us = _micros(settings.session_retention_s)
        self.ttl_us = _micros(settings.session_ttl_s)
        self.interval_s = settings.purge_interval_s
        self.limit = settings.purge_batch
        self.behind = settings.batch_size
        self.topics = topics
        self.producer = producer
        self.checkpoint = checkpoint
        self.stats = stats
        self.due_at = 0.0
        self._store_keys: dict[str, list[bytes]] = {}
        """uid -> its store keys, from its tombstones to its RocksDB deletes (one sweep)."""

    @property
    def enabled(self) -> bool:
        return bool(self.retention_us or self.ttl_us)

    def due(self, now: float) -> bool:
        """Whether :meth:`tick` would sweep at ``now`` (the worker's monotonic clock)."""
        return now >= self.due_at

    def tick(
        self,
        now: float,
        owned: Iterable[Partition],
        lag: dict[int, int],
        owner_check: OwnerCheck,
        settle: Callable[[list[Partition]], None],
        complete_checkpoint: Callable[[], None],
    ) -> int:
        """From the worker's loop (``now``: its monotonic clock): sweep when due; the number purged.

        ``complete_checkpoint`` completes the checkpoint in flight, waiting for the broker: a
        sweep decides on the committed offsets and the stored ages, so it runs only once the
        store holds everything applied.  It is called only when the sweep has work (an owed
        tombstone, a session past a deadline), never once a second for nothing: the wait
        held the loop - and every input behind it - for up to tens of milliseconds.
        ``settle`` lets the engine drop what it holds of sessions no longer cached (the native core).
        """
        if now < self.due_at:
            return 0
        self.due_at = now + self.interval_s
        partitions, now_us = list(owned), time.time_ns() // 1000
        if not self._may_have_work(partitions, lag, now_us):
            return 0
        complete_checkpoint()
        purged = self.run(partitions, lag, now_us, owner_check(float("-inf")), owner_check(time.monotonic()))
        if purged:
            settle(partitions)
        return purged

    def _may_have_work(self, partitions: list[Partition], lag: dict[int, int], now_us: int) -> bool:
        """Whether a sweep now could write anything (the store may lag the checkpoint in flight,
        which only ever makes sessions younger: a session it finalizes waits for the next sweep)."""
        restored = [p for p in partitions if p.restored]
        self.stats.live_sessions = {p.number: p.store.live_sessions for p in restored}
        if any(next(iter(p.store.scan(OWED)), None) is not None for p in restored):
            return True
        return self.enabled and any(self._candidates(p.store, now_us, 1) for p in self._caught_up(restored, lag))

    def _caught_up(self, partitions: list[Partition], lag: dict[int, int]) -> list[Partition]:
        """The partitions less than a batch behind (a backlog may hold inputs of idle-looking sessions)."""
        return [p for p in partitions if lag.get(p.number, self.behind) < self.behind]

    def _candidates(self, store: PartitionStore, now_us: int, limit: int) -> dict[str, str]:
        """Up to ``limit`` sessions past a deadline by the store's indexes -> "retention" or "ttl"."""
        candidates: dict[str, str] = {}
        if self.retention_us:
            for uid, _at in store.finalized_since(now_us - self.retention_us, limit):
                candidates[uid] = "retention"
        if self.ttl_us:
            for uid, _at in store.idle_since(now_us - self.ttl_us, limit - len(candidates)):
                candidates.setdefault(uid, "ttl")
        return candidates

    def expired(self, partition: Partition, now_us: int) -> list[Expired]:
        """Sessions of ``partition`` past a deadline whose inputs all lie below the committed offset."""
        committed = partition.committed
        if committed is None or not partition.restored or partition.dirty:
            return []
        store = partition.store
        found = []
        for uid, reason in self._candidates(store, now_us, self.limit).items():
            ages = store.ages(uid)
            try:
                version = store.version(uid)
            except StateFormatError:
                version = None
            applied = -1 if version is None else version[1]
            if ages is None or applied >= committed:
                continue  # its last input may be consumed again after a crash: not yet
            found.append(Expired(uid, reason, applied, ages.input_at, ages.finalized_at))
        return found

    def run(
        self,
        owned: Iterable[Partition],
        lag: dict[int, int],
        now_us: int,
        probe: Callable[[], bool],
        still_owner: Callable[[], bool],
    ) -> int:
        """Purge what expired (steps 1-4 above) in the caught-up partitions; the number purged.

        ``lag`` is the consumer lag per partition.  ``probe`` commits the committed offsets
        synchronously and says whether the worker still owns its partitions; ``still_owner``
        is the batch's cheaper check, asked again before the tombstones.  Also refreshes
        ``stats.live_sessions``.
        """
        restored = [p for p in owned if p.restored]
        self.stats.live_sessions = {p.number: p.store.live_sessions for p in restored}
        owed = {p: list(islice(p.store.scan(OWED), self.limit)) for p in restored}
        owed = {p: entries for p, entries in owed.items() if entries}
        if owed and probe():
            self._settle_owed(owed)
        if not self.enabled:
            return 0
        caught_up = self._caught_up(restored, lag)
        due = {p.number: self.expired(p, now_us) for p in caught_up}
        due = {number: sessions for number, sessions in due.items() if sessions}
        if not due or not probe():  # 1
            return 0
        self._publish_purges(due)  # 2
        faults.reached("purge-before-tombstones")
        if not still_owner():
            log.warning("not purging: the group moved this worker's partitions away")
            return 0
        self._store_keys.clear()
        by_number = {p.number: p for p in caught_up}
        for number, sessions in due.items():  # 3
            partition = by_number[number]
            for session in sessions:
                self._tombstone(partition, session)
        self.checkpoint.flush()
        faults.reached("purge-before-store")
        purged = 0
        for number, sessions in due.items():  # 4
            partition = by_number[number]
            store = partition.store
            rows = [(key, None) for session in sessions for key in self._store_keys.pop(session.uid, ())]
            gone: dict[str, SessionAges | None] = dict.fromkeys((session.uid for session in sessions), None)
            self.checkpoint.write_store(partition, rows, ages=gone)
            reasons = self.stats.sessions_purged
            for session in sessions:
                partition.forget(session.uid)
                reasons[session.reason] = reasons.get(session.reason, 0) + 1
            self.stats.live_sessions[number] = store.live_sessions
            purged += len(sessions)
            log.info("purged %d sessions of partition %d", len(sessions), number, extra={"partition": number})
        faults.reached("purge-after-store")
        return purged

    def _settle_owed(self, owed: dict[Partition, list[tuple[bytes, bytes]]]) -> None:
        """Write the tombstones an interrupted purge still owes (restore noted them), then forget them.

        A key whose session exists again (a later input started it afresh) is not tombstoned.
        """
        for partition, entries in owed.items():
            written = 0
            for store_key, marks in entries:
                key = store_key[len(OWED) :]
                try:
                    again = partition.store.version(split_key(key).uid) is not None
                except StateFormatError:
                    again = True  # something is stored under it: not ours to end
                if again:
                    continue
                self._produce_tombstone(partition, key, _LONG.unpack_from(marks, 8)[0])
                written += 1
            if written:
                self.checkpoint.flush()
            self.checkpoint.write_store(partition, [(store_key, None) for store_key, _ in entries])
            log.info("wrote %d tombstones an interrupted purge owed in partition %d", written, partition.number)

    def _publish_purges(self, due: dict[int, list[Expired]]) -> None:
        """One ``SessionPurged`` record per session, flushed."""
        produce, now = self.producer.produce, time.time_ns() // 1000
        for number, sessions in due.items():
            for session in sessions:
                record = {
                    "event_id": f"{number}:{session.applied_offset}:purged",
                    "session_uid": session.uid,
                    "produced_at": now,
                    "reason": session.reason,
                    "last_input_at": session.input_at,
                    "finalized_at": session.finalized_at,
                    "input_partition": number,
                    "applied_offset": session.applied_offset,
                }
                produce(
                    self.topics.sessions,
                    encode("SessionPurged", record),
                    session.uid.encode(),
                    on_delivery=self.checkpoint.on_output_delivery,
                )
        self.checkpoint.flush()

    def _tombstone(self, partition: Partition, session: Expired) -> None:
        """A marked tombstone for every changelog key of the session (``PartitionStore.purge_keys``)."""
        changelog_keys, self._store_keys[session.uid] = partition.store.purge_keys(session.uid)
        for key in changelog_keys:
            self._produce_tombstone(partition, key, session.applied_offset)

    def _produce_tombstone(self, partition: Partition, key: bytes, applied_offset: int) -> None:
        """A changelog tombstone marked with the owner's epoch and the applied offset it ends."""
        self.producer.produce(
            self.topics.changelog,
            None,
            key,
            partition.number,
            headers=tombstone_headers(partition.epoch, applied_offset),
            on_delivery=self.checkpoint.on_changelog_delivery,
        )


def _micros(seconds: float | None) -> int:
    return 0 if not seconds else int(seconds * 1_000_000)
