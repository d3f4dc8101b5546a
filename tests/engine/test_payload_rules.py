"""One set of payload rules for every storage: memory, RocksDB and Kafka accept and refuse alike.

Refusals are ``InvalidPayload`` (a ``ValueError``) with a message naming the culprit,
raised before anything is stored or published: the stored state stays as it was, and
the kafka storage produces nothing (no broker is needed: its producer is a fake).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest

from stream_triggers.engine import (
    EMPTY,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    ConfigurationUpdated,
    InvalidPayload,
    MetadataUpdated,
    StatusReported,
    TriggerFired,
    checked_input,
    checked_instance,
    step,
)
from stream_triggers.events import decode, jsonx
from stream_triggers.events.records import record_from_input
from stream_triggers.events.state_format import encode_state
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.storages.kafka import KafkaStorage
from stream_triggers.storages.memory import MemoryStorage, MemoryStore
from stream_triggers.storages.rocksdb import RocksDBStorage, close_all
from stream_triggers.types import Status, TaskInstance

AT = datetime(2024, 5, 1, 12, 0)
CONFIGURATION = {"t": {"after": ["go", "never"], "run": "tests.Nothing"}}


def nested(depth: int) -> dict[str, Any]:
    """A dict ``depth`` levels deep (built without recursion)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


class FakeProducer:
    """Just enough of confluent_kafka.Producer for KafkaStorage.apply."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, on_delivery: Callable[..., Any]) -> None:
        self.produced.append((topic, key, value))
        on_delivery(None, None)

    def flush(self, timeout: float) -> int:
        return 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None, 1: None})})


@pytest.fixture(params=["memory", "rocksdb", "kafka"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseTriggerStorage]:
    """A storage holding one session whose instance ``t#0`` waits (unstarted)."""
    if request.param == "kafka":
        # (check_committed=False: no broker to read the committed state from; refusals come first anyway)
        yield KafkaStorage("s-1", "fake:9092", "payload-rules", producer=FakeProducer(), check_committed=False)
        return
    if request.param == "memory":
        built: BaseTriggerStorage = MemoryStorage("s-1", MemoryStore())
    else:
        built = RocksDBStorage("s-1", str(tmp_path / "rocksdb"))
    manager = TriggerManager(built)
    manager.update_configuration(CONFIGURATION)
    manager.fire("go")
    yield built
    close_all()


def stored(storage: BaseTriggerStorage) -> Any:
    """What the storage holds now: its committed state, or (kafka) what it published."""
    if isinstance(storage, KafkaStorage):
        return list(storage._producer.produced)  # type: ignore[attr-defined]
    return encode_state(storage.fresh().state)  # (decoded states hold new objects: compare bytes)


DEEP = nested(5_000)
HEAVY = "x" * (2 * 1024 * 1024)

REFUSED: list[Any] = [
    pytest.param(lambda m: m.fire("go2", DEEP), "nests containers more than", id="fire-5000-deep"),
    pytest.param(lambda m: m.fire("go2", {"s": HEAVY}), "more than the 524,288", id="fire-2MB"),
    pytest.param(lambda m: m.update_instance_metadata("t#0", {"o": object()}), "builtins.object", id="metadata-object"),
    pytest.param(lambda m: m.update_instance_metadata("t#0", {"deep": DEEP}), "nests containers", id="metadata-deep"),
    pytest.param(lambda m: m.update_instance_metadata("t#0", {"in": {1: "x"}}), "keys must be strings", id="int-key"),
    pytest.param(lambda m: m.update_instance_metadata("t#0", {"n": 2**70}), "64-bit range", id="huge-int"),
    pytest.param(lambda m: m.update_instance_metadata("t#0", {"s": "\ud800"}), "not valid Unicode", id="surrogate"),
    pytest.param(
        lambda m: m.update_instance_metadata("t#0", {"b": b"x" * (600 * 1024)}), "more than the", id="metadata-600KiB"
    ),
    pytest.param(
        lambda m: m.update_instance_metadata("t#0", {"l": [1, {2, frozenset({object()})}]}),
        "builtins.object",
        id="object-in-a-set",
    ),
    pytest.param(
        lambda m: m.update_instance_status("t#0", "failed", metadata={"o": object()}), "object", id="status-metadata"
    ),
    pytest.param(lambda m: m.skip_failed_instance("t#0", result={"s": HEAVY}), "more than the", id="skip-result-2MB"),
    pytest.param(
        lambda m: m.replay_failed_instance("t#0", replacement_kwargs={"go": DEEP}), "nests", id="replay-kwargs-deep"
    ),
    pytest.param(
        lambda m: m.update_configuration({"t2": {"after": ["a"], "run": "x", "team": DEEP}}),
        "nests containers",
        id="configuration-deep",
    ),
]


