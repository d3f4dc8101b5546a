"""Sessions that end, without a broker: the store's ages and deadline indexes, the sweep's choice
and commit order, tombstones on every changelog key, restore and the changelog reader applying them.

A real RocksDB store in a temporary directory; the changelog is a list the fake producer
appends to (with offsets and headers), which restore then reads back.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from stream_triggers.engine import EMPTY, ConfigurationUpdated, SessionState, TriggerFired, step
from stream_triggers.engine.inputs import StatusReported
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import decode, encode
from stream_triggers.events.envelope import event_record
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import KIND_HEADER, encode_state, pack, prefix
from stream_triggers.events.state_parts import header_key, instance_key
from stream_triggers.events.tombstones import FINALIZED_AT, finalized_at, tombstone_headers, tombstone_marks
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import TriggerManager
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.inputs import InputApplier
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.restore import restore
from stream_triggers.stream.retention import RetentionSweep
from stream_triggers.stream.settings import WorkerSettings, WorkerStats
from stream_triggers.stream.store import OWED, PartitionStore, SessionAges

S = 1_000_000  # µs
AT = datetime(2026, 3, 4, 5, 6, 7)
TOPICS = Topics("t")
CONFIG = {"each": {"after": [], "andEvery": "tick", "run": "x"}}
CONFIGURED = step(EMPTY, ConfigurationUpdated(CONFIG, AT))[0]


def ticks(state: SessionState, n: int) -> SessionState:
    for i in range(n):
        state = step(state, TriggerFired("tick", {"n": i}, AT))[0]
    return state


FINALIZED = step(ticks(CONFIGURED, 2), TriggerFired("sessionFinalized", {}, AT))[0]


class Message:
    def __init__(self, topic: str, partition: int, offset: int, key: Any, value: Any, headers: Any = None) -> None:
        self.args = (topic, partition, offset, key, value, headers)

    def topic(self) -> str:
        return self.args[0]

    def partition(self) -> int:
        return self.args[1]

    def offset(self) -> int:
        return self.args[2]

    def key(self) -> bytes | None:
        return self.args[3]

    def value(self) -> bytes | None:
        return self.args[4]

    def headers(self) -> Any:
        return self.args[5]

    def error(self) -> KafkaError | None:
        return None


class Log:
    """A producer whose records land in ``records`` (offsets per topic); ``events`` notes produces and flushes."""

    def __init__(self) -> None:
        self.records: list[Message] = []
        self.events: list[str] = []
        self._pending: list[tuple[Any, Message]] = []

    def produce(
        self, topic: str, value: Any, key: Any = None, partition: int = 0, on_delivery: Any = None, headers=None
    ):
        offset = sum(1 for m in self.records if m.topic() == topic)
        message = Message(topic, max(partition, 0), offset, key, value, headers)
        self.records.append(message)
        self._pending.append((on_delivery, message))
        kind = "tombstone" if value is None else decode(value)[0]
        self.events.append(f"{topic.rsplit('.', 1)[1]}:{key.decode(errors='replace')}:{kind}")

    def flush(self, timeout: float = 0) -> int:
        for callback, message in self._pending:
            if callback is not None:
                callback(None, message)
        self._pending = []
        self.events.append("flush")
        return 0

    def changelog(self) -> list[Message]:
        return [m for m in self.records if m.topic() == TOPICS.changelog]


class Consumer:
    """What restore needs: assign, then batches of messages, then the partition's EOF."""

    def __init__(self, messages: list[Message]) -> None:
        self.batches = [messages, [EofMessage()]]

    def assign(self, tps: list[TopicPartition]) -> None: ...

    def unassign(self) -> None: ...

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None: ...

    def consume(self, n: int, timeout: float) -> list[Any]:
        return self.batches.pop(0) if self.batches else []


class EofMessage:
    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)

    def partition(self) -> int:
        return 0


@pytest.fixture
def store(tmp_path: Path):
    opened = PartitionStore(str(tmp_path), "t.events", 0)
    yield opened
    opened.close()


