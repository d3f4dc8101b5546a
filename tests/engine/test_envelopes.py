"""Records are built in one place (events/envelope.py), statuses and ``sessionFinalized`` defined in one."""

from __future__ import annotations

from datetime import datetime

import pytest

from stream_triggers.engine import (
    ConfigurationUpdated,
    Input,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
)
from stream_triggers.events import CodecError, decode, encode, event_record, output_record
from stream_triggers.events.records import (
    dead_letter_record,
    encoded_input,
    input_from_record,
    input_record,
    us_from_datetime,
)
from stream_triggers.types import (
    FAILURE_STATUSES,
    PUBLISHED_STATUSES,
    RESOLVED_STATUSES,
    SESSION_FINALIZED,
    TERMINAL_STATUSES,
    Status,
)

AT = datetime(2024, 5, 1, 12, 0, 0, 123456)
INPUTS: list[Input] = [
    ConfigurationUpdated({"t": {"after": ["a"], "run": "x"}}, AT),
    TriggerFired("a", {"n": 1, "when": AT}, AT),
    StatusReported("t#0", Status.FINISHED, {"k": "v"}, AT, {"rows": 2}),
    RetryRequested("t#0", {"k": "v"}, {"a": {"n": 2}}, 1.5, AT),
    ReplayRequested("t#0", None, AT),
    ReplayRequested("t#0", {"a": {}}, AT),
    SkipRequested("t#0", True, {"r": 1}, AT),
    StatusUpdated("t#0", Status.FAILED, {"k": 1}, True, {"c": 1}, AT),
    MetadataUpdated("t#0", {"note": "x"}, AT),
    LogsResolved("t#0", AT),
]


@pytest.mark.parametrize("event", INPUTS, ids=lambda event: type(event).__name__)
def test_input_records_carry_a_full_envelope_and_round_trip(event: Input) -> None:
    type_name, record = input_record("s-1", event, event_id="e-1", produced_at_us=us_from_datetime(AT))
    assert (record["event_id"], record["session_uid"], record["produced_at"]) == ("e-1", "s-1", us_from_datetime(AT))
    assert decode(encode(type_name, record)) == (type_name, record)
    assert input_from_record(type_name, record) == event


def test_encoded_input_gets_a_fresh_event_id_and_the_current_time() -> None:
    first = decode(encoded_input("s-1", LogsResolved("t#0", AT)))[1]
    second = decode(encoded_input("s-1", LogsResolved("t#0", AT)))[1]
    assert first["event_id"] != second["event_id"]
    assert first["produced_at"] > us_from_datetime(AT)


def test_dead_letter_records_keep_every_field_and_encode() -> None:
    record = dead_letter_record("d-1", "undecodable", "boom", "t.events", 3, 42, b"s-1", b"\x00", 7)
    assert record == {
        "event_id": "d-1",
        "session_uid": "s-1",
        "produced_at": 7,
        "reason": "undecodable",
        "error": "boom",
        "topic": "t.events",
        "partition": 3,
        "offset": 42,
        "key": b"s-1",
        "value": b"\x00",
    }
    assert decode(encode("DeadLetter", record)) == ("DeadLetter", record)
    assert dead_letter_record("d-2", "r", "e", "t", 0, 0, b"\xff", None, 7)["session_uid"] is None


def test_output_records_name_their_cause() -> None:
    record = output_record("SessionFinalized", "s-1", "0:5:0", 9, "e-1", 8, kwargs_json="{}")
    assert record == {
        "event_id": "0:5:0",
        "session_uid": "s-1",
        "produced_at": 9,
        "cause_event_id": "e-1",
        "cause_produced_at": 8,
        "kwargs_json": "{}",
    }
    assert decode(encode("SessionFinalized", record)) == ("SessionFinalized", record)


def test_event_record_names_the_first_missing_field_in_schema_order() -> None:
    with pytest.raises(CodecError, match="needs field 'instance'"):
        event_record("InstanceStatusReported", "s", status="running")
    with pytest.raises(CodecError, match="no field\\(s\\) 'produced_at'"):
        event_record("LogsResolved", "s", instance="i", produced_at=1)


def test_status_sets() -> None:
    assert {Status.ABANDONED, Status.FINISHED, Status.SKIPPED, Status.REPLAYED} == RESOLVED_STATUSES
    assert RESOLVED_STATUSES | {Status.FAILED} == TERMINAL_STATUSES
    assert PUBLISHED_STATUSES == TERMINAL_STATUSES
    assert {Status.FAILED, Status.REPLAYED, Status.SKIPPED} == FAILURE_STATUSES
    assert "finished" in PUBLISHED_STATUSES and "scheduled" not in PUBLISHED_STATUSES  # plain strings match


def test_session_finalized_and_the_published_statuses_are_defined_once() -> None:
    from stream_triggers.cli import inspect
    from stream_triggers.events import records
    from stream_triggers.manager import FinalizingTriggerManager
    from stream_triggers.stream import outputs

    assert SESSION_FINALIZED == "sessionFinalized"
    assert FinalizingTriggerManager.TRIGGER_SESSION_FINALIZED is SESSION_FINALIZED
    assert outputs.SESSION_FINALIZED is SESSION_FINALIZED
    assert inspect.SESSION_FINALIZED is SESSION_FINALIZED
    assert records.PUBLISHED_STATUSES is outputs.PUBLISHED_STATUSES is PUBLISHED_STATUSES
