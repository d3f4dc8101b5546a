"""The Avro single-object codec, the record builder and the jsonx helper."""

from __future__ import annotations

import io
import json
import pickle
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from stream_triggers.events import SCHEMA_NAMES, CodecError, codec, decode, encode, event_record, jsonx
from stream_triggers.events.codec import HISTORY_DIR, MAGIC, SCHEMA_DIR, schema_fingerprint

T0 = 1_764_079_508_123_456  # 2025-11-25T14:05:08.123456Z in microseconds

# Realistic non-envelope fields for every record type.
SAMPLES: dict[str, dict[str, Any]] = {
    "ConfigurationUpdated": {
        "configuration_json": jsonx.dumps(
            {"t_score": {"after": ["start", "page1"], "run": "score", "withParams": {"start": {"model": "Psych 01"}}}}
        )
    },
    "TriggerFired": {"trigger": "page1", "kwargs_json": jsonx.dumps({"page": 1, "answers": ["a", "c"], "ts": T0})},
    "InstanceStatusReported": {
        "instance": "t_score#0",
        "status": "finished",
        "metadata_json": jsonx.dumps({"logLevel": 20, "finishedAt": datetime(2025, 11, 25, 14, 5, 8)}),
        "result_json": jsonx.dumps({"score": 0.93}),
    },
    "RetryRequested": {
        "instance": "t_score#0",
        "metadata_json": jsonx.dumps({"exceptionType": "builtins.TimeoutError"}),
        "replacement_kwargs_json": jsonx.dumps({"page": 2}),
        "cooldown_s": 1.5,
    },
    "ReplayRequested": {"instance": "t_score#1", "replacement_kwargs_json": None},
    "SkipRequested": {"instance": "t_score#2", "cascade": True, "result_json": jsonx.dumps({"score": None})},
    "InstanceStatusUpdateRequested": {
        "instance": "t_score#0",
        "status": "abandoned",
        "metadata_json": "{}",
        "cascade": False,
        "cascade_kwargs_json": None,
    },
    "InstanceMetadataUpdateRequested": {"instance": "t_score#0", "metadata_json": jsonx.dumps({"note": "ünïcode ✓"})},
    "LogsResolved": {"instance": "t_score#0"},
    "TaskRunRequested": {
        "cause_event_id": uuid.uuid4().hex,
        "cause_produced_at": T0 - 1000,
        "instance": "t_score#0",
        "task": "t_score",
        "run": "demo.tasks.Score",
        "runner": "kafka",
        "manager": "default",
        "kwargs_json": jsonx.dumps({"start": {"model": "Psych 01"}, "page1": {}}),
        "depth": 1,
        "not_before": T0 + 1_500_000,
    },
    "InstanceStatusChanged": {
        "cause_event_id": "s-42:events:3:1017",
        "cause_produced_at": T0 - 5,
        "instance": "t_score#0",
        "task": "t_score",
        "status": "failed",
        "previous_status": "running",
        "metadata_json": jsonx.dumps({"exceptionInfo": "Traceback ..."}),
    },
    "SessionFinalized": {"cause_event_id": "e1", "cause_produced_at": T0, "kwargs_json": "{}"},
    "DeadLetter": {
        "reason": "undecodable",
        "error": "not an Avro single-object record",
        "topic": "triggers.events",
        "partition": 3,
        "offset": 2**40,
        "key": b"session-1",
        "value": b"\x00\xffgarbage",
    },
    "SessionSnapshot": {"state": b"\x01\x94\x90\x90", "input_partition": 2, "applied_offset": 123456},
    "SessionPurged": {
        "reason": "retention",
        "last_input_at": T0,
        "finalized_at": T0 + 1,
        "input_partition": 1,
        "applied_offset": 42,
    },
}


def test_samples_cover_every_schema() -> None:
    assert set(SAMPLES) == SCHEMA_NAMES
    assert len(SCHEMA_NAMES) == 15


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_round_trip(type_name: str) -> None:
    record = event_record(type_name, "session-ü-1", produced_at_us=T0, **SAMPLES[type_name])
    data = encode(type_name, record)
    assert data[:2] == MAGIC
    assert decode(data) == (type_name, record)
    assert decode(memoryview(data)) == (type_name, record)
    assert decode(bytearray(data)) == (type_name, record)


