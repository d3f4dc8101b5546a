"""The one reader of the changelog: the newest state of each session, never a stale one."""

from __future__ import annotations

from stream_triggers.engine import EMPTY, ConfigurationUpdated, step
from stream_triggers.events.codec import encode
from stream_triggers.events.state_format import ChangelogReader, encode_state, state_epoch
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