def commit(partition: Partition, log: Log, states: dict[str, SessionState], applied: int) -> None:
    for uid, state in states.items():
        entry = partition.session(uid)
        entry.state, entry.applied_offset = state, applied
        partition.dirty[uid] = entry
    Checkpoint(log, Consumer([]), TOPICS, whole_session_bytes=0).commit([partition])  # type: ignore[arg-type]


def sweeper(log: Log, retention_s: float | None = None, ttl_s: float | None = None) -> RetentionSweep:
    settings = WorkerSettings("-", "-", session_retention_s=retention_s, session_ttl_s=ttl_s)
    return RetentionSweep(settings, TOPICS, log, Checkpoint(log, Consumer([]), TOPICS), WorkerStats())  # type: ignore[arg-type]


def test_the_checkpoint_keeps_ages_and_indexes_and_marks_a_finalized_header(store: PartitionStore) -> None:
    partition, log = Partition(0, store, epoch=3), Log()
    before = time.time_ns() // 1000
    commit(partition, log, {"open": ticks(CONFIGURED, 1), "done": FINALIZED}, 4)
    opened, done = store.ages("open"), store.ages("done")
    assert opened.finalized_at == 0 and opened.input_at >= before
    assert done.finalized_at == done.input_at >= before
    headers = {m.key(): m.headers() for m in log.changelog()}
    assert finalized_at(headers[header_key("done")]) == done.finalized_at
    assert [name for name, _value in headers[header_key("done")]] == [FINALIZED_AT]
    assert headers[header_key("open")] is None and headers[instance_key("done", "each#0")] is None
    assert store.live_sessions == 2
    assert store.finalized_since(done.finalized_at + 1, 10) == [("done", done.finalized_at)]
    assert sorted(store.idle_since(done.input_at + 1, 10)) == [("done", done.input_at), ("open", opened.input_at)]
    partition.sessions.clear()  # a later input, the session loaded again: finalized_at comes from the store
    commit(partition, log, {"done": ticks(FINALIZED, 1)}, 9)
    again = store.ages("done")
    assert again.finalized_at == done.finalized_at and again.input_at >= done.input_at
    assert store.finalized_since(again.finalized_at + 1, 10) == [("done", done.finalized_at)]
    assert sorted(uid for uid, _at in store.idle_since(2**62, 10)) == ["done", "open"]  # one entry each, the old gone
    assert store.live_sessions == 2


def test_a_store_written_before_the_ages_is_rebuilt_from_the_changelog(tmp_path: Path) -> None:
    store = PartitionStore(str(tmp_path), "t.events", 0)
    store.write([("a", 1, encode_state(CONFIGURED, 1))], 5)
    store._db.delete(b"m:layout")  # what a store of the previous layout lacks
    store.close()
    reopened = PartitionStore(str(tmp_path), "t.events", 0)
    assert reopened.changelog_checkpoint == -1 and reopened.get("a") is None
    reopened.close()
    again = PartitionStore(str(tmp_path), "t.events", 0)
    assert again.changelog_checkpoint == -1  # marked: an empty store of the new layout stays as it is
    again.close()


def aged(partition: Partition, log: Log, ages: dict[str, SessionAges], applied: int = 4) -> None:
    commit(partition, log, dict.fromkeys(ages, ticks(CONFIGURED, 2)), applied)
    partition.store.write_parts([], None, ages=ages)


def test_the_sweep_picks_expired_sessions_whose_inputs_are_all_committed(store: PartitionStore) -> None:
    partition, log = Partition(0, store, epoch=1), Log()
    aged(
        partition, log, {"done": SessionAges(10 * S, 12 * S), "idle": SessionAges(11 * S), "busy": SessionAges(90 * S)}
    )
    aged(partition, log, {"late": SessionAges(10 * S)}, applied=9)
    partition.restored, partition.committed = True, 9  # "late"'s last input (9) may be consumed again
    found = sweeper(log, 5, 60).expired(partition, now_us=100 * S)
    assert {(e.uid, e.reason) for e in found} == {("done", "retention"), ("idle", "ttl")}
    assert [e.reason for e in sweeper(log, None, 60).expired(partition, now_us=100 * S)] == ["ttl", "ttl"]
    assert sweeper(log).enabled is False
    partition.committed = None  # nothing committed yet: nothing is safe to purge
    assert sweeper(log, 5, 60).expired(partition, now_us=100 * S) == []


