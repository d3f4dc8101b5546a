"""The worker's inputs applied by the native core (Rust), one call per partition batch.

The seam between the worker and its engines is ``apply_batch(partition, records)`` (see
:class:`~stream_triggers.stream.inputs.InputApplier` for the Python engine): a list of
``(offset, key, value)`` records of one partition in, the output records to produce out.

Where a session lives.  A session the native core holds has a :class:`NativeEntry` in
its partition's cache (``Partition.sessions``): the marker is the one proof that the
core's copy is current.  Whatever drops cached sessions (a trim, a dropped batch, a new
epoch, a restore, a revoked partition) drops the marker, and the next input of that
session reloads it from the store into the core.  A session in the cache with a plain
``SessionEntry`` lives on the Python engine.

Inputs the core hands back (``("python", why)``: values it does not model) are applied
by the Python engine, counted in ``WorkerStats.engine_fallbacks`` and logged; the
session then stays on Python for as long as it is cached, and the rest of its inputs in
that batch (which the core refuses to apply past the handed-back one) go there too.  So
do sessions near the size limit, whose exact checks (``session_too_large``,
``output_too_large``) are the Python applier's, and inputs large enough that the Python
engine's payload weight limit may refuse them.

State records are encoded by the core too (format 4, the bytes
:mod:`stream_triggers.events.state_parts` writes for the same state): right before each
checkpoint (not after each batch: a session changed by several batches is encoded once),
one ``NativeCore.encode`` call per partition returns, for every session the core changed
since the last checkpoint, the RocksDB rows and changelog records (envelopes included) of
exactly the parts that changed, in ``SessionEntry.native_rows``; the checkpoint writes
them as they are.  No Python state is built for a native session: a stored one loads into the core
from its format-4 values (``NativeCore.load_whole`` / ``load_parts``).  :func:`state_parts`
and :func:`state_from_parts` move a state across the boundary only where a session changes
engine (handed to the Python engine) or is stored in a form the core does not read.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

from stream_triggers.engine import EMPTY, SessionState
from stream_triggers.engine import native as engines
from stream_triggers.engine.payloads import MAX_PAYLOAD_BYTES
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.events.state_parts import header_key, instance_prefix
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager, trigger_managers
from stream_triggers.stream.inputs import InputApplier
from stream_triggers.stream.outputs import Output, OutputSink
from stream_triggers.stream.partition import Partition, SessionEntry
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import PART, PartitionStore
from stream_triggers.types import TaskConfig, TaskInstance

__all__ = [
    "NativeApplier",
    "NativeEntry",
    "new_applier",
    "state_from_parts",
    "state_parts",
]

log = logging.getLogger(__name__)

Record = tuple[int, "bytes | None", "bytes | None"]

SIZE_CHECKED = "near the session size limit"
"""The fallback reason of a session whose next inputs could grow it past ``max_session_bytes``."""


WEIGHED = "a payload large enough to need weighing"
WEIGH_ABOVE = MAX_PAYLOAD_BYTES // 4
"""Records larger than this go to the Python engine, which weighs payloads (``MAX_PAYLOAD_BYTES``):
an item weighs at most 4 times its JSON text (8 bytes for ``0,``), so smaller ones always pass."""


UNREADABLE = "a stored state that cannot be read"
CONFIGURATION_UPDATED = "ConfigurationUpdated"


class NativeEntry(SessionEntry):
    """A cached session the native core holds (``state`` is as loaded: the core has the current one)."""

    __slots__ = ("tasks",)

    def __init__(self, applied_offset: int = -1, tasks: int = 0) -> None:
        super().__init__(EMPTY, applied_offset)
        self.tasks = tasks
        """Its task count when last exported (the size bound's multiplier)."""


# -- states across the boundary (the current Python state format) ----------------------------


def state_parts(state: SessionState) -> tuple[Any, ...]:
    """``(tasks, instances, latest_kwargs, metadata)`` as ``NativeCore.load`` takes them."""
    return (
        [(name, config.serialize()) for name, config in state.tasks.items()],
        [
            (i.name, i.config.name, str(i.status), dict(i.kwargs), dict(i.metadata), sorted(i.abandon_state))
            for i in state.instances.values()
        ],
        {trigger: dict(kwargs) for trigger, kwargs in state.latest_kwargs.items()},
        dict(state.metadata),
    )


_configs: dict[tuple[str, str], TaskConfig] = {}
_CONFIGS_MAX = 1024


def _config(name: str, directives: dict[str, Any]) -> TaskConfig:
    """A TaskConfig from its directives, shared between sessions configured alike (they are immutable)."""
    key = (name, repr(directives))
    config = _configs.get(key)
    if config is None:
        if len(_configs) >= _CONFIGS_MAX:
            _configs.clear()
        config = _configs[key] = TaskConfig(name=name, **directives)
    return config


def state_from_parts(parts: tuple[Any, ...]) -> SessionState:
    """The engine's state from ``NativeCore.export`` (as the state format's reader builds it)."""
    raw_tasks, raw_instances, latest_kwargs, metadata = parts
    tasks = {name: _config(name, directives) for name, directives in raw_tasks}
    instances = {
        name: TaskInstance(
            name=name, config=tasks[task], status=status, metadata=meta, kwargs=kwargs, abandonState=abandon
        )
        for name, task, status, kwargs, meta, abandon in raw_instances
    }
    return SessionState.build(tasks, instances, latest_kwargs, metadata)


# -- the applier ------------------------------------------------------------------------------


def new_applier(
    settings: WorkerSettings,
    manager_class: type[TriggerManager],
    topics: Topics,
    sink: OutputSink,
    stats: WorkerStats,
) -> InputApplier | NativeApplier:
    """The engine that applies a worker's inputs (``settings.engine``; a custom manager class runs on Python).

    Raises :class:`~stream_triggers.engine.native.NativeUnavailable` when ``native`` is asked
    for where it cannot run.
    """
    python = InputApplier(manager_class, sink, stats, settings)
    built_in = manager_class is trigger_managers.get_class(settings.manager)
    engine = engines.choose(settings.engine, settings.manager if built_in else "<a custom manager class>")
    if engine == "python":
        return python
    return NativeApplier(settings.manager, topics, python, stats, settings)


class NativeApplier:
    """Applies each partition batch with one ``NativeCore.apply_batch`` call."""

    engine = "native"

    def __init__(
        self, manager: str, topics: Topics, python: InputApplier, stats: WorkerStats, settings: WorkerSettings
    ) -> None:
        self.core = engines.new_core(manager, topics.task_runs, topics.task_results, topics.sessions)
        self.python = python
        self.task_runs = topics.task_runs
        self.stats = stats
        self.max_payload = settings.max_payload_bytes
        self.max_session = settings.max_session_bytes
        self.whole_session_bytes = settings.whole_session_bytes
        self.produced_at = python.produced_at  # (one list: the worker's latency histogram reads it)
        self._loaded: defaultdict[int, deque[tuple[str, NativeEntry]]] = defaultdict(deque)
        """Per partition, the sessions loaded into the core, in the order they entered its cache."""

    def apply_batch(self, partition: Partition, records: list[Record]) -> list[Output]:
        """Apply one partition's records in order; return the records to produce."""
        native: list[Record] = []
        to_python: dict[str, list[Record]] = defaultdict(list)  # uid -> its inputs for the Python engine
        reasons: dict[str, str] = {}
        growth: dict[str, int] = {}
        outputs: list[Output] = []
        max_payload, max_session = self.max_payload, self.max_session
        sessions = partition.sessions
        for record in records:  # (the per-record Python cost of a native worker: kept to dict lookups)
            offset, key, value = record
            size = 0 if value is None else len(value)
            if size > max_payload and key is not None:
                outputs.extend(self.python.apply(partition, offset, key, value))  # payload_too_large
                continue
            try:
                uid = key.decode()  # type: ignore[union-attr]
            except (AttributeError, UnicodeDecodeError):
                native.append(record)  # the core dead-letters it (missing key, bad UTF-8)
                continue
            if uid in to_python:
                to_python[uid].append(record)
                continue
            entry = sessions.get(uid)
            if entry is None:
                entry = self._entry(partition, uid)
            if type(entry) is NativeEntry:
                grown = growth.get(uid, entry.size_bound) + (size + 2048) * (entry.tasks + 2)
                growth[uid] = grown
                reason = SIZE_CHECKED if grown > max_session else WEIGHED if size > WEIGH_ABOVE else None
                if reason is None:
                    native.append(record)
                    continue
                reasons[uid] = reason  # (handed over once its earlier inputs in the batch are applied)
            else:
                reasons.setdefault(uid, "session on the Python engine" if entry else UNREADABLE)
            to_python[uid].append(record)
        if native:
            outputs.extend(self._apply_native(partition, native, to_python, reasons))
        for uid, handed in to_python.items():
            entry = partition.sessions.get(uid)
            if isinstance(entry, NativeEntry):
                self._to_python(partition, uid, entry)
            outputs.extend(self._apply_python(partition, uid, handed, reasons[uid]))
        return outputs

    def encode(self, partitions: Iterable[Partition]) -> None:
        """Right before the checkpoint: the state records of the sessions the core changed
        since the last one (``native_rows``), each encoded once however many batches changed it."""
        now = time.time_ns() // 1000
        for partition in partitions:
            dirty = partition.dirty
            uids = [uid for uid, entry in dirty.items() if type(entry) is NativeEntry]
            if not uids:
                continue
            for uid, store_rows, snapshots, tasks, finalized in self.core.encode(
                partition.number, partition.epoch, now, self.whole_session_bytes, uids
            ):
                entry = dirty[uid]
                entry.native_rows = (store_rows, snapshots, finalized)
                entry.tasks = tasks  # type: ignore[attr-defined]

    def _entry(self, partition: Partition, uid: str) -> SessionEntry | None:
        """The session's cache entry, loading it into the core if it is not held there yet.

        None for a stored state that cannot be read: the Python applier dead-letters the
        session's inputs (``corrupt_state``), as it would on the Python engine.
        """
        entry = partition.sessions.get(uid)
        if entry is not None:
            return entry
        self.core.forget([uid])  # whatever the core still holds of it is older than the store
        store = partition.store
        quarantined, header, whole = store.lookup(uid, PART + header_key(uid))
        if quarantined is not None:
            return None
        if header is not None:
            whole = None
        if header is None and whole is None:
            entry = partition.sessions[uid] = NativeEntry()
            self._loaded[partition.number].append((uid, entry))
            return entry
        read = self._read(store, uid, header, whole)
        if read is not None:
            entry = partition.sessions[uid] = read
            self._loaded[partition.number].append((uid, entry))
            return entry
        try:
            stored = store.read_session(uid)
        except StateFormatError:
            return None
        if stored is None:
            entry = partition.sessions[uid] = NativeEntry()
            self._loaded[partition.number].append((uid, entry))
            return entry
        state, applied_offset = stored.state, stored.applied_offset
        committed = state if stored.in_parts else None
        try:
            self.core.load(uid, applied_offset, *state_parts(state), in_parts=stored.in_parts)
        except ValueError as exc:
            log.info("session %s stays on the Python engine: its state holds %s", uid, exc)
            entry = partition.sessions[uid] = SessionEntry(state, applied_offset, committed)
        else:
            entry = partition.sessions[uid] = NativeEntry(applied_offset, len(state.tasks))
            entry.state, entry.committed = state, committed
            self._loaded[partition.number].append((uid, entry))
        entry.size_bound = stored.size
        return entry

    def _read(
        self, store: PartitionStore, uid: str, header: bytes | None, whole: tuple[int, bytes] | None
    ) -> NativeEntry | None:
        """The stored session loaded into the core from its format-4 values, no Python state between.

        None when the core does not read it (an older format, a value it does not model, a
        malformed record): the caller reads it the Python way, which gives errors their words.
        """
        try:
            if header is not None:
                instances = [value for _key, value in store.scan(PART + instance_prefix(uid))]
                applied, tasks = self.core.load_parts(uid, header, instances)
                size = len(header) + sum(map(len, instances))
            elif whole is not None and whole[1][:1] == b"\x04":
                applied, data = whole
                tasks = self.core.load_whole(uid, applied, data)
                size = len(data)
            else:
                return None
        except ValueError:
            return None
        entry = NativeEntry(applied, tasks)
        entry.size_bound = size
        return entry

    def _apply_native(
        self, partition: Partition, records: list[Record], to_python: dict[str, list[Record]], reasons: dict[str, str]
    ) -> list[Output]:
        stats = self.stats
        number = partition.number
        outcomes = self.core.apply_batch(number, records, time.time_ns() // 1000)
        outputs: list[Output] = []
        append, produced_at = outputs.append, self.produced_at.append
        dirty = partition.dirty
        sessions = partition.sessions
        counts = stats.produced
        statuses, task_runs = counts.statuses, self.task_runs
        by_type: dict[str, int] = {}
        applied = produced_count = runs = finalized = 0
        for (offset, key, value), outcome in zip(records, outcomes, strict=True):
            kind = outcome[0]
            if kind == "applied":
                uid = key.decode()  # type: ignore[union-attr]
                entry = sessions[uid]
                entry.applied_offset = offset
                dirty[uid] = entry
                _, type_name, produced, at = outcome
                for topic, output, status in produced:  # (counted as ``OutputSink`` counts them)
                    append((topic, key, output))
                    if status is not None:
                        statuses[status] = statuses.get(status, 0) + 1
                    elif topic == task_runs:
                        runs += 1
                    else:
                        finalized += 1
                if type_name == CONFIGURATION_UPDATED:  # (the size bound's multiplier, kept current)
                    entry.tasks = self.core.task_count(uid)  # type: ignore[attr-defined]
                applied += 1
                produced_count += len(produced)
                by_type[type_name] = by_type.get(type_name, 0) + 1
                produced_at(at)
            elif kind == "skipped":
                stats.events_skipped_applied += 1
                stats.skipped_by_type[outcome[1]] = stats.skipped_by_type.get(outcome[1], 0) + 1
            elif kind == "dead":
                append(self.python.dead_letter(partition, offset, key, value, outcome[1], outcome[2]))
            else:  # ("python", why): this input and the session's later ones in the batch
                uid = key.decode()  # type: ignore[union-attr]
                if uid not in to_python:
                    reasons[uid] = outcome[1]
                to_python[uid].append((offset, key, value))
        stats.events_applied += applied
        stats.outputs += produced_count
        counts.task_runs += runs
        counts.sessions_finalized += finalized
        for type_name, count in by_type.items():
            stats.applied_by_type[type_name] = stats.applied_by_type.get(type_name, 0) + count
        return outputs

    def _to_python(self, partition: Partition, uid: str, entry: NativeEntry) -> None:
        """Hand a held session to the Python engine (its current state from the core)."""
        parts = self.core.export(uid)
        state = entry.state if parts is None else state_from_parts(parts)
        # (A session stored in parts stays in parts: ``EMPTY`` as its committed state
        # makes the checkpoint write every instance, the core's changes among them.)
        in_parts = self.core.in_parts(uid)
        python_entry = SessionEntry(state, entry.applied_offset, EMPTY if in_parts else None)
        python_entry.size_bound = entry.size_bound
        partition.sessions[uid] = python_entry
        if uid in partition.dirty:
            partition.dirty[uid] = python_entry
        self.core.forget([uid])

    def _apply_python(self, partition: Partition, uid: str, records: list[Record], reason: str) -> list[Output]:
        fallbacks = self.stats.engine_fallbacks
        fallbacks[reason] = fallbacks.get(reason, 0) + len(records)
        log.warning(
            "%d input(s) of session %s applied by the Python engine: %s",
            len(records),
            uid,
            reason,
            extra={"session_uid": uid, "partition": partition.number, "reason": reason},
        )
        outputs: list[Output] = []
        for offset, key, value in records:
            outputs.extend(self.python.apply(partition, offset, key, value))
        return outputs

    def settle(self, partitions: list[Partition]) -> None:
        """After the checkpoint: let go of sessions no longer cached (trimmed, dropped, revoked).

        A partition's cache drops its oldest loads first (``Partition.trim``), so the
        sessions gone are a prefix of the loads in order (``_loaded``): a batch pays for
        the sessions trimmed, not for every session held (a sweep of ``held()`` cost 12 %
        of a preload's worker CPU).
        """
        gone: list[str] = []
        numbers = {p.number for p in partitions}
        for number in [n for n in self._loaded if n not in numbers]:  # revoked partitions
            gone.extend(uid for uid, _ in self._loaded.pop(number))
        for partition in partitions:
            loaded = self._loaded.get(partition.number)
            sessions = partition.sessions
            while loaded:
                uid, entry = loaded[0]
                current = sessions.get(uid)
                if current is entry:
                    break
                loaded.popleft()
                if type(current) is not NativeEntry:  # (else a later load holds the core's copy)
                    gone.append(uid)
        if gone:
            self.core.forget(gone)
