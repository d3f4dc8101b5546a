"""The native engine inside the worker: batches through ``apply_batch``, states through the store.

A :class:`Side` is one worker partition without Kafka: its real RocksDB store, its session
cache, the configured engine's applier, and the real checkpoint (``stream/checkpoint.py``)
with a producer that records the changelog.  The same records
through a native and a Python side must give the same outputs (``produced_at`` aside) and
the same stored bytes, including across cache evictions that reload sessions from the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from stream_triggers.engine import EMPTY
from stream_triggers.engine.native import NativeUnavailable
from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import FinalizingTriggerManager, trigger_managers
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.inputs import InputApplier
from stream_triggers.stream.native_engine import SIZE_CHECKED, NativeApplier, NativeEntry, new_applier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import PartitionStore
from tests.stream.workload import STEPS, event, uid

pytest.importorskip("stream_triggers_native")

TOPICS = Topics(prefix="triggers")
AT = 1_700_000_000_000_000


class Side:
    """One partition of a worker running ``engine``."""

    def __init__(self, tmp_path: Path, engine: str, cache: int = 1_000, **settings: Any) -> None:
        self.settings = WorkerSettings(bootstrap="", state_dir=str(tmp_path), engine=engine, **settings)
        self.stats = WorkerStats()
        manager_class = trigger_managers.get_class(self.settings.manager)
        sink = OutputSink(TOPICS, self.stats.produced)
        self.applier = new_applier(self.settings, manager_class, TOPICS, sink, self.stats)
        self.partition = Partition(0, PartitionStore(str(tmp_path), f"{engine}-events", 0), epoch=3)
        self.cache = cache
        self.producer = ChangelogRecorder()

    def batch(
        self, records: list[tuple[int, bytes | None, bytes | None]], checkpoint: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        with mock.patch("time.time_ns", lambda: AT * 1000):  # (snapshots stamped alike on both sides)
            outputs = self.applier.apply_batch(self.partition, records)
            if checkpoint:
                self.checkpoint()
        return [(topic, without_produced_at(value)) for topic, _key, value in outputs]

    def checkpoint(self) -> None:
        """The real checkpoint, a recording producer standing in for Kafka (the store is real)."""
        partition = self.partition
        checkpoint = Checkpoint(self.producer, self.producer, TOPICS, self.settings.whole_session_bytes)  # type: ignore[arg-type]
        self.applier.encode([partition])
        checkpoint.commit([partition])
        partition.trim(self.cache)
        self.applier.settle([partition])

    def stored(self) -> dict[str, Any]:
        return {key: self.partition.store.get(key) for key in self.partition.sessions} | {
            uid(i): self.partition.store.get(uid(i)) for i in range(40)
        }

    def close(self) -> None:
        self.partition.store.close()


class ChangelogRecorder:
    """Producer and consumer of a checkpoint: keeps the changelog records, acknowledges at once."""

    def __init__(self) -> None:
        self.changelog: list[tuple[bytes, bytes | None, Any]] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any, headers: Any = None
    ) -> None:
        self.changelog.append((key, value, headers))

    def flush(self, timeout: float) -> int:
        return 0

    def commit(self, **kwargs: Any) -> None:
        pass


def without_produced_at(value: bytes) -> dict[str, Any]:
    type_name, record = codec.decode(value)
    return {"type": type_name, **{k: v for k, v in record.items() if k != "produced_at"}}


def record(session: str, offset: int, type_name: str, **fields: Any) -> tuple[int, bytes, bytes]:
    value = codec.encode(type_name, event_record(type_name, session, f"e{offset}", AT + offset, **fields))
    return offset, session.encode(), value


def workload(sessions: int) -> list[tuple[int, bytes, bytes]]:
    """The stream tests' workload (tests/stream/workload.py), every session in one partition."""
    records = []
    pairs = sorted(((i, step) for i in range(sessions) for step in range(STEPS)), key=lambda p: (p[0] + 5 * p[1], p[1]))
    for offset, (i, step) in enumerate(pairs):
        name, payload = event(i, step)
        if name == "configure":
            records.append(record(uid(i), offset, "ConfigurationUpdated", configuration_json=json.dumps(payload)))
        else:
            records.append(record(uid(i), offset, "TriggerFired", trigger=name, kwargs_json=json.dumps(payload)))
    return records