@pytest.mark.parametrize(("operation", "message"), REFUSED)
def test_every_storage_refuses_the_same_payloads_and_stores_nothing(
    storage: BaseTriggerStorage, operation: Callable[[TriggerManager], None], message: str
) -> None:
    before = stored(storage)
    with pytest.raises(InvalidPayload, match=message) as raised:
        operation(TriggerManager(storage))
    assert isinstance(raised.value, ValueError)
    assert stored(storage) == before


WHEN = datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC)
ACCEPTED: dict[str, Any] = {
    "when": WHEN,
    "naive": datetime(2024, 5, 1),
    "day": date(2024, 5, 1),
    "at": time(12, 30),
    "took": timedelta(seconds=1.5),
    "amount": Decimal("1.50"),
    "id": UUID(int=7),
    "blob": b"\x00\xff",
    "pair": (1, "a"),
    "tags": {"a", "b"},
    "frozen": frozenset({1}),
    "ordered": OrderedDict(a=1, b=[1, 2]),
    "status": Status.FINISHED,
    "big": 2**64 - 1,
    "small": -(2**63),
    "inf": math.inf,
    "ünïcode": "naïve ✓",
    "deepest": nested(MAX_PAYLOAD_DEPTH - 1),
}


def test_every_storage_accepts_the_same_payloads_and_gives_back_plain_types(storage: BaseTriggerStorage) -> None:
    TriggerManager(storage).update_instance_metadata("t#0", ACCEPTED)
    if isinstance(storage, KafkaStorage):
        [(_topic, _key, value)] = storage._producer.produced  # type: ignore[attr-defined]
        metadata = jsonx.loads(decode(value)[1]["metadata_json"])
    else:
        metadata = storage.fresh().instances["t#0"].metadata
    for key, value in ACCEPTED.items():
        assert metadata[key] == value, key
    # Subclasses are stored as their base type, whatever the storage.
    assert type(metadata["ordered"]) is dict
    assert type(metadata["status"]) is str
    assert type(metadata["pair"]) is tuple


# -- the rules themselves, at the engine ---------------------------------------------------