def test_a_sweep_publishes_purges_then_tombstones_every_key_header_first_then_deletes(store: PartitionStore) -> None:
    partition, log = Partition(0, store, epoch=2), Log()
    store.write([("old", 1, encode_state(CONFIGURED, 1))], None)  # once stored whole (before format 4)
    aged(partition, log, {"old": SessionAges(10 * S), "new": SessionAges(90 * S)})
    partition.restored, partition.committed = True, 7
    partition.session("old")  # cached: it must leave the cache too
    log.events.clear()
    sweep = sweeper(log, ttl_s=60)
    assert sweep.run([partition], {0: 0}, 100 * S, lambda: True, lambda: True) == 1
    keys = ["old\ufffdh", "old\ufffdieach#0", "old\ufffdieach#1", "old"]  # (0xFF shown replaced)
    assert log.events == ["sessions:old:SessionPurged", "flush", *(f"changelog:{k}:tombstone" for k in keys), "flush"]
    tombstones = [m for m in log.changelog() if m.value() is None]
    assert {tombstone_marks(m.headers()) for m in tombstones} == {(2, 4)}
    purged = decode(next(m.value() for m in log.records if m.topic() == TOPICS.sessions))[1]
    assert (purged["reason"], purged["event_id"], purged["last_input_at"]) == ("ttl", "0:4:purged", 10 * S)
    assert store.read_session("old") is None and store.get_whole("old") is None and store.ages("old") is None
    assert [k for prefix in (b"p:old", b"q:old", b"s:old") for k, _ in store.scan(prefix)] == []
    assert "old" not in partition.sessions and store.read_session("new") is not None
    assert store.changelog_checkpoint == tombstones[-1].offset()
    assert sweep.stats.sessions_purged == {"ttl": 1} and sweep.stats.live_sessions == {0: 1}
    assert store.idle_since(200 * S, 10) == [("new", 90 * S)]


def test_no_purge_when_the_probe_or_the_owner_check_fails_or_the_partition_lags(store: PartitionStore) -> None:
    partition, log = Partition(0, store, epoch=2), Log()
    aged(partition, log, {"old": SessionAges(10 * S), "new": SessionAges(90 * S)})
    partition.restored, partition.committed = True, 7
    log.events.clear()
    sweep = sweeper(log, ttl_s=60)
    assert sweep.run([partition], {0: 0}, 100 * S, lambda: False, lambda: True) == 0
    assert sweep.run([partition], {0: 10_000}, 100 * S, lambda: True, lambda: True) == 0  # a batch behind
    assert sweep.run([partition], {}, 100 * S, lambda: True, lambda: True) == 0  # lag unknown
    assert log.events == []
    assert sweep.run([partition], {0: 0}, 100 * S, lambda: True, lambda: False) == 0
    assert log.events == ["sessions:old:SessionPurged", "flush"]  # at least once: the next owner sends it again
    assert store.read_session("old") is not None and store.live_sessions == 2