def run(side: Side, records: list[tuple[int, bytes, bytes]], size: int) -> list[tuple[str, dict[str, Any]]]:
    outputs = []
    for start in range(0, len(records), size):
        outputs.extend(side.batch(records[start : start + size]))
    return outputs


@pytest.mark.parametrize("manager", ["finalizing", "default"])
def test_the_native_worker_writes_what_the_python_worker_writes(tmp_path: Path, manager: str) -> None:
    records = workload(40)
    records.insert(30, records[12])  # a re-delivery
    native, python = Side(tmp_path, "native", manager=manager), Side(tmp_path, "python", manager=manager)
    assert isinstance(native.applier, NativeApplier) and isinstance(python.applier, InputApplier)
    assert run(native, records, 23) == run(python, records, 23)
    assert native.stored() == python.stored()
    assert native.producer.changelog == python.producer.changelog, "the same state records, byte for byte"
    assert native.stats.engine_fallbacks == {}
    assert native.stats.events_applied == python.stats.events_applied == 40 * STEPS
    assert native.stats.events_skipped_applied == python.stats.events_skipped_applied == 1
    assert native.stats.applied_by_type == python.stats.applied_by_type
    assert native.stats.produced == python.stats.produced
    assert native.stats.outputs == python.stats.outputs
    assert len(native.applier.produced_at) == 40 * STEPS


@pytest.mark.parametrize("whole_session_bytes", [16384, 0])
def test_sessions_evicted_from_the_cache_come_back_from_the_store(tmp_path: Path, whole_session_bytes: int) -> None:
    """Reloaded whole or from parts: the core then writes only what changed since, as Python does."""
    records = workload(30)
    native = Side(tmp_path, "native", cache=4, whole_session_bytes=whole_session_bytes)
    python = Side(tmp_path, "python", cache=4, whole_session_bytes=whole_session_bytes)
    assert run(native, records, 17) == run(python, records, 17)
    assert native.stored() == python.stored()
    assert native.producer.changelog == python.producer.changelog
    assert native.stats.engine_fallbacks == {}
    assert len(native.applier.core) <= 4, "the core lets go of sessions the cache evicted"


@pytest.mark.parametrize("whole_session_bytes", [16384, 0])
def test_batches_sharing_one_checkpoint_write_every_change_once(tmp_path: Path, whole_session_bytes: int) -> None:
    """The worker applies several batches per checkpoint (stream/pace.py): a session stored
    in parts that two of them changed writes the instances either batch changed, once."""
    records = workload(12)
    native = Side(tmp_path, "native", whole_session_bytes=whole_session_bytes)
    python = Side(tmp_path, "python", whole_session_bytes=whole_session_bytes)
    for side in (native, python):
        for at, start in enumerate(range(0, len(records), 5)):
            side.batch(records[start : start + 5], checkpoint=at % 4 == 3)
        with mock.patch("time.time_ns", lambda: AT * 1000):
            side.checkpoint()
    assert native.stored() == python.stored()
    assert native.producer.changelog == python.producer.changelog


def test_sessions_written_whole_keep_no_python_copy_after_the_checkpoint(tmp_path: Path) -> None:
    """The core holds their state: the copy the checkpoint encoded would only take memory."""
    native = Side(tmp_path, "native")
    run(native, workload(10), 7)
    held = [entry for entry in native.partition.sessions.values() if isinstance(entry, NativeEntry)]
    assert held and all(entry.state is EMPTY for entry in held)


def test_a_dropped_batch_is_forgotten_by_the_core_too(tmp_path: Path) -> None:
    native = Side(tmp_path, "native")
    configure = record("s", 0, "ConfigurationUpdated", configuration_json='{"t": {"after": ["a"], "run": "x"}}')
    native.batch([configure])
    native.applier.apply_batch(native.partition, [record("s", 1, "TriggerFired", trigger="a", kwargs_json="{}")])
    native.partition.drop_batch()  # the partitions moved during the batch: nothing published
    outputs = native.batch([record("s", 1, "TriggerFired", trigger="a", kwargs_json="{}")])
    assert [o[1]["type"] for o in outputs] == ["TaskRunRequested"], "applied again, from the stored state"


