"""Format 4: a session in parts - bounded records, tombstones, the upgrade from whole records, strict restore."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from stream_triggers.engine import EMPTY, ConfigurationUpdated, SessionState, TriggerFired, step
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import encode
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import (
    StateFormatError,
    decode_state,
    encode_state,
    state_epoch,
)
from stream_triggers.events.state_parts import (
    PartKey,
    assemble,
    changed_instances,
    changelog_keys,
    encode_header,
    header_key,
    instance_key,
    split_key,
)
from stream_triggers.stream.checkpoint import Checkpoint
from stream_triggers.stream.partition import Partition, SessionEntry, changelog_rows
from stream_triggers.stream.restore import CorruptChangelog, restore
from stream_triggers.stream.store import PartitionStore
from tests.stream.test_worker_paths import FakeConsumer, FakeProducer, Message

AT = datetime(2026, 3, 4, 5, 6, 7, 890123)
CONFIG = {"each": {"after": [], "andEvery": "tick", "run": "x"}, "done": {"after": ["stop"], "run": "y"}}

# Written by stream-triggers 0.2.0 (state format 3, owner epoch 7): CONFIG, then "tick" fired
# with {"n": 1} and {"n": 2} at AT: instances each#0 and each#1, scheduled.
FORMAT_3_BYTES = bytes.fromhex(
    "030000000000000007949292a46561636886a5616674657290a6756e6c65737390a8616e644576657279a47469636ba372756ea1"
    "78a57573696e67c0aa77697468506172616d738092a4646f6e6586a5616674657291a473746f70a6756e6c65737390a8616e6445"
    "76657279c0a372756ea179a57573696e67c0aa77697468506172616d73809297a6656163682330a465616368a97363686564756c"
    "656481a47469636b81a16e01809083a763726561746564cf00064c2bc71942cbac6c6173744d6f646966696564cf00064c2bc719"
    "42cba97363686564756c6564cf00064c2bc71942cb97a6656163682331a465616368a97363686564756c656481a47469636b81a1"
    "6e02809083a763726561746564cf00064c2bc71942cbac6c6173744d6f646966696564cf00064c2bc71942cba97363686564756c"
    "6564cf00064c2bc71942cb81a47469636b81a16e0280"
)


def ticks(state: SessionState, n: int, start: int = 0) -> SessionState:
    for i in range(start, start + n):
        state = step(state, TriggerFired("tick", {"n": i}, AT))[0]
    return state


CONFIGURED = step(EMPTY, ConfigurationUpdated(CONFIG, AT))[0]


def same(a: SessionState | None, b: SessionState) -> bool:
    """Equal as stored (a state may hold an instance's kwargs apart, as the engine's ``fresh``)."""
    return a is not None and encode_state(a) == encode_state(b)


def read_back(found: tuple[SessionState, int] | None) -> tuple[bytes, int] | None:
    return None if found is None else (encode_state(found[0]), found[1])


def whole(state: SessionState, applied: int) -> tuple[bytes, int]:
    return encode_state(state), applied


def parts_of(uid: str, old: SessionState | None, new: SessionState, applied: int, epoch: int) -> list:
    entry = SessionEntry(new, applied, old)
    return changelog_rows(uid, entry, epoch)


def snapshot(uid: str, applied: int, state: bytes) -> bytes:
    record = {"session_uid": uid, "produced_at": 0, "state": state, "input_partition": 0, "applied_offset": applied}
    return encode("SessionSnapshot", record)


def records(uid: str, rows: list, applied: int) -> list[tuple[bytes, bytes | None]]:
    return [(key, None if value is None else snapshot(uid, applied, value)) for key, value in rows]


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["s1", "with space", "ünï/cødé:#0", "nul\x00inside", ""])
def test_keys_split_back_into_session_and_part(uid: str) -> None:
    assert split_key(header_key(uid)) == PartKey(uid, "header")
    assert split_key(instance_key(uid, "t#0")) == PartKey(uid, "instance", "t#0")
    assert split_key(uid.encode()) == PartKey(uid, "whole")
    assert all(key.startswith(uid.encode()) for key in changelog_keys(uid, ["a", "b"]))
    assert not instance_key(uid + "x", "a").startswith(uid.encode() + b"\xff")  # no other session's prefix


def test_a_key_naming_no_part_is_refused() -> None:
    with pytest.raises(StateFormatError):
        split_key(b"s1\xffz")
    with pytest.raises(StateFormatError):
        split_key(b"\xfe\xffh")


def test_changelog_keys_list_every_key_a_session_has() -> None:
    state = ticks(CONFIGURED, 3)
    written = {key for key, _ in parts_of("s", None, state, 5, 1)}
    assert written | {b"s"} == set(changelog_keys("s", state.instances))


# -- parts -----------------------------------------------------------------------------------


def test_parts_assemble_back_into_the_session_in_creation_order() -> None:
    state = ticks(CONFIGURED, 20)
    rows = parts_of("s", None, state, 9, 4)
    assert rows[-1][0] == header_key("s"), "the header comes last"
    assembled = assemble(rows[-1][1], reversed([value for _key, value in rows[:-1]]))
    assert same(assembled, state)
    assert list(assembled.instances) == list(state.instances)


def test_a_batch_writes_only_the_instances_it_changed_and_no_record_grows_with_the_session() -> None:
    small, large = ticks(CONFIGURED, 10), ticks(CONFIGURED, 2_000)
    sizes = []
    for before in (small, large):
        after = ticks(before, 1, start=10_000)
        rows = parts_of("s", before, after, 5, 1)
        assert [key for key, _ in rows] == [instance_key("s", f"each#{len(before.instances)}"), header_key("s")]
        sizes.append(sum(len(value) for _key, value in rows))
    assert sizes[1] - sizes[0] < 16, sizes  # the same record sizes, whatever the session holds


def test_a_changed_instance_is_rewritten_with_its_position() -> None:
    before = ticks(CONFIGURED, 3)
    after = step(before, TriggerFired("stop", {}, AT))[0]  # creates done#0, touches nothing else
    changed, removed = changed_instances(before, after)
    assert (changed, removed) == ([(3, "done#0")], [])


def test_a_removed_instance_gets_a_tombstone_and_the_rest_move_up() -> None:
    before = ticks(CONFIGURED, 3)
    instances = dict(before.instances)
    del instances["each#1"]
    after = SessionState.build(before.tasks, instances, before.latest_kwargs, before.metadata)
    rows = parts_of("s", before, after, 5, 1)
    assert (instance_key("s", "each#1"), None) in rows
    assembled = assemble(rows[-1][1], [value for _key, value in rows[:-1] if value is not None])
    assert list(assembled.instances) == ["each#0", "each#2"]


def test_missing_parts_are_an_error_not_a_smaller_session() -> None:
    state = ticks(CONFIGURED, 3)
    rows = parts_of("s", None, state, 5, 1)
    with pytest.raises(StateFormatError, match="incomplete session"):
        assemble(rows[-1][1], [value for _key, value in rows[:-2]])


def test_a_part_is_not_a_whole_state() -> None:
    with pytest.raises(StateFormatError, match="one part of a session"):
        decode_state(encode_header(CONFIGURED, 1, 1))


# -- the reader ------------------------------------------------------------------------------


def read(rows: list[tuple[bytes, bytes | None]], uid: str | None = None) -> ChangelogReader:
    reader = ChangelogReader(uid)
    for key, value in rows:
        reader.add(key, value)
    return reader


def test_the_reader_assembles_a_session_from_batches_of_parts() -> None:
    first = ticks(CONFIGURED, 3)
    second = ticks(first, 2, start=3)
    log = records("s", parts_of("s", None, first, 3, 1), 3) + records("s", parts_of("s", first, second, 5, 1), 5)
    for reader in (read(log), read(log, "s")):
        assert read_back(reader.state("s")) == whole(second, 5)
        assert same(decode_state(reader.snapshot("s")["state"]), second)  # the whole-state view other readers use
        assert state_epoch(reader.snapshot("s")["state"]) == 1


def test_parts_without_their_header_do_not_count() -> None:
    """A batch cut short (the worker died while producing it) leaves parts its header never confirmed."""
    first = ticks(CONFIGURED, 2)
    second = ticks(first, 1, start=2)
    unfinished = records("s", parts_of("s", first, second, 7, 1), 7)[:-1]  # no header
    reader = read(records("s", parts_of("s", None, first, 3, 1), 3) + unfinished)
    assert read_back(reader.state("s")) == whole(first, 3)


def test_a_stale_writers_parts_never_win() -> None:
    first = ticks(CONFIGURED, 2)
    by_new_owner = ticks(first, 1, start=2)
    by_old_owner = step(first, TriggerFired("stop", {}, AT))[0]
    log = (
        records("s", parts_of("s", None, first, 3, 1), 3)
        + records("s", parts_of("s", first, by_new_owner, 5, 2), 5)  # epoch 2 took the partition over
        + records("s", parts_of("s", first, by_old_owner, 6, 1), 6)  # epoch 1 woke up and published
    )
    reader = read(log)
    assert read_back(reader.state("s")) == whole(by_new_owner, 5)
    assert reader.stale == 2


def test_a_tombstone_removes_its_instance_and_a_header_tombstone_the_session() -> None:
    before = ticks(CONFIGURED, 3)
    instances = dict(before.instances)
    del instances["each#2"]
    after = SessionState.build(before.tasks, instances, before.latest_kwargs, before.metadata)
    log = records("s", parts_of("s", None, before, 3, 1), 3) + records("s", parts_of("s", before, after, 4, 1), 4)
    assert read_back(read(log).state("s")) == whole(after, 4)
    assert read([*log, *((key, None) for key in changelog_keys("s", after.instances))]).state("s") is None


def test_a_session_read_from_a_whole_record_upgrades_to_parts_that_win() -> None:
    old = decode_state(FORMAT_3_BYTES)
    newer_state = ticks(old, 1, start=2)
    log = [(b"s", snapshot("s", 3, FORMAT_3_BYTES)), *records("s", parts_of("s", None, newer_state, 4, 7), 4)]
    assert read_back(read(log).state("s")) == whole(newer_state, 4)
    assert read_back(read(log[:1]).state("s")) == whole(old, 3)


def test_format_3_state_captured_from_0_2_0_still_reads() -> None:
    state = decode_state(FORMAT_3_BYTES)
    assert state_epoch(FORMAT_3_BYTES) == 7
    assert list(state.tasks) == ["each", "done"]
    assert [(name, str(i.status), i.kwargs) for name, i in state.instances.items()] == [
        ("each#0", "scheduled", {"tick": {"n": 1}}),
        ("each#1", "scheduled", {"tick": {"n": 2}}),
    ]
    assert state.instances["each#1"].metadata["timestamps"]["created"] == AT
    assert dict(state.latest_kwargs) == {"tick": {"n": 2}}
    assert same(decode_state(encode_state(state, 7)), state)


# -- the worker's store, checkpoint and restore ---------------------------------------------


class _Topics:
    events, changelog = "t.events", "t.changelog"


@pytest.fixture
def store(tmp_path: Path):
    opened = PartitionStore(str(tmp_path), "t.events", 0)
    try:
        yield opened
    finally:
        opened.close()


def commit(partition: Partition, uid: str, state: SessionState, applied: int, whole_bytes: int = 0) -> FakeProducer:
    producer = FakeProducer()
    entry = partition.session(uid)
    entry.state, entry.applied_offset = state, applied
    partition.dirty[uid] = entry
    Checkpoint(producer, FakeConsumer(), _Topics(), whole_session_bytes=whole_bytes).commit([partition])
    return producer


def test_a_small_session_is_written_whole_until_it_grows_then_in_parts_for_good(store: PartitionStore) -> None:
    partition = Partition(0, store, epoch=2)
    limit = len(encode_state(ticks(CONFIGURED, 2), 2))
    keys = []
    for applied, state in enumerate([ticks(CONFIGURED, 2), ticks(CONFIGURED, 3), ticks(CONFIGURED, 3, start=1)]):
        partition.sessions.clear()
        produced = commit(partition, "s", state, applied, whole_bytes=limit).produced
        keys.append([key for _topic, key in produced])
        assert same(store.read_session("s").state, state)
    assert keys[0] == [b"s"]
    assert keys[1] == [*(instance_key("s", f"each#{n}") for n in range(3)), header_key("s")]
    assert store.get_whole("s") is None and store.read_session("s").in_parts
    assert len(keys[2]) == 4, "in parts for good, though it is no larger now"


def test_a_session_stored_whole_is_rewritten_in_parts_on_its_next_change(store: PartitionStore) -> None:
    store.write([("s", 3, FORMAT_3_BYTES)], 10)  # as a 0.2.0 worker left it
    partition = Partition(0, store, epoch=8)
    old = decode_state(FORMAT_3_BYTES)
    assert same(partition.session("s").state, old)
    newer_state = ticks(old, 1, start=2)
    producer = commit(partition, "s", newer_state, 4)
    assert [key for _topic, key in producer.produced] == [
        instance_key("s", "each#0"),
        instance_key("s", "each#1"),
        instance_key("s", "each#2"),
        header_key("s"),
    ]
    assert store.get_whole("s") is None
    stored = store.read_session("s")
    assert same(stored.state, newer_state)
    assert (stored.applied_offset, stored.epoch, stored.in_parts) == (4, 8, True)
    # The next change writes only what it touched.
    partition.forget("s")
    producer = commit(partition, "s", ticks(partition.session("s").state, 1, start=3), 5)
    assert [key for _topic, key in producer.produced] == [instance_key("s", "each#3"), header_key("s")]


def event(uid: str, source: object) -> bytes:
    type_name, fields = record_from_input(source)
    return encode(type_name, {"event_id": "e", "session_uid": uid, "produced_at": 0, **fields})


def messages(rows: list[tuple[bytes, bytes | None]], first_offset: int = 0) -> list[Message]:
    return [Message(0, first_offset + i, key, value) for i, (key, value) in enumerate(rows)]


EOF = [Message(0, 0, error=KafkaError(KafkaError._PARTITION_EOF))]


def test_restore_assembles_parts_whose_header_comes_in_a_later_fetch(store: PartitionStore) -> None:
    first = ticks(CONFIGURED, 3)
    second = ticks(first, 2, start=3)
    log = messages(
        records("s", parts_of("s", None, first, 3, 1), 3) + records("s", parts_of("s", first, second, 5, 1), 5)
    )
    partition = Partition(0, store)
    restore(FakeConsumer([log[:-1], log[-1:], EOF]), "t.changelog", [partition], timeout_s=5)
    stored = store.read_session("s")
    assert same(stored.state, second) and stored.applied_offset == 5
    assert store.changelog_checkpoint == len(log) - 1


def test_an_unreadable_record_quarantines_its_session_and_is_counted(store: PartitionStore) -> None:
    """Never a quiet skip: the session's inputs are dead-lettered, the others flow."""
    first = ticks(CONFIGURED, 2)
    rows = records("s", parts_of("s", None, first, 3, 1), 3)
    rows += [(header_key("s"), b"\x00garbage"), *records("s3", parts_of("s3", None, first, 9, 1), 9)]
    partition = Partition(0, store)
    result = restore(FakeConsumer([messages(rows), EOF]), "t.changelog", [partition], timeout_s=5)
    assert result.quarantined == 1
    assert "t.changelog[0] at offset 3" in store.quarantined("s")
    with pytest.raises(StateFormatError, match="quarantined"):
        partition.session("s")
    assert same(partition.session("s3").state, first)
    assert store.changelog_checkpoint == len(rows) - 1


