"""The native decoder against the Python path: same verdict and reason for any bytes, never a crash.

Random bytes, bytes behind a real header, and valid records of every type mutated byte by
byte go through both; each must give the same outcome (applied with the same outputs,
skipped, or dead-lettered with the same reason).  A panic in Rust would surface here as a
``PanicException``, so these are also the decoder's fuzz tests.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record
from stream_triggers.stream.native_engine import state_parts

from .reference import TOPICS, PythonSide, comparable, decoded, native_state

native = pytest.importorskip("stream_triggers_native")

UID = "s1"
AT = 1_700_000_000_000_000
NOW = 1_800_000_000_000_000
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Messages that are not the Python path's word for word (the reason always is): the texts
# of fastavro's and json's own exceptions.
LOOSE_MESSAGES = ("corrupt ", "jsonx: not JSON text", "'utf-8' codec")


def encoded(type_name: str, uid: str = UID, at: int = AT, **fields: object) -> bytes:
    return codec.encode(type_name, event_record(type_name, uid, event_id="e-1", produced_at_us=at, **fields))


VALID = [
    encoded("TriggerFired", trigger="a", kwargs_json='{"k":1}'),
    encoded("ConfigurationUpdated", configuration_json='{"t":{"after":["a"],"run":"x"}}'),
    encoded("InstanceStatusReported", instance="t#0", status="finished", metadata_json="{}", result_json=None),
    encoded("RetryRequested", instance="t#0", metadata_json="{}", replacement_kwargs_json=None, cooldown_s=1.5),
    encoded("ReplayRequested", instance="t#0", replacement_kwargs_json='{"a":{}}'),
    encoded("SkipRequested", instance="t#0", cascade=True, result_json="{}"),
    encoded("InstanceStatusUpdateRequested", instance="t#0", status="failed", metadata_json="{}", cascade=False),
    encoded("InstanceMetadataUpdateRequested", instance="t#0", metadata_json='{"m":[1,2.5,"x"]}'),
    encoded("LogsResolved", instance="t#0"),
    encoded("SessionFinalized", cause_event_id="c", cause_produced_at=AT),
    encoded("DeadLetter", reason="r", error="e", topic="t", partition=0, offset=1, key=b"s1", value=b"v"),
    codec.encode(
        "SessionSnapshot",
        {"session_uid": UID, "produced_at": AT, "state": b"\x02", "input_partition": 0, "applied_offset": 3},
    ),
]


def both(key: bytes | None, value: bytes | None, *, setup: list[bytes] = ()) -> tuple[tuple, tuple]:
    """The outcome of ``value`` on each side, after ``setup`` records were applied to both."""
    python = PythonSide()
    core = native.NativeCore("default", TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    records = [(offset, UID.encode(), v) for offset, v in enumerate(setup)] + [(len(setup), key, value)]
    theirs = [python.apply(0, offset, k, v, NOW) for offset, k, v in records]
    ours = core.apply_batch(0, records, NOW)
    for a, b in zip(theirs, ours, strict=True):
        assert_same(a, b)
    if any(o[0] == "python" for o in ours) and UID in python.sessions:  # (as the worker: back from Python)
        entry = python.sessions[UID]
        core.load(UID, entry.applied_offset, *state_parts(entry.state))
    assert native_state(core, UID) == (None if UID not in python.sessions else comparable(python.sessions[UID].state))
    return theirs[-1], ours[-1]


HANDED_BACK = ("an integer beyond 64 bits", "JSON nested too deeply", "a cooldown beyond the datetime range")
"""What the core hands to the Python engine (the worker applies it there, counted): never a guess."""


def assert_same(theirs: tuple, ours: tuple) -> None:
    if ours[0] == "python":
        assert ours[1] in HANDED_BACK, f"the native core handed back {ours!r}"
        return
    if theirs[0] == "dead":
        assert ours[:2] == theirs[:2], (theirs, ours)
        if not theirs[2].startswith(LOOSE_MESSAGES):
            assert ours[2] == theirs[2]
    elif theirs[0] == "applied":
        assert ours[:2] == theirs[:2]
        assert [t for t, *_ in ours[2]] == [t for t, _ in theirs[2]]
        for (_, mine, *_), (_, reference) in zip(ours[2], theirs[2], strict=True):
            assert mine == reference or decoded(mine) == decoded(reference)
    else:
        assert ours == theirs


def test_fingerprints_match_the_python_codec() -> None:
    readers = codec._READERS
    for name, version, fingerprint in native.fingerprints():
        assert readers[fingerprint].name == name
        assert readers[fingerprint].version == version
    assert len(native.fingerprints()) == len(readers)


@FAST
@given(st.binary(max_size=64))
def test_random_bytes(value: bytes) -> None:
    both(UID.encode(), value)


@FAST
@given(st.sampled_from([fp for _, _, fp in native.fingerprints()]), st.binary(max_size=80))
def test_random_bodies_behind_a_real_header(fingerprint: bytes, body: bytes) -> None:
    both(UID.encode(), codec.MAGIC + fingerprint + body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(codec.HEADER_SIZE, len(data)))
        change = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if change == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif change == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif change == "delete" and at < len(data):
            del data[at]
        elif change == "truncate":
            del data[at:]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_records(value: bytes) -> None:
    setup = [
        encoded("ConfigurationUpdated", configuration_json='{"t":{"after":["a"],"run":"x"}}'),
        encoded("TriggerFired", trigger="a", kwargs_json="{}"),
    ]
    both(UID.encode(), value, setup=setup)


@pytest.mark.parametrize("value", VALID, ids=lambda v: codec.decode(v)[0])
def test_every_record_type(value: bytes) -> None:
    both(UID.encode(), value)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, VALID[0], "missing_key"),
        (b"\xff", VALID[0], "undecodable"),
        (b"other", VALID[0], "key_mismatch"),
        (UID.encode(), None, "undecodable"),
        (UID.encode(), b"\xc3\x01" + b"\x00" * 8, "unknown_schema"),
        (UID.encode(), VALID[0] + b"\x00", "undecodable"),
        (UID.encode(), encoded("TriggerFired", trigger="a", kwargs_json="[1]"), "invalid_payload"),
        (UID.encode(), encoded("TriggerFired", trigger="a", kwargs_json="{"), "invalid_payload"),
        (UID.encode(), encoded("LogsResolved", instance="nope"), "unknown_instance"),
        (UID.encode(), encoded("InstanceStatusUpdateRequested", instance="t", status="odd"), "invalid_payload"),
        (UID.encode(), VALID[9], "invalid_payload"),
    ],
)
def test_dead_letter_reasons(key: bytes | None, value: bytes | None, reason: str) -> None:
    theirs, ours = both(key, value)
    assert theirs[:2] == ours[:2] == ("dead", reason)


def test_v1_status_reports_are_read() -> None:
    import io
    import json

    from fastavro import parse_schema, schemaless_writer

    history = json.loads((codec.HISTORY_DIR / "InstanceStatusReported.v1.avsc").read_text())
    body = io.BytesIO()
    record = {"event_id": "e", "session_uid": UID, "produced_at": AT, "instance": "t#0", "status": "running"}
    schemaless_writer(body, parse_schema(history), {**record, "metadata_json": "{}"})
    value = codec.MAGIC + codec.schema_fingerprint(history) + body.getvalue()
    setup = [
        encoded("ConfigurationUpdated", configuration_json='{"t":{"after":["a"],"run":"x"}}'),
        encoded("TriggerFired", trigger="a", kwargs_json="{}"),
    ]
    theirs, ours = both(UID.encode(), value, setup=setup)
    assert theirs[0] == ours[0] == "applied"
