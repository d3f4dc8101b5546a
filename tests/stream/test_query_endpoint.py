"""The query endpoint and the owners directory without a broker: what a worker answers, and
which advertisement a reader believes."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from stream_triggers.engine import EMPTY, ConfigurationUpdated, step
from stream_triggers.events.state_format import encode_state
from stream_triggers.kafka.owners import OwnerRecord, OwnersFormatError, decode_owner, encode_owner, latest_owners
from stream_triggers.kafka.partitioning import partition_for
from stream_triggers.ops.broker import free_port
from stream_triggers.ops.metrics import serve_worker_metrics
from stream_triggers.ops.queries import SESSIONS_PATH, OwnerUnavailable, ask_owner, session_route
from stream_triggers.storages import owner_reads
from stream_triggers.storages.base import utc_now
from stream_triggers.stream.partition import Partition
from stream_triggers.stream.queries import ServedState
from stream_triggers.stream.settings import WorkerStats
from stream_triggers.stream.store import PartitionStore

PARTITIONS = 2
CONFIGURED = step(EMPTY, ConfigurationUpdated({"t": {"after": ["a"], "run": "x"}}, utc_now()))[0]


def uids_on(partition: int) -> list[str]:
    return [f"s{i}" for i in range(100) if partition_for(f"s{i}".encode(), PARTITIONS) == partition]


class FakeMessage:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


def test_owner_records_round_trip_and_garbage_is_refused() -> None:
    record = OwnerRecord(3, "w1.example:9100", 7, "workers", 1.5)
    key, value = encode_owner(record)
    assert key == b"3" and decode_owner(value) == record
    with pytest.raises(OwnersFormatError):
        decode_owner(b'{"partition": 3}')


def test_the_highest_epoch_wins_whatever_the_order() -> None:
    newer = encode_owner(OwnerRecord(0, "b:1", 5))[1]
    older = encode_owner(OwnerRecord(0, "a:1", 4))[1]  # written late by a worker that lost partition 0
    other = encode_owner(OwnerRecord(1, "a:1", 4))[1]
    owners = latest_owners(FakeMessage(v) for v in (newer, b"garbage", None, older, other))
    assert owners == {0: OwnerRecord(0, "b:1", 5), 1: OwnerRecord(1, "a:1", 4)}


@pytest.fixture
def served(tmp_path: Path):
    state = ServedState()
    stores = [PartitionStore(str(tmp_path), "t.events", n) for n in range(PARTITIONS)]
    partitions = [Partition(n, store, epoch=3) for n, store in enumerate(stores)]
    worker = SimpleNamespace(stats=WorkerStats(), ready=threading.Event(), loop_at=None)
    server = serve_worker_metrics(worker, 0, host="127.0.0.1", routes={SESSIONS_PATH: session_route(state)})
    try:
        yield state, partitions, f"127.0.0.1:{server.port}"
    finally:
        server.close()
        for store in stores:
            store.close()


def test_the_owner_serves_what_its_store_committed(served) -> None:
    state, partitions, endpoint = served
    zero, _ = partitions
    uid, never_seen = uids_on(0)[:2]
    committed = encode_state(CONFIGURED, 3)
    zero.store.write([(uid, 41, committed)], changelog_checkpoint=0)
    in_hand = zero.session(uid)  # the batch in hand changed it: not committed, never served
    in_hand.state, in_hand.applied_offset = EMPTY, 42
    zero.dirty[uid] = in_hand
    state.restoring([zero])
    with pytest.raises(OwnerUnavailable, match=r"503.*being restored"):
        ask_owner(endpoint, uid, PARTITIONS, 5)
    state.serve([zero])

    answer = ask_owner(endpoint, uid, PARTITIONS, 5)
    assert (answer.partition, answer.epoch, answer.applied_offset, answer.state) == (0, 3, 41, committed)
    missing = ask_owner(endpoint, never_seen, PARTITIONS, 5)
    assert (missing.partition, missing.state) == (0, None)  # owned, no such session: 200 "not found"
    with pytest.raises(OwnerUnavailable, match=r"404.*does not own partition 1"):
        ask_owner(endpoint, uids_on(1)[0], PARTITIONS, 5)
    with pytest.raises(OwnerUnavailable, match="400"):
        ask_owner(endpoint, uid, 0, 5)

    state.withdraw([0])  # revoked: its store is about to close
    with pytest.raises(OwnerUnavailable, match="404"):
        ask_owner(endpoint, uid, PARTITIONS, 5)


def test_a_worker_that_does_not_answer_is_named() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(OwnerUnavailable, match=f"{endpoint} did not answer"):
        ask_owner(endpoint, "s1", PARTITIONS, 2)


def test_a_partition_no_worker_ever_advertised_goes_to_the_changelog_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers without --metrics-port never advertise: waiting for them would slow every read."""
    looks: list[str] = []

    def read_owners(client: object, topic: str, timeout_s: float) -> dict[int, OwnerRecord]:
        looks.append(topic)
        return {1: OwnerRecord(1, "elsewhere:1", 2)}  # another partition's owner only

    monkeypatch.setattr(owner_reads, "read_owners", read_owners)
    with pytest.raises(OwnerUnavailable, match=r"no worker advertised partition 0 in t\.owners"):
        owner_reads.read_from_owner(None, "t.owners", "s1", 0, PARTITIONS, 60.0, 5.0)  # type: ignore[arg-type]
    assert looks == ["t.owners"]  # one look, no retries