@pytest.mark.parametrize(("whole_session_bytes", "first_batch"), [(16384, 3), (0, 3), (0, 1)])
def test_inputs_the_core_hands_back_are_applied_by_python_and_counted(
    tmp_path: Path, whole_session_bytes: int, first_batch: int
) -> None:
    """(Stored whole or in parts, handed over in the batch that configured it or a later one.)"""
    tagged = '{"amount": {"$st": "decimal", "v": "1.50"}}'
    records = [
        record("s", 0, "ConfigurationUpdated", configuration_json='{"t": {"after": ["a", "b"], "run": "x"}}'),
        record("s", 1, "TriggerFired", trigger="a", kwargs_json=tagged),
        record("s", 2, "TriggerFired", trigger="b", kwargs_json="{}"),
        record("other", 3, "TriggerFired", trigger="b", kwargs_json="{}"),
    ]
    sides = [
        Side(tmp_path, engine, cache=0, whole_session_bytes=whole_session_bytes) for engine in ("native", "python")
    ]
    native, python = sides
    for batch in (records[:first_batch], records[first_batch:3]):
        if batch:
            assert native.batch(batch) == python.batch(batch)
    assert native.stored() == python.stored()
    [(reason, count)] = native.stats.engine_fallbacks.items()
    assert count == 2, "the handed-back input and the session's next one in the batch"
    # Evicted, then loaded again: its state holds a Decimal the core does not model.
    assert native.batch(records[3:]) == python.batch(records[3:])
    follow_up = record("s", 4, "TriggerFired", trigger="c", kwargs_json="{}")
    assert native.batch([follow_up]) == python.batch([follow_up])
    assert native.stats.engine_fallbacks == {reason: 2, "session on the Python engine": 1}
    assert native.stored() == python.stored()


def test_sessions_near_the_size_limit_get_the_python_engines_exact_check(tmp_path: Path) -> None:
    limits = {"max_session_bytes": 20_000}
    native, python = Side(tmp_path, "native", **limits), Side(tmp_path, "python", **limits)
    records = [record("s", 0, "ConfigurationUpdated", configuration_json='{"t": {"after": ["a", "b"], "run": "x"}}')]
    records += [record("s", n, "TriggerFired", trigger="a", kwargs_json=json.dumps({"v": "x" * 3000})) for n in (1, 2)]
    records += [record("s", 3, "TriggerFired", trigger="b", kwargs_json=json.dumps({"v": "y" * 9000}))]
    outputs = native.batch(records)
    assert outputs == python.batch(records)
    assert native.stats.engine_fallbacks.get(SIZE_CHECKED)
    assert native.stats.dead_letters == python.stats.dead_letters == {"session_too_large": 1}


def test_a_custom_manager_class_runs_on_python(tmp_path: Path) -> None:
    class Custom(FinalizingTriggerManager):
        pass

    settings = WorkerSettings(bootstrap="", state_dir=str(tmp_path))
    sink, stats = OutputSink(TOPICS), WorkerStats()
    assert isinstance(new_applier(settings, Custom, TOPICS, sink, stats), InputApplier)
    settings.engine = "native"
    with pytest.raises(NativeUnavailable, match="manager"):
        new_applier(settings, Custom, TOPICS, sink, stats)
    built_in = new_applier(settings, FinalizingTriggerManager, TOPICS, sink, stats)
    assert isinstance(built_in, NativeApplier)


def test_the_core_lets_go_of_the_sessions_of_a_revoked_partition(tmp_path: Path) -> None:
    native = Side(tmp_path, "native")
    native.batch(workload(5)[:10])
    assert len(native.applier.core) == 5
    native.applier.settle([])  # the partition is no longer assigned
    assert len(native.applier.core) == 0