def test_a_tick_completes_the_checkpoint_in_flight_only_when_the_sweep_has_work(store: PartitionStore) -> None:
    """Waiting for the broker once a second for nothing held the loop, and every input behind it."""
    partition, log = Partition(0, store, epoch=2), Log()
    now = time.time_ns() // 1000
    aged(partition, log, {"fresh": SessionAges(now)})
    partition.restored, partition.committed = True, 7
    completed: list[str] = []

    def tick(sweep: RetentionSweep) -> int:
        sweep.due_at = 0.0
        return sweep.tick(
            1.0, [partition], {0: 0}, lambda _began: lambda: True, lambda _p: None, lambda: completed.append("x")
        )

    assert tick(sweeper(log)) == 0 and completed == []  # retention off, nothing owed
    assert tick(sweeper(log, retention_s=60, ttl_s=60)) == 0 and completed == []  # nothing past a deadline
    assert sweeper(log).stats.live_sessions == {} and tick(sweeper(log)) == 0
    aged(partition, log, {"stale": SessionAges(10 * S)})
    assert tick(sweeper(log, ttl_s=60)) == 1 and completed == ["x"]  # completed first, then purged
    sweep = sweeper(log)
    sweep.checkpoint.write_store(partition, [(OWED + header_key("stale"), bytes(16))])
    assert tick(sweep) == 0 and completed == ["x", "x"]  # an owed tombstone is work, retention off or not
    assert sweep.stats.live_sessions == {0: 1}


def purged_log(tmp_path: Path) -> tuple[Log, SessionAges]:
    """A changelog where "gone" (3 parts, once whole) was purged and "kept" (finalized) was not."""
    store = PartitionStore(str(tmp_path / "first"), "t.events", 0)
    partition, log = Partition(0, store, epoch=2), Log()
    aged(partition, log, {"gone": SessionAges(10 * S)})
    commit(partition, log, {"kept": FINALIZED}, 5)
    kept = store.ages("kept")
    partition.restored, partition.committed = True, 7
    assert sweeper(log, ttl_s=60).run([partition], {0: 0}, kept.input_at - 10 * S, lambda: True, lambda: True) == 1
    store.close()
    return log, kept


@pytest.mark.parametrize("cut", ["all", "header tombstone only", "one instance tombstone only"])
def test_a_restore_rebuilds_the_ages_and_no_prefix_of_a_purge_brings_the_session_back(tmp_path: Path, cut: str):
    log, kept = purged_log(tmp_path)
    records = log.changelog()
    first_tombstone = next(i for i, m in enumerate(records) if m.value() is None)
    if cut != "all":  # a crash while the tombstones were being delivered: only the first arrived
        records = records[: first_tombstone + 1]
        if cut == "one instance tombstone only":
            records[-1] = next(m for m in log.changelog() if m.value() is None and b"\xffi" in m.key())
    store = PartitionStore(str(tmp_path / "empty"), "t.events", 0)
    result = restore(Consumer(records), TOPICS.changelog, [Partition(0, store)], timeout_s=5)  # type: ignore[arg-type]
    assert result.quarantined == 0
    assert store.read_session("gone") is None and store.ages("gone") is None
    assert store.ages("kept") == kept and store.read_session("kept") is not None
    assert store.live_sessions == 1 and store.finalized_since(kept.finalized_at + 1, 5) == [("kept", kept.finalized_at)]
    reader = ChangelogReader()
    for message in records:
        reader.add(message.key(), message.value(), 0, message.headers())
    assert reader.state("gone") is None and reader.state("kept") is not None
    store.close()


def test_a_finalized_session_written_before_the_finalized_at_header_ages_from_its_last_write(tmp_path: Path):
    """Records of a version without retention say nothing of the finalization: their session
    counts as finalized when its last record was written (never earlier: not purged early)."""
    first = PartitionStore(str(tmp_path / "first"), "t.events", 0)
    partition, log = Partition(0, first, epoch=2), Log()
    hinted = step(CONFIGURED, TriggerFired("tick", {"note": "sessionFinalized"}, AT))[0]  # the name, not finalized
    commit(partition, log, {"parts": FINALIZED, "open": hinted}, 4)
    first.close()
    old = [Message(*m.args[:5]) for m in log.changelog()]  # without headers, as written before retention
    whole = {"session_uid": "whole", "produced_at": 77 * S, "state": encode_state(FINALIZED, 2)}
    old.append(
        Message(
            TOPICS.changelog,
            0,
            len(old),
            b"whole",
            encode("SessionSnapshot", {**whole, "input_partition": 0, "applied_offset": 5}),
        )
    )
    store = PartitionStore(str(tmp_path / "empty"), "t.events", 0)
    restore(Consumer(old), TOPICS.changelog, [Partition(0, store)], timeout_s=5)  # type: ignore[arg-type]
    parts, opened = store.ages("parts"), store.ages("open")
    assert parts.finalized_at == parts.input_at > 0
    assert opened.finalized_at == 0 and opened.input_at > 0
    assert store.ages("whole") == SessionAges(77 * S, 77 * S)
    assert store.finalized_since(2**62, 10) == [("whole", 77 * S), ("parts", parts.input_at)]
    store.close()


