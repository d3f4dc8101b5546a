"""The one reader of the changelog: the newest state of each session, never a stale one."""

from __future__ import annotations

from stream_triggers.engine import EMPTY, ConfigurationUpdated, step
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import encode
from stream_triggers.events.state_format import encode_state, state_epoch
from stream_triggers.storages.base import utc_now

CONFIGURED = step(EMPTY, ConfigurationUpdated({"t": {"after": ["a"], "run": "x"}}, utc_now()))[0]


def snapshot(uid: str, applied: int, epoch: int, state=EMPTY) -> bytes:
    record = {
        "session_uid": uid,
        "produced_at": 0,
        "state": encode_state(state, epoch),
        "input_partition": 0,
        "applied_offset": applied,
    }
    return encode("SessionSnapshot", record)


def test_a_record_stamped_below_an_epoch_already_seen_in_its_partition_is_stale() -> None:
    reader = ChangelogReader()
    reader.add(b"s1", snapshot("s1", 10, 5, CONFIGURED), partition=0)
    reader.add(b"s2", snapshot("s2", 12, 6), partition=0)  # a new owner wrote to the partition
    assert reader.add(b"s1", snapshot("s1", 11, 5), partition=0) is None  # the old owner woke up
    assert reader.stale == 1
    state, applied = reader.state("s1")
    assert (applied, len(state.tasks)) == (10, 1)


def test_epochs_of_other_partitions_do_not_fence() -> None:
    reader = ChangelogReader()
    reader.add(b"s2", snapshot("s2", 12, 6), partition=1)
    assert reader.add(b"s1", snapshot("s1", 3, 5), partition=0) is not None


def test_a_later_owner_wins_over_a_higher_applied_offset_of_an_earlier_one() -> None:
    """Compaction may leave the old owner's record after the new one's: the epoch decides, not the position."""
    reader = ChangelogReader()
    reader.add(b"s1", snapshot("s1", 8, 6, CONFIGURED), partition=1)
    reader.add(b"s1", snapshot("s1", 9, 5), partition=0)  # (another partition, so not fenced by order)
    assert reader.state("s1")[1] == 8


def test_one_session_only_still_learns_epochs_from_the_others() -> None:
    reader = ChangelogReader("s1")
    reader.add(b"s1", snapshot("s1", 1, 1, CONFIGURED))
    reader.add(b"s2", snapshot("s2", 2, 2))
    reader.add(b"s1", snapshot("s1", 3, 1))  # stale: epoch 2 wrote to the partition since
    assert reader.state()[1] == 1
    assert "s2" not in reader.snapshots


def test_states_written_before_epochs_read_as_epoch_zero() -> None:
    old = bytes.fromhex("029490908080")  # format 2: no tasks, no instances, {} kwargs, {} metadata
    assert state_epoch(old) == 0
    reader = ChangelogReader()
    record = {"session_uid": "s", "produced_at": 0, "state": old, "input_partition": 0, "applied_offset": 4}
    reader.add(b"s", encode("SessionSnapshot", record))
    reader.add(b"s", snapshot("s", 5, 1))
    assert reader.state("s")[1] == 5


# Written by stream-triggers 0.1.0 (state format 2, before owner epochs): two tasks, t1#0
# finished with result {"r": 2} after "go" fired with {"a": [1, "b"]}, at 2026-01-02 03:04:05.678901.
FORMAT_2_BYTES = bytes.fromhex(
    "02949292a2743186a5616674657291a2676fa6756e6c65737390a8616e644576657279c0a372756ea178a57573696e67c0aa7769"
    "7468506172616d738092a2743286a5616674657291a27431a6756e6c65737390a8616e644576657279c0a372756ea178a5757369"
    "6e67c0aa77697468506172616d7381a2743181a16b019197a474312330a27431a866696e697368656481a2676f81a1619201a162"
    "81a6726573756c7481a172029084a763726561746564cf0006475ef6574f35ac6c6173744d6f646966696564cf0006475ef6574f"
    "35a97363686564756c6564cf0006475ef6574f35a866696e6973686564cf0006475ef6574f3581a2676f81a1619201a16280"
)


def test_format_2_state_captured_from_0_1_0_still_reads_and_upgrades_on_the_next_write() -> None:
    from datetime import datetime

    from stream_triggers.events.state_format import FORMAT, decode_state

    state = decode_state(FORMAT_2_BYTES)
    assert list(state.tasks) == ["t1", "t2"]
    assert state.tasks["t2"].with_params == {"t1": {"k": 1}}
    instance = state.instances["t1#0"]
    assert (str(instance.status), instance.metadata["result"]) == ("finished", {"r": 2})
    assert instance.metadata["timestamps"]["finished"] == datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert dict(state.latest_kwargs) == {"go": {"a": [1, "b"]}}
    assert state_epoch(FORMAT_2_BYTES) == 0
    upgraded = encode_state(state, 9)
    assert (upgraded[0], state_epoch(upgraded), FORMAT) == (4, 9, 4)
    assert decode_state(upgraded).instances["t1#0"].serialize() == instance.serialize()
