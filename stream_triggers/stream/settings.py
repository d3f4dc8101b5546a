"""The stream worker's settings and the counters it keeps (read by metrics and benchmarks)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stream_triggers.ops.stats import (
    BATCH_SECONDS_BUCKETS,
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    LOOP_SECONDS_BUCKETS,
    Buckets,
    OutputCounts,
)

__all__ = ["WorkerSettings", "WorkerStats"]


@dataclass
class WorkerSettings:
    bootstrap: str
    state_dir: str
    group: str = "stream-triggers"
    topic_prefix: str = "triggers"
    manager: str = "finalizing"
    batch_size: int = 5_000
    """Most events per checkpoint: the sessions they change stay cached until it completes,
    so this bounds a worker's memory on a backlog (10,000: about 15 MB more at peak, for
    about a tenth more events/s on the benchmark's preload)."""
    in_flight_wait_s: float = 0.01
    """How long a take waits for a record while a checkpoint is in flight: the loop moves it
    on as the broker acknowledges its records (delivery reports do not wake a take)."""
    idle_wait_s: float = 0.1
    """How long a take waits for a record otherwise: until the checkpoint of the batches in
    hand is due or the retention sweep is, at most this (stream/pace.py).  A record ends the
    wait at once, so this costs no latency; it bounds how late a stop is noticed, and an idle
    worker wakes ten times a second rather than a hundred."""
    checkpoint_interval_s: float = 0.1
    """Batches applied within this (and under ``batch_size`` events) share one checkpoint (stream/checkpoint.py).

    Outputs leave as each batch is applied; the state reaches the changelog up to this much
    later (the loop does not wait for it: stream/checkpoint.py).  Longer saves CPU, store
    writes and changelog bytes (a session changed twice within it is written once), but a
    reader of the changelog then sees a task's output that much before its state, and a
    crash repeats that much more output (with the same ``event_id``).  100 ms is also
    Kafka Streams' commit interval under exactly-once."""
    linger_s: float = 0.0
    """After a turn that emptied the input queue, the next take waits up to this for a full
    batch (stream/pace.py): fewer, larger turns under a steady stream, for up to this much
    more latency; a lone event is applied at once.  0 (the default) applies every record as
    it is fetched: at 2,000 events/s on Tansu, 20 ms saved about 6 % of the CPU for 7 ms
    more median latency, 40 ms about 16 % for about 17 ms more (docs/performance.md)."""
    fetch_wait_ms: int = 100
    """How long the broker may hold an input fetch that finds nothing.  Apache Kafka answers
    it when records arrive; Tansu looks again at half the time left, so there a record may
    wait up to half this more - and a short wait means more fetches, each of which lists
    the partition's batches (docs/operating.md, "Scaling")."""
    fetch_min_bytes: int = 1
    """The broker holds an input fetch until this many bytes are there (or ``fetch_wait_ms``
    passes): under a steady stream, fewer and larger fetches, for up to ``fetch_wait_ms``
    more latency.  On Tansu each fetch that finds records lists the partition's stored
    batches, so there it saves broker CPU too (docs/operating.md, "Scaling").  The input
    consumer's alone: the restore's reads to the end, which would hold its last fetch."""
    session_timeout_ms: int = 6_000
    session_cache_size: int = 1_500
    restore_timeout_s: float = 120.0
    max_payload_bytes: int = 512 * 1024
    """An ``events`` record larger than this is dead-lettered (``payload_too_large``), not applied."""
    max_session_bytes: int = 16 * 1024 * 1024
    """A session whose encoded state would grow past this refuses the input (``session_too_large``).

    A session is stored in parts (one per instance plus a header), so this bounds what
    one session may hold in memory, in RocksDB and in a reader's hands, not a record.
    """
    max_part_bytes: int = 900 * 1024
    """A session part (its header, or one instance) that would grow past this refuses the
    input (``session_too_large``).  Below the broker's record limit (``max_record_bytes``)
    with room for the changelog record's envelope, so every changelog record can be delivered."""
    whole_session_bytes: int = 16384
    """A session whose whole state is at most this, and that was never written in parts, is
    written as one changelog record (cheaper for small sessions); past it, in parts for good."""
    max_record_bytes: int = 1_000_000
    """The broker's (and producer's) record size limit: an input whose output record would
    be larger is dead-lettered (``output_too_large``); dead letters are cut to fit."""
    engine: str | None = None
    """``native``, ``python`` or ``auto`` (native when installed and the manager is a built-in one);
    None: ``$STREAM_TRIGGERS_ENGINE``, else auto."""
    session_retention_s: float | None = None
    """Purge a session this long after its ``sessionFinalized`` (None: never; docs/operating.md)."""
    session_ttl_s: float | None = None
    """Purge a session that received no input for this long, finalized or not (None: never)."""
    purge_interval_s: float = 1.0
    """How often the loop sweeps its partitions for sessions past their deadline (stream/retention.py)."""
    purge_batch: int = 5_000
    """At most this many sessions purged per partition and sweep (a sweep stays short)."""
    kafka_config: dict[str, Any] = field(default_factory=dict)
    """The user's librdkafka settings (security, timeouts...), for every client the worker builds."""
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)
    advertise: str | None = None
    """``host:port`` where readers reach this worker's ``/sessions/`` endpoint (None: not advertised)."""

    def input_consumer_options(self) -> dict[str, Any]:
        """The input consumer's settings (``clients.consumer`` keywords; the user's come on top)."""
        return {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": max(300, self.session_timeout_ms // 6),
            "fetch_wait_max_ms": self.fetch_wait_ms,
            "fetch_min_bytes": self.fetch_min_bytes,
            "queued_min_messages": 5_000,  # per partition: two batches ahead, not the whole backlog
            "enable_partition_eof": False,
        }

    @staticmethod
    def producer_options() -> dict[str, Any]:
        """The worker producer's settings (outputs and state records; ``clients.producer`` keywords)."""
        return {"linger_ms": 2, "batch_num_messages": 10_000, "queue_buffering_max_messages": 2_000_000}