def _crc64_avro(text: str) -> bytes:
    """Independent CRC-64-AVRO (Rabin), from the Avro spec, as little-endian bytes."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in text.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_header_is_spec_single_object_encoding() -> None:
    # Avro spec test vector: fingerprint64 of "null" is 7195948357588979594.
    assert int.from_bytes(schema_fingerprint("null"), "little", signed=True) == 7195948357588979594
    raw = json.loads((SCHEMA_DIR / "TriggerFired.avsc").read_text())
    canonical = (
        '{"name":"stream_triggers.events.TriggerFired","type":"record","fields":['
        '{"name":"event_id","type":"string"},{"name":"session_uid","type":"string"},'
        '{"name":"produced_at","type":"long"},{"name":"trigger","type":"string"},'
        '{"name":"kwargs_json","type":"string"}]}'
    )
    data = encode("TriggerFired", event_record("TriggerFired", "s", trigger="t", kwargs_json="{}"))
    assert data[2:10] == schema_fingerprint(raw) == _crc64_avro(canonical)


def test_event_record_fills_envelope_and_defaults() -> None:
    record = event_record("InstanceStatusReported", "s1", instance="t#0", status="running", metadata_json="{}")
    assert len(record["event_id"]) == 32 and int(record["event_id"], 16) >= 0
    assert abs(record["produced_at"] - datetime.now(UTC).timestamp() * 1e6) < 60e6
    assert record["result_json"] is None
    assert list(record)[:3] == ["event_id", "session_uid", "produced_at"]
    other = event_record("InstanceStatusReported", "s1", instance="t#0", status="running", metadata_json="{}")
    assert other["event_id"] != record["event_id"]
    fixed = event_record("LogsResolved", "s1", event_id="e-1", produced_at_us=7, instance="t#0")
    assert fixed == {"event_id": "e-1", "session_uid": "s1", "produced_at": 7, "instance": "t#0"}
    snapshot = event_record("SessionSnapshot", "s1", **SAMPLES["SessionSnapshot"])
    assert "event_id" not in snapshot


@pytest.mark.parametrize(
    ("call", "reason", "fragment"),
    [
        (lambda: event_record("Nope", "s"), "unknown_schema", "no schema named 'Nope'"),
        (lambda: event_record("LogsResolved", "s"), "invalid_payload", "needs field 'instance'"),
        (lambda: event_record("LogsResolved", "s", instance="i", colour=1), "invalid_payload", "'colour'"),
        (
            lambda: event_record("SessionSnapshot", "s", event_id="e", **SAMPLES["SessionSnapshot"]),
            "invalid_payload",
            "no event_id",
        ),
    ],
)
def test_event_record_errors(call: Any, reason: str, fragment: str) -> None:
    with pytest.raises(CodecError) as info:
        call()
    assert info.value.reason == reason
    assert fragment in str(info.value)


def test_encode_errors_name_the_problem() -> None:
    good = event_record("TriggerFired", "s", trigger="t", kwargs_json="{}")
    with pytest.raises(CodecError) as info:
        encode("Nope", good)
    assert info.value.reason == "unknown_schema"
    for bad, fragment in [
        ({**good, "produced_at": "yesterday"}, "produced_at"),
        ({**good, "trigger": None}, "trigger"),
        ({k: v for k, v in good.items() if k != "kwargs_json"}, "kwargs_json"),
        ({**good, "extra": 1}, "extra"),
    ]:
        with pytest.raises(CodecError) as info:
            encode("TriggerFired", bad)
        assert info.value.reason == "invalid_payload"
        assert fragment in str(info.value), str(info.value)
    status = event_record("InstanceStatusReported", "s", instance="i", status="running", metadata_json="{}")
    with pytest.raises(CodecError, match="status"):
        encode("InstanceStatusReported", {**status, "status": "exploded"})


def _valid() -> bytes:
    return encode(
        "InstanceStatusReported", event_record("InstanceStatusReported", "s", **SAMPLES["InstanceStatusReported"])
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc3\x01", "undecodable"),
        (b"\xc3\x01\x00\x01\x02", "undecodable"),
        (b'{"trigger": "start"}', "undecodable"),
        (b"\xc3\x02" + _valid()[2:], "undecodable"),
        (_valid()[:-3], "undecodable"),  # truncated body
        (_valid()[:10], "undecodable"),  # header only
        (_valid() + b"\x00", "undecodable"),  # trailing bytes
        (_valid()[:10] + b"\x01" + _valid()[11:], "undecodable"),  # negative string length
        (_valid()[:10] + b"\xff" * 20, "undecodable"),
        (MAGIC + b"\x00" * 8 + _valid()[10:], "unknown_schema"),
        (MAGIC + bytes.fromhex("0123456789abcdef") + _valid()[10:], "unknown_schema"),
    ],
)
def test_decode_errors(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as info:
        decode(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_decode_bad_enum_index_is_undecodable() -> None:
    record = event_record("InstanceStatusReported", "s", instance="i", status="running", metadata_json="{}")
    data = bytearray(encode("InstanceStatusReported", record))
    index = data.index(b"\x02i") + 2  # status enum index follows the instance string
    data[index] = 2 * 9  # zigzag 9: no such symbol
    with pytest.raises(CodecError) as info:
        decode(bytes(data))
    assert info.value.reason == "undecodable"


def test_codec_error_pickles_with_its_reason() -> None:
    error = pickle.loads(pickle.dumps(CodecError("unknown_schema", "boom")))
    assert (error.reason, str(error)) == ("unknown_schema", "boom")


def test_old_schema_record_reads_with_new_schema() -> None:
    old_raw = json.loads((HISTORY_DIR / "InstanceStatusReported.v1.avsc").read_text())
    assert "result_json" not in [f["name"] for f in old_raw["fields"]]
    old = {
        "event_id": "e-old",
        "session_uid": "s-old",
        "produced_at": T0,
        "instance": "t_a#0",
        "status": "failed",
        "metadata_json": '{"exceptionType":"ValueError"}',
    }
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(old_raw), old)
    data = MAGIC + schema_fingerprint(old_raw) + body.getvalue()
    assert data[2:10] != encode("InstanceStatusReported", {**old, "result_json": None})[2:10]
    assert decode(data) == ("InstanceStatusReported", {**old, "result_json": None})


def test_every_historical_schema_is_registered() -> None:
    history = sorted(HISTORY_DIR.glob("*.avsc"))
    assert history, "at least one historical schema proves evolution"
    for path in history:
        raw = json.loads(path.read_text())
        entry = codec._READERS[schema_fingerprint(raw)]
        assert entry.name == path.name.split(".")[0]
        assert entry.reader is not None


# --- jsonx ---------------------------------------------------------------------------


class Level(IntEnum):
    INFO = 20


ROUND_TRIPS: list[Any] = [
    {"naive": datetime(2025, 11, 25, 14, 5, 8, 123456)},
    {"utc": datetime(2025, 11, 25, 14, 5, 8, tzinfo=UTC)},
    {"offset": datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))},
    {"d": date(1999, 12, 31), "t": time(23, 59, 59, 999999), "tz_t": time(1, 2, tzinfo=timezone(timedelta(hours=5)))},
    {"td": timedelta(days=-2, seconds=3, microseconds=4), "zero": timedelta(0)},
    {"dec": Decimal("10.500"), "neg": Decimal("-0E-7"), "inf": Decimal("Infinity")},
    {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    {"set": {3, 1, 2}, "fs": frozenset({"a", "b"}), "mixed": {1, "x", (2, 3)}, "empty": set()},
    {"tup": (1, (2, "x"), []), "list": [1, [2, (3,)]]},
    {"b": b"\x00\xff\x10", "empty": b""},
    {"$st": "looks like a tag", "v": [1, {"$st": 2}]},
    {"nan_free": [0.1, -0.0, 1e300], "inf": float("inf"), "ninf": float("-inf")},
    {"plain": [None, True, False, 0, -1, 2**70, "ü ✓ \u2028"], "nested": {"a": {"b": {"c": []}}}},
    [1, "top-level list"],
    "just a string",
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_jsonx_round_trip_exact(value: Any) -> None:
    text = jsonx.dumps(value)
    back = jsonx.loads(text)
    assert back == value
    assert _types(back) == _types(value)
    json.loads(text)  # standard JSON, readable anywhere


def _types(value: Any) -> Any:
    """The value's shape with types (and tzinfo offsets) made visible for comparison."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_types(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(map(repr, value)))
    if isinstance(value, (datetime, time)):
        return (type(value).__name__, value.isoformat(), value.utcoffset())
    return (type(value).__name__, repr(value))