def test_the_weight_limit_is_exact() -> None:
    # A one-key map weighs 8 (the map) + its key's bytes + its string's bytes.
    fits = TriggerFired("go", {"s": "x" * (MAX_PAYLOAD_BYTES - 8 - 1)}, AT)
    assert checked_input(fits) is fits
    with pytest.raises(InvalidPayload, match="weigh 524,289 bytes, more than the 524,288"):
        checked_input(TriggerFired("go", {"s": "x" * (MAX_PAYLOAD_BYTES - 8)}, AT))
    # Non-ASCII text counts its UTF-8 bytes.
    with pytest.raises(InvalidPayload, match="weigh"):
        checked_input(TriggerFired("go", {"s": "é" * (MAX_PAYLOAD_BYTES // 2)}, AT))


def test_the_payloads_of_one_input_are_weighed_together() -> None:
    half = {"s": "x" * (MAX_PAYLOAD_BYTES // 2)}
    with pytest.raises(InvalidPayload, match="The metadata and result of this StatusReported weigh"):
        checked_input(StatusReported("t#0", Status.FINISHED, half, AT, half))


def test_what_a_report_echoes_back_is_weighed_once() -> None:
    result = {"s": "x" * (300 * 1024)}
    finished = StatusReported("t#0", Status.FINISHED, {TaskInstance.META_RESULT: result}, AT, result)
    assert checked_input(finished) is finished
    kwargs = {"a": {"s": "x" * (300 * 1024)}, "b": {"s": "x" * (300 * 1024)}}  # each fire fitted
    running = StatusReported("t#0", Status.RUNNING, {TaskInstance.META_ACTUAL_KWARGS: kwargs}, AT)
    assert checked_input(running) is running
    too_big = {"s": "x" * MAX_PAYLOAD_BYTES}
    with pytest.raises(InvalidPayload, match="weigh"):
        checked_input(StatusReported("t#0", Status.FINISHED, {TaskInstance.META_RESULT: too_big}, AT, too_big))


def test_the_depth_limit_is_exact() -> None:
    fits = TriggerFired("go", nested(MAX_PAYLOAD_DEPTH), AT)
    assert checked_input(fits) is fits
    with pytest.raises(InvalidPayload, match=f"more than {MAX_PAYLOAD_DEPTH} deep"):
        checked_input(TriggerFired("go", nested(MAX_PAYLOAD_DEPTH + 1), AT))
    lists: list[Any] = []
    for _ in range(MAX_PAYLOAD_DEPTH - 2):  # the kwargs map, then MAX - 1 lists: MAX levels
        lists = [lists]
    assert checked_input(TriggerFired("go", {"l": lists}, AT)).kwargs == {"l": lists}  # type: ignore[union-attr]
    with pytest.raises(InvalidPayload, match=r"Kwargs of trigger 'go'\['l'\]\[0\]"):
        checked_input(TriggerFired("go", {"l": [lists]}, AT))


def test_a_refusal_names_the_input_the_field_and_the_path() -> None:
    with pytest.raises(InvalidPayload) as raised:
        checked_input(MetadataUpdated("t#0", {"a": {"b": [1, {"c": object()}]}}, AT))
    assert str(raised.value).startswith("Metadata for 't#0'['a']['b'][1]['c'] is a builtins.object (<object")
    with pytest.raises(InvalidPayload, match=r"^Metadata for 't#0'\['s'\]\[0\] is a string that is not valid Unicode"):
        checked_input(MetadataUpdated("t#0", {"s": ["\udc80"]}, AT))
    with pytest.raises(InvalidPayload, match=r"^Metadata for 't#0'\['n'\] is 18446744073709551616, outside"):
        checked_input(MetadataUpdated("t#0", {"n": 2**64}, AT))
    with pytest.raises(InvalidPayload, match=r"^Metadata for 't#0' has a key that is not valid Unicode"):
        checked_input(MetadataUpdated("t#0", {"\ud800": 1}, AT))
    with pytest.raises(InvalidPayload, match=r"Kwargs of trigger 'go' must be a mapping \(dict\), not list"):
        checked_input(TriggerFired("go", [1, 2], AT))  # type: ignore[arg-type]


def test_plain_payloads_pass_through_untouched_and_others_are_normalised() -> None:
    plain = TriggerFired("go", {"a": [1, 2.5, None, True], "b": {"c": "d"}}, AT)
    assert checked_input(plain) is plain
    odd = checked_input(TriggerFired("go", {Status.FINISHED: OrderedDict(x=Status.FAILED)}, AT))
    assert odd.kwargs == {"finished": {"x": "failed"}}  # type: ignore[union-attr]
    assert type(next(iter(odd.kwargs))) is str and type(odd.kwargs["finished"]) is dict  # type: ignore[union-attr]


def test_step_refuses_before_changing_anything() -> None:
    state, _ = step(EMPTY, ConfigurationUpdated(CONFIGURATION, AT))
    state, _ = step(state, TriggerFired("go", {}, AT))
    before = state.instances["t#0"]
    with pytest.raises(InvalidPayload):
        step(state, MetadataUpdated("t#0", {"o": object()}, AT))
    with pytest.raises(InvalidPayload):
        step(state, TriggerFired("never", DEEP, AT))
    assert state.instances["t#0"] is before
    assert state.latest_kwargs.keys() == {"go"}


def test_the_kafka_records_are_checked_by_the_same_rules() -> None:
    with pytest.raises(InvalidPayload, match="nests containers"):
        record_from_input(TriggerFired("go", DEEP, AT))
    with pytest.raises(InvalidPayload, match="nests containers"):
        record_from_input(ConfigurationUpdated({"t": {"after": ["a"], "run": "x", "team": DEEP}}, AT))


def test_direct_edits_meet_the_same_rules(tmp_path: Path) -> None:
    for storage in (MemoryStorage("s-2", MemoryStore()), RocksDBStorage("s-2", str(tmp_path / "db"))):
        manager = TriggerManager(storage)
        manager.update_configuration(CONFIGURATION)
        manager.fire("go")
        before = storage.fresh().state
        with (
            pytest.raises(InvalidPayload, match="Metadata of instance 't#0'\\['o'\\]"),
            storage.acquire_lock() as locked,
        ):
            locked["t#0"].metadata["o"] = object()
            locked.save()
        assert encode_state(storage.fresh().state) == encode_state(before)
    close_all()
    instance = before.instances["t#0"]
    assert checked_instance(instance) is instance