@pytest.mark.parametrize(("latest", "metadata"), [("sessionFinalized", {}), (7, {"note": "sessionFinalized"})])
def test_a_header_naming_sessionfinalized_whose_latest_kwargs_are_no_map_does_not_stop_the_restore(
    tmp_path: Path, latest: Any, metadata: dict[str, Any]
):
    """The finalization test reads a header's latest kwargs: bad bytes there are a session's
    problem (read later, dead-lettered), never the restore's (it would stop every restart)."""
    bad = prefix(2, KIND_HEADER) + pack([4, 0, [], latest, metadata])
    value = encode(
        "SessionSnapshot",
        {"session_uid": "odd", "produced_at": 5 * S, "state": bad, "input_partition": 0, "applied_offset": 4},
    )
    store = PartitionStore(str(tmp_path), "t.events", 0)
    result = restore(
        Consumer([Message(TOPICS.changelog, 0, 0, header_key("odd"), value)]),
        TOPICS.changelog,
        [Partition(0, store)],
        timeout_s=5,
    )  # type: ignore[arg-type]
    assert result.quarantined == 0 and store.ages("odd") == SessionAges(5 * S, 0)
    store.close()


def snapshot(uid: str, applied: int, epoch: int) -> bytes:
    record = {"session_uid": uid, "produced_at": 0, "state": encode_state(CONFIGURED, epoch)}
    return encode("SessionSnapshot", {**record, "input_partition": 0, "applied_offset": applied})


def test_a_purge_tombstone_ends_the_state_it_purged_and_nothing_newer() -> None:
    reader = ChangelogReader()
    reader.add(b"s", snapshot("s", 10, 2))
    reader.add(b"s", None, headers=tombstone_headers(2, 10))
    assert reader.state("s") is None
    reader.add(b"s", snapshot("s", 20, 2))  # a late input started it again
    reader.add(b"s\xffh", None, headers=tombstone_headers(2, 10))  # a duplicate of the old purge
    assert reader.state("s")[1] == 20


def test_a_purge_tombstone_from_a_replaced_owner_is_stale_and_fences_a_one_session_reader() -> None:
    reader = ChangelogReader()
    reader.add(b"s", snapshot("s", 10, 2))
    reader.add(b"x", snapshot("x", 11, 3))  # a new owner (epoch 3) wrote to the partition
    reader.add(b"s", None, headers=tombstone_headers(2, 10))  # the old owner woke up
    assert reader.state("s") is not None and reader.stale == 1
    one = ChangelogReader("s")
    one.add(b"s", snapshot("s", 10, 2))
    one.add(b"x\xffh", None, headers=tombstone_headers(3, 11))  # the owner of epoch 3 purged x
    assert one.add(b"s", snapshot("s", 12, 2)) is None and one.stale == 1


def status_report(uid: str) -> bytes:
    source = StatusReported("each#0", "finished", {}, AT, None)
    type_name, fields = record_from_input(source)
    return encode(type_name, event_record(type_name, uid, event_id="e", produced_at_us=0, **fields))


@pytest.mark.parametrize(("purging", "reason"), [(True, "session_purged"), (False, "unknown_instance")])
def test_a_status_report_for_a_session_without_state_is_dead_lettered_session_purged(
    store: PartitionStore, purging: bool, reason: str
) -> None:
    stats = WorkerStats()
    settings = WorkerSettings("-", "-", session_ttl_s=60 if purging else None)
    applier = InputApplier(TriggerManager, OutputSink(TOPICS), stats, settings)
    [(topic, _key, value)] = applier.apply(Partition(0, store), 5, b"s", status_report("s"))
    assert topic == TOPICS.dead_letter and stats.dead_letters == {reason: 1}
    assert decode(value)[1]["reason"] == reason