def test_jsonx_naive_and_aware_datetimes_stay_apart() -> None:
    naive = datetime(2025, 11, 25, 12, 0)
    aware = datetime(2025, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    back = jsonx.loads(jsonx.dumps({"n": naive, "a": aware}))
    assert back["n"].tzinfo is None and back["n"] == naive
    assert back["a"].utcoffset() == timedelta(hours=2) and back["a"] == aware


def test_jsonx_format_is_compact_and_tagged() -> None:
    text = jsonx.dumps({"a": [1, 2], "when": datetime(2025, 1, 2, 3, 4, 5), "s": {2, 1}})
    assert text == '{"a":[1,2],"when":{"$st":"datetime","v":"2025-01-02T03:04:05"},"s":{"$st":"set","v":[1,2]}}'


def test_jsonx_base_types_of_subclasses() -> None:
    back = jsonx.loads(jsonx.dumps({"level": Level.INFO}))
    assert back == {"level": 20} and type(back["level"]) is int


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"a": [1, {"b": object()}]}, "builtins.object"),
        ({"a": [1, {"b": object()}]}, "at $['a'][1]['b']"),
        ({"k": {1: "one"}}, "dict key 1"),
        ({"k": {1: "one"}}, "at $['k']"),
        ([lambda: None], "function"),
        ({"c": 1 + 2j}, "complex"),
    ],
)
def test_jsonx_refuses_what_it_cannot_carry(value: Any, fragment: str) -> None:
    with pytest.raises(CodecError) as info:
        jsonx.dumps(value)
    assert info.value.reason == "invalid_payload"
    assert fragment in str(info.value)


def test_jsonx_refuses_circular_values() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CodecError, match="circular"):
        jsonx.dumps(loop)


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "",
        b"\xff",
        '{"$st":"nope","v":1}',
        '{"$st":"datetime","v":"yesterday"}',
        '{"$st":"uuid"}',
        '{"$st":"set","v":[[1]]}',
    ],
)
def test_jsonx_loads_errors(text: str | bytes) -> None:
    with pytest.raises(CodecError) as info:
        jsonx.loads(text)
    assert info.value.reason == "invalid_payload"