def test_an_input_of_a_quarantined_session_is_dead_lettered(store: PartitionStore) -> None:
    from stream_triggers.kafka.topics import Topics
    from stream_triggers.manager import TriggerManager
    from stream_triggers.stream.inputs import InputApplier
    from stream_triggers.stream.outputs import OutputSink
    from stream_triggers.stream.settings import WorkerSettings, WorkerStats

    store.write_parts([(b"x:s", b"unreadable")], 0)
    stats = WorkerStats()
    applier = InputApplier(TriggerManager, OutputSink(Topics("t")), stats, WorkerSettings("-", "-"))
    value = event("s", TriggerFired("go", {}, AT))
    [(topic, _key, _value)] = applier.apply(Partition(0, store), 5, b"s", value)
    assert (topic, stats.dead_letters) == (Topics("t").dead_letter, {"corrupt_state": 1})


def test_a_record_that_names_no_session_stops_the_restore(store: PartitionStore) -> None:
    first = ticks(CONFIGURED, 2)
    good = records("s", parts_of("s", None, first, 3, 1), 3)
    log = messages([*good, (None, b"\x00garbage")])
    with pytest.raises(CorruptChangelog, match=r"t.changelog\[0\] at offset 3"):
        restore(FakeConsumer([log]), "t.changelog", [Partition(0, store)], timeout_s=5)
    assert same(store.read_session("s").state, first)
    assert store.changelog_checkpoint == 2, "the next restore starts at the unreadable record again"