def test_a_purge_tombstone_ends_a_session_whose_stored_header_is_unreadable(store: PartitionStore) -> None:
    store.write_parts([(b"p:" + header_key("q"), b"junk"), (b"x:q", b"an unreadable record")], 0)
    tombstone = Message(TOPICS.changelog, 0, 1, header_key("q"), None, tombstone_headers(2, -1))
    result = restore(Consumer([tombstone]), TOPICS.changelog, [Partition(0, store)], timeout_s=5)  # type: ignore[arg-type]
    assert result.quarantined == 0 and store.quarantined("q") is None and store.get_raw(b"p:" + header_key("q")) is None


def test_a_small_session_stored_whole_gets_one_tombstone(store: PartitionStore) -> None:
    partition, log = Partition(0, store, epoch=2), Log()
    entry = partition.session("w")
    entry.state, entry.applied_offset = ticks(CONFIGURED, 1), 3
    partition.dirty["w"] = entry
    Checkpoint(log, Consumer([]), TOPICS).commit([partition])  # type: ignore[arg-type]  # (small: one whole record)
    store.write_parts([], None, ages={"w": SessionAges(10 * S)})
    partition.restored, partition.committed = True, 4
    log.events.clear()
    assert sweeper(log, ttl_s=60).run([partition], {0: 0}, 100 * S, lambda: True, lambda: True) == 1
    assert log.events == ["sessions:w:SessionPurged", "flush", "changelog:w:tombstone", "flush"]
    assert store.read_session("w") is None and store.live_sessions == 0


def test_the_index_cursor_skips_what_was_purged_and_still_finds_older_entries_written_later(
    store: PartitionStore,
) -> None:
    store.write_parts([], None, ages={"a": SessionAges(10 * S), "b": SessionAges(20 * S)})
    assert store.idle_since(15 * S, 10) == [("a", 10 * S)]
    store.write_parts([], None, ages={"a": None})
    assert store.idle_since(15 * S, 10) == []  # the cursor moves past the purged end
    store.write_parts([], None, ages={"c": SessionAges(12 * S)})  # (a restore writes old times)
    assert store.idle_since(15 * S, 10) == [("c", 12 * S)]
    assert store.idle_since(30 * S, 10) == [("c", 12 * S), ("b", 20 * S)]


def test_tombstones_a_cut_purge_still_owes_are_written_by_the_next_sweep(tmp_path: Path) -> None:
    log, _kept = purged_log(tmp_path)
    records = log.changelog()
    cut = next(i for i, m in enumerate(records) if m.value() is None) + 1  # only the header's tombstone arrived
    store = PartitionStore(str(tmp_path / "empty"), "t.events", 0)
    partition = Partition(0, store, epoch=5)
    restore(Consumer(records[:cut]), TOPICS.changelog, [partition], timeout_s=5)  # type: ignore[arg-type]
    owed = {key[2:] for key, _ in store.scan(b"d:")}
    assert owed == {instance_key("gone", "each#0"), instance_key("gone", "each#1"), b"gone"}
    partition.restored, after = True, Log()
    assert sweeper(after).run([partition], {0: 0}, 0, lambda: True, lambda: True) == 0  # (retention off)
    assert sorted(after.events[:-1]) == sorted(f"changelog:{k.decode(errors='replace')}:tombstone" for k in owed)
    assert {tombstone_marks(m.headers()) for m in after.records} == {(5, 4)}
    assert list(store.scan(b"d:")) == []
    store.close()
    # The whole purge read in full owes nothing.
    full = PartitionStore(str(tmp_path / "full"), "t.events", 0)
    restore(Consumer(records), TOPICS.changelog, [Partition(0, full)], timeout_s=5)  # type: ignore[arg-type]
    assert list(full.scan(b"d:")) == []
    full.close()
