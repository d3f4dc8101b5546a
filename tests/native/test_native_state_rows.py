"""Differential tests of the state records: what the checkpoint writes for a native session
(rows the core encodes, ``NativeCore.encode``) against what it writes for the same session
on the Python engine (``events/state_parts.py``, ``events/state_format.py``).

The generated sessions of ``test_native_differential`` go through both engines input by
input; after each input both sides run the real :class:`~stream_triggers.stream.checkpoint.Checkpoint`
(a recording producer and store stand in for Kafka and RocksDB), so the changelog records
(keys and ``SessionSnapshot`` values) and the RocksDB rows must be equal byte for byte, in
order: the whole-session record of a small session, the move to parts (every instance,
the whole value deleted), then only the instance parts each input changed, and the header.

The whole-or-parts choice is made on the exact size on both sides here: the Python
checkpoint skips encoding a session whose size bound is far past the limit, a shortcut the
core, which encodes in microseconds, does not take.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record
from stream_triggers.events.state_format import encode_state
from stream_triggers.events.state_parts import encode_header, encode_instance
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.native_engine import state_from_parts, state_parts
from stream_triggers.stream.partition import Partition, SessionEntry
from stream_triggers.stream.store import PART, PartitionStore

from .reference import TOPICS, NoStore, PythonSide, comparable, native_state
from .test_native_differential import HANDED_BACK, UID, sessions

native = pytest.importorskip("stream_triggers_native")

NOW = 1_800_000_000_000_000
EPOCH = 7


class Recorder:
    """A producer, a consumer and a store in one: records what a checkpoint writes."""

    def __init__(self) -> None:
        self.produced: list[tuple[bytes, bytes | None, int, Any]] = []
        self.stored: list[Any] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes, partition: int, on_delivery: Any, headers: Any = None
    ) -> None:
        assert topic == TOPICS.changelog
        self.produced.append((key, value, partition, headers))

    def flush(self, timeout: float) -> int:
        return 0

    def commit(self, **kwargs: Any) -> None:
        pass

    def write_parts(self, rows: Any, changelog_checkpoint: Any, max_epoch: Any = None, ages: Any = None) -> None:
        self.stored.extend(rows)
        self.stored.append(ages)  # the ages retention counts from, finalized-at included

    def ages(self, uid: str) -> None:
        return None  # (nothing stored before: finalized now, if at all)

    def take(self) -> tuple[list[Any], list[Any]]:
        written = self.produced, self.stored
        self.produced, self.stored = [], []
        return written


class RecordingStore(NoStore, Recorder):
    pass


def commit(partition: Partition, whole_limit: int) -> tuple[list[Any], list[Any]]:
    """Run the real checkpoint over ``partition``; what it produced and stored."""
    recorder = partition.store
    checkpoint = Checkpoint(recorder, recorder, TOPICS, whole_limit)  # type: ignore[arg-type]
    with mock.patch("time.time_ns", lambda: NOW * 1000):
        checkpoint.commit([partition])
    return recorder.take()  # type: ignore[attr-defined]


def python_rows(python: PythonSide, whole_limit: int) -> tuple[list[Any], list[Any]]:
    entry = python.partition.sessions[UID]
    entry.size_bound = 0  # (decide whole-or-parts on the exact size, as the core does)
    python.partition.dirty[UID] = entry
    return commit(python.partition, whole_limit)


def native_rows(core: Any, partition: Partition, whole_limit: int) -> tuple[list[Any], list[Any]]:
    [(uid, store_rows, snapshots, _tasks, finalized)] = core.encode(partition.number, EPOCH, NOW, whole_limit, [UID])
    entry = SessionEntry()
    entry.native_rows = (store_rows, snapshots, finalized)
    partition.dirty[uid] = entry
    return commit(partition, whole_limit)


def shown(written: tuple[list[Any], list[Any]]) -> list[Any]:
    """The records decoded, for a readable failure."""
    produced, _ = written
    return [(key, value and codec.decode(value)[1]["state"], headers) for key, value, _, headers in produced]


def run_both(manager: str, records: list[tuple[int, bytes]], whole_limit: int) -> int:
    """Feed both engines; return how many inputs wrote state (both sides equally)."""
    python = PythonSide(manager)
    python.partition.store = RecordingStore()  # type: ignore[assignment]
    python.partition.epoch = EPOCH
    partition = Partition(0, RecordingStore(), EPOCH)  # type: ignore[arg-type]
    core = native.NativeCore(manager, TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    compared = 0
    for offset, value in records:
        theirs = python.apply(0, offset, UID.encode(), value, NOW)
        [ours] = core.apply_batch(0, [(offset, UID.encode(), value)], NOW)
        if theirs[0] != "applied":
            continue
        expected = python_rows(python, whole_limit)
        if ours[0] == "python":
            assert ours[1] in HANDED_BACK
            entry = python.partition.sessions[UID]  # the session comes back from the Python engine
            core.load(UID, entry.applied_offset, *state_parts(entry.state), in_parts=entry.committed is not None)
            continue
        assert ours[0] == "applied"
        written = native_rows(core, partition, whole_limit)
        assert written == expected, (codec.decode(value), shown(written), shown(expected))
        compared += 1
    return compared


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sessions(), st.sampled_from([0, 200, 600, 16384]))
def test_state_records_match_the_python_encoder(session: tuple[str, list[tuple[int, bytes]]], limit: int) -> None:
    run_both(*session, limit)


def encoded(type_name: str, at: int, **fields: Any) -> bytes:
    return codec.encode(type_name, event_record(type_name, UID, event_id="e", produced_at_us=at, **fields))


def test_a_session_goes_from_whole_to_parts_and_then_writes_what_changed() -> None:
    at = 1_700_000_000_000_000
    configuration = {
        "a": {"after": ["t1"], "andEvery": "t1", "run": "x", "withParams": {"t1": {"model": "m"}}, "note": [1, 2.5]},
        "b": {"after": ["a"], "run": "y", "using": "noop", "unless": ["t3"]},
    }
    records = [encoded("ConfigurationUpdated", at, configuration_json=json.dumps(configuration))]
    records += [
        encoded("TriggerFired", at + n, trigger="t1", kwargs_json=json.dumps({"n": n, "é": "x" * n}))
        for n in range(1, 12)
    ]
    records.append(encoded("InstanceStatusReported", at + 20, instance="a#3", status="finished", metadata_json="{}"))
    records.append(encoded("InstanceMetadataUpdateRequested", at + 21, instance="a#5", metadata_json='{"k": -40}'))
    assert run_both("finalizing", list(enumerate(records)), 1200) == len(records)


def test_the_store_keys_are_the_stores() -> None:
    """The core writes ``p:`` + part key and ``s:`` + uid, as ``stream/store.py`` names them."""
    core = native.NativeCore("default", TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    config = encoded("ConfigurationUpdated", 1, configuration_json='{"t": {"after": ["a"], "run": "x"}}')
    core.apply_batch(0, [(0, UID.encode(), config)], NOW)
    [(_, [(whole_key, value)], _, tasks, _)] = core.encode(0, EPOCH, NOW, 16384, [UID])
    assert whole_key == PartitionStore.whole_key(UID) and value[:8] == (0).to_bytes(8, "big") and tasks == 1
    [(_, [(deleted, nothing), (header, _)], _, _, _)] = core.encode(0, EPOCH, NOW, 0, [UID])
    assert (deleted, nothing) == (whole_key, None) and header == PART + UID.encode() + b"\xffh"
    assert core.encode(0, EPOCH, NOW, 0, ["not held"]) == []


def load_both(manager: str, records: list[tuple[int, bytes]]) -> int:
    """After each input, the Python engine's state as stored (whole, and in parts) loads into the
    core (``load_whole`` / ``load_parts``) as the same state, which the core encodes back to the same bytes."""
    python = PythonSide(manager)
    core = native.NativeCore(manager, TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    loaded = 0
    for offset, value in records:
        python.apply(0, offset, UID.encode(), value, NOW)
        entry = python.sessions.get(UID)
        if entry is None:
            continue
        state, applied = entry.state, entry.applied_offset
        try:
            whole = encode_state(state, EPOCH)
        except (OverflowError, TypeError):  # (an integer msgpack cannot carry: no stored form)
            continue
        header = encode_header(state, applied, EPOCH)
        parts = [encode_instance(i, seq, applied, EPOCH) for seq, i in enumerate(state.instances.values())]
        assert core.load_whole(UID, applied, whole) == len(state.tasks)
        assert native_state(core, UID) == comparable(state)
        [(_, [(_, stored)], _, _, _)] = core.encode(0, EPOCH, NOW, 1 << 30, [UID])
        assert stored[8:] == whole, "read whole, written whole: the same bytes"
        assert core.load_parts(UID, header, parts[::-1]) == (applied, len(state.tasks))
        assert native_state(core, UID) == comparable(state) and core.in_parts(UID)
        [(_, [(_, stored)], _, _, _)] = core.encode(0, EPOCH, NOW, 0, [UID])
        assert stored == header, "nothing changed since it was read: the header alone"
        loaded += 1
    return loaded


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sessions())
def test_stored_states_load_into_the_core_as_the_python_engine_reads_them(
    session: tuple[str, list[tuple[int, bytes]]],
) -> None:
    load_both(*session)


def test_what_the_core_does_not_read_is_refused_not_guessed() -> None:
    core = native.NativeCore("default", TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    state = state_from_parts(([("t", {"after": ["a"], "run": "x"})], [], {}, {"when": date(2024, 1, 2)}))
    header = encode_header(state, 3, EPOCH)
    with pytest.raises(ValueError, match="msgpack type 0xd6"):  # (a date: fixext 4)
        core.load_parts(UID, header, [])
    good = encode_header(state_from_parts(([("t", {"after": ["a"], "run": "x"})], [], {}, {})), 3, EPOCH)
    for broken in (good[:-1], good + b"\x00", b"\x03" + good[1:], good[:9] + b"I" + good[10:]):
        with pytest.raises(ValueError):
            core.load_parts(UID, broken, [])
    assert good[10:13] == b"\x95\x03\x00"  # [applied_offset 3, instance_count 0, ...
    with pytest.raises(ValueError, match="incomplete"):
        core.load_parts(UID, good[:12] + b"\x01" + good[13:], [])  # counts one instance, none given
    assert core.applied_offset(UID) == -1, "nothing held after a refusal"