def test_restore_refuses_a_part_under_another_sessions_key(store: PartitionStore) -> None:
    rows = records("s", parts_of("s", None, CONFIGURED, 3, 1), 3)
    restore(FakeConsumer([messages([(b"other\xffh", rows[-1][1])]), EOF]), "t.changelog", [Partition(0, store)], 5)
    assert "under the key" in store.quarantined("other")


def test_restore_drops_a_session_whose_header_is_tombstoned(store: PartitionStore) -> None:
    first = ticks(CONFIGURED, 2)
    rows = records("s", parts_of("s", None, first, 3, 1), 3)
    rows += [(key, None) for key in changelog_keys("s", first.instances)]
    restore(FakeConsumer([messages(rows), EOF]), "t.changelog", [Partition(0, store)], timeout_s=5)
    assert store.read_session("s") is None
    assert list(store.scan(b"p:")) == [] and list(store.scan(b"q:")) == []


def test_the_store_lists_every_changelog_key_of_a_session(store: PartitionStore) -> None:
    state = ticks(CONFIGURED, 3)
    commit(Partition(0, store, epoch=1), "s", state, 4)
    assert store.changelog_keys("s") == sorted(changelog_keys("s", state.instances))


def test_a_store_answers_absent_keys_from_bloom_filters(tmp_path: Path) -> None:
    """Each new session's first input looks up keys that are not there: the stores' memtables and
    tables carry whole-key bloom filters, so a miss does not read blocks (RocksDB records the
    options it opened with in the store's OPTIONS file)."""
    PartitionStore(str(tmp_path), "t", 0).close()
    (options_file,) = (tmp_path / "t-0").glob("OPTIONS-*")
    options = {line.strip() for line in options_file.read_text().splitlines()}
    assert "filter_policy=bloomfilter" in options
    assert "memtable_whole_key_filtering=true" in options
    assert any(
        line.startswith("memtable_prefix_bloom_size_ratio=0.0") and line != "memtable_prefix_bloom_size_ratio=0.000000"
        for line in options
    )
