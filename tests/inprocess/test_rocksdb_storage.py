"""The rocksdb storage keeps decoded sessions and writes only what changed.

One process owns a RocksDB directory, so a session read once is not decoded again,
and a save that applied engine inputs appends those inputs (small records) instead
of re-encoding the whole session; a session read cold (after a restart) replays
them over its snapshot.  The version check still refuses a save that raced another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_triggers.engine import MAX_PAYLOAD_BYTES
from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages import rocksdb
from stream_triggers.storages.base import ConcurrentModification
from stream_triggers.storages.rocksdb import COMPACT_AFTER, RocksDBStorage, close_all
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask

WIDE = {f"t_{i}": {"after": ["a", "b", "never"], "run": DevNullTask.name} for i in range(10)}


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "rocksdb")
    ThreadingTaskRunner.join_all()
    close_all()


def _keys(storage: RocksDBStorage) -> dict[bytes, int]:
    """Every stored key of the directory and the size of its value."""
    return {key: len(value) for key, value in storage._database.db.items()}


def _state_of(path: str, uid: str) -> dict:
    storage = RocksDBStorage(uid, path)
    return storage.debug_repr()


def test_a_fire_writes_a_small_record_not_the_whole_session(path: str) -> None:
    manager = TriggerManager(RocksDBStorage("wide", path))
    manager.update_configuration(WIDE)
    manager.fire("a", {"page": 1})
    before = _keys(manager.storage)
    manager.fire("b", {"page": 2})  # changes all ten instances
    after = _keys(manager.storage)

    written = {key: size for key, size in after.items() if before.get(key) != size}
    assert len(written) == 1
    [(key, size)] = written.items()
    assert key.startswith(b"log:")
    whole = len(rocksdb.encode_state(manager.storage.state))
    assert size * 5 < whole


def test_a_session_read_once_is_not_decoded_again(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    TriggerManager(RocksDBStorage("hot", path)).update_configuration(WIDE)
    close_all()  # a restart: the first read is cold
    decoded: list[bytes] = []
    real_decode = rocksdb.decode_state
    monkeypatch.setattr(rocksdb, "decode_state", lambda data: decoded.append(data) or real_decode(data))

    for trigger in ("a", "b"):
        TriggerManager(RocksDBStorage("hot", path)).fire(trigger, {"x": 1})
    assert RocksDBStorage("hot", path).state.instances["t_3#0"].kwargs == {"a": {"x": 1}, "b": {"x": 1}}
    assert len(decoded) <= 1


@pytest.mark.parametrize("fires", [3, COMPACT_AFTER + 5])
def test_a_restart_reads_back_exactly_what_was_saved(path: str, fires: int) -> None:
    manager = TriggerManager(RocksDBStorage("restart", path))
    manager.update_configuration(
        {
            "t_pass": {"after": ["go"], "run": PassThruTask.name},
            "t_every": {"after": ["t_pass"], "andEvery": "page", "run": PassThruTask.name},
            "t_fail": {"after": ["go"], "run": FailingTask.name},
        }
    )
    manager.fire("go", {"k": 1})
    ThreadingTaskRunner.join_all()
    for page in range(fires):
        manager.fire("page", {"page": page})
    ThreadingTaskRunner.join_all()
    manager.skip_failed_instance("t_fail#0", cascade=True, result={"skipped": True})
    ThreadingTaskRunner.join_all()
    expected = _state_of(path, "restart")

    close_all()
    assert _state_of(path, "restart") == expected
    assert len(expected["instances"]) == fires + 2


def test_the_log_is_compacted_into_a_snapshot(path: str) -> None:
    manager = TriggerManager(RocksDBStorage("compact", path))
    manager.update_configuration(WIDE)
    for n in range(COMPACT_AFTER + 1):
        manager.fire("a", {"n": n})
    logged = [key for key in _keys(manager.storage) if key.startswith(b"log:")]
    assert len(logged) < COMPACT_AFTER
    close_all()
    assert RocksDBStorage("compact", path).latest_kwargs["a"] == {"n": COMPACT_AFTER}


def test_direct_edits_are_saved_whole_and_survive_a_restart(path: str) -> None:
    manager = TriggerManager(RocksDBStorage("edited", path))
    manager.update_configuration(WIDE)
    manager.fire("a")
    with manager.storage.acquire_lock() as storage:
        storage["t_0#0"].metadata["note"] = "by hand"
        storage.create_instance("t_1")
        storage.save()
    close_all()
    reread = RocksDBStorage("edited", path)
    assert reread["t_0#0"].metadata["note"] == "by hand"
    assert "t_1#1" in reread.instances


def test_uids_that_prefix_each_other_keep_separate_logs(path: str) -> None:
    for uid in ("s", "s:1", "s:10"):
        manager = TriggerManager(RocksDBStorage(uid, path))
        manager.update_configuration(WIDE)
        manager.fire("a", {"uid": uid})
    close_all()
    for uid in ("s", "s:1", "s:10"):
        assert RocksDBStorage(uid, path).latest_kwargs["a"] == {"uid": uid}


def test_the_version_check_refuses_a_save_that_raced_another(path: str) -> None:
    TriggerManager(RocksDBStorage("raced", path)).update_configuration(WIDE)
    stale = RocksDBStorage("raced", path)
    loaded_version = (stale.state, stale._version)[1]
    TriggerManager(RocksDBStorage("raced", path)).fire("a")  # another writer saves first
    with pytest.raises(ConcurrentModification, match="changed"):
        stale._save_state(stale.state, loaded_version)


def test_timeout_is_the_sessions_time_to_live_across_restarts(path: str) -> None:
    TriggerManager(RocksDBStorage("kept", path, timeout=3600)).update_configuration(WIDE)
    gone = TriggerManager(RocksDBStorage("gone", path, timeout=0))
    gone.update_configuration(WIDE)
    gone.fire("a")  # logged after the snapshot: expiry must drop the log too
    assert len(RocksDBStorage("kept", path).tasks) == 10
    assert list(RocksDBStorage("gone", path).tasks) == []  # expired: reads as a new session

    TriggerManager(RocksDBStorage("gone", path)).fire("b", {"new": True})  # a new session, no timeout
    close_all()
    assert len(RocksDBStorage("kept", path).tasks) == 10
    reborn = RocksDBStorage("gone", path)
    assert (list(reborn.tasks), dict(reborn.latest_kwargs)) == ([], {"b": {"new": True}})


def test_a_result_over_half_the_payload_limit_survives_a_restart(path: str) -> None:
    # The report carries the result twice (metadata and cascade), weighed once when applied;
    # replaying the logged report must weigh it the same, or the session becomes unreadable.
    blob = "r" * (MAX_PAYLOAD_BYTES * 2 // 3)
    manager = TriggerManager(RocksDBStorage("heavy", path))
    manager.update_configuration({"t_heavy": {"after": ["go"], "run": PassThruTask.name}})
    manager.fire("go", {"blob": blob})
    ThreadingTaskRunner.join_all()
    expected = _state_of(path, "heavy")
    assert expected["instances"]["t_heavy#0"]["status"] == "finished"

    close_all()
    assert _state_of(path, "heavy") == expected