@dataclass
class WorkerStats:
    """Counters the metrics endpoint and the benchmarks read."""

    events_applied: int = 0
    events_skipped_applied: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    outputs: int = 0
    batches: int = 0
    batches_dropped: int = 0  # batches not published: the partitions moved away while in hand
    offset_gaps: int = 0
    restored_records: int = 0
    quarantined_sessions: int = 0
    """Sessions whose changelog record restore could not read (docs/state-format.md, "Unreadable records")."""
    restore_seconds: float = 0.0
    stores_rebuilt: int = 0
    """Stores wiped and rebuilt because they reflect another changelog (stream/changelog_identity.py)."""
    first_event_at: float | None = None
    last_event_at: float | None = None
    cpu_first: float | None = None  # time.process_time() at first_event_at (benchmarks)
    cpu_last: float | None = None  # time.process_time() at last_event_at
    # For the metrics endpoint (stream_triggers.ops.metrics reads these when scraped).
    applied_by_type: dict[str, int] = field(default_factory=dict)  # events record type -> count
    skipped_by_type: dict[str, int] = field(default_factory=dict)
    dead_letters_by_type: dict[str, int] = field(default_factory=dict)  # "unknown" if undecodable
    batch_size: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))
    batch_seconds: Buckets = field(default_factory=lambda: Buckets(BATCH_SECONDS_BUCKETS))
    event_latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))  # produced_at -> commit
    loop_busy: Buckets = field(default_factory=lambda: Buckets(LOOP_SECONDS_BUCKETS))
    """Seconds of work per loop turn (all but the wait for input): a long turn delays every input behind it."""
    restores: int = 0
    rebalances: int = 0
    owned_partitions: int = 0
    consumer_lag: dict[int, int] = field(default_factory=dict)  # owned partition -> records behind, ~1 s old
    produced: OutputCounts = field(default_factory=OutputCounts)  # task runs, statuses, finalized sessions
    engine: str = "python"  # the engine applying inputs: "native" or "python"
    engine_fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> inputs a native worker gave Python
    sessions_purged: dict[str, int] = field(default_factory=dict)  # reason (retention, ttl) -> sessions purged
    live_sessions: dict[int, int] = field(default_factory=dict)  # owned partition -> sessions in its store

    def observe_checkpoint(self, size: int, began: float, produced_at: list[int]) -> None:
        """After a checkpoint: its events, its duration (from ``began``, monotonic) and each
        applied input's latency (its ``produced_at``, µs, to now); ``produced_at`` is emptied."""
        self.batches += 1
        self.batch_size.observe(size)
        self.batch_seconds.observe(time.monotonic() - began)
        if produced_at:
            now, observe = time.time_ns() // 1000, self.event_latency.observe
            for at in produced_at:
                observe((now - at) * 1e-6)
            produced_at.clear()
