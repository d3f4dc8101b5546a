"""Input that cannot be decoded or applied lands on the dead-letter topic; the worker carries on."""

from __future__ import annotations

from typing import Any

import pytest

from stream_triggers.engine import ReplayRequested, SkipRequested
from stream_triggers.events import encode, event_record, jsonx
from stream_triggers.events.codec import MAGIC
from stream_triggers.storages.base import utc_now
from stream_triggers.storages.kafka import KafkaStorage
from tests.support import App, Pipeline, Readers, kwargs_of, wait_until

UID = "poison-1"
CONFIGURATION = {"t_a": {"after": ["go"], "run": "A"}, "t_b": {"after": ["t_a"], "run": "B"}}


def fired(uid: str, trigger: str, kwargs_json: str = "{}") -> bytes:
    return encode("TriggerFired", event_record("TriggerFired", uid, trigger=trigger, kwargs_json=kwargs_json))


@pytest.mark.broker
@pytest.mark.slow
def test_poison_input_goes_to_dead_letter_and_the_session_carries_on(
    workers: Pipeline, readers: Readers, app: App
) -> None:
    workers.worker().wait_assigned()
    app.configure(UID, CONFIGURATION)
    key = UID.encode()

    poison: list[tuple[str, bytes | None, bytes]] = [
        ("undecodable", key, b"this is not an Avro record"),
        ("undecodable", key, MAGIC + fired(UID, "go")[2:-3]),  # truncated body
        ("unknown_schema", key, MAGIC + bytes(8) + b"\x02\x04body"),
        (
            "invalid_configuration",
            key,
            encode(
                "ConfigurationUpdated",
                event_record(
                    "ConfigurationUpdated", UID, configuration_json=jsonx.dumps({"t_bad": {"after": [], "run": "X"}})
                ),
            ),
        ),
        ("key_mismatch", key, fired("poison-someone-else", "go")),
        ("missing_key", None, fired(UID, "go")),
        ("undecodable", b"\xff\xfe", fired(UID, "go")),  # a key that is not UTF-8
        ("invalid_payload", key, fired(UID, "go", kwargs_json="[1, 2]")),
        ("invalid_payload", key, fired(UID, "go", kwargs_json="{not json")),
        (  # a record type that does not belong on the events topic
            "invalid_payload",
            key,
            encode(
                "SessionFinalized",
                event_record("SessionFinalized", UID, cause_event_id="x", cause_produced_at=0),
            ),
        ),
    ]
    sent: list[dict[str, Any]] = []
    for reason, record_key, value in poison:
        partition, offset = app.produce_raw(record_key, value)
        sent.append({"reason": reason, "key": record_key, "value": value, "partition": partition, "offset": offset})

    # A replay of an instance that does not exist, published past the kafka storage's early
    # check (which refuses what the committed state already forbids): the worker's answer.
    KafkaStorage(UID, app.bootstrap, app.topics.prefix).publish(ReplayRequested("t_nope#0", None, utc_now()))
    events = readers["events"]
    replay = events.wait_for(lambda rs: any(r.type == "ReplayRequested" for r in rs), "the replay event")
    replay_record = next(r for r in replay if r.type == "ReplayRequested")
    sent.append(
        {
            "reason": "unknown_instance",
            "key": key,
            "value": replay_record.raw,
            "partition": replay_record.partition,
            "offset": replay_record.offset,
        }
    )

    # Later good events for the same session still apply.
    app.fire(UID, "go", {"n": 1})
    runs = readers["task-runs"].wait_count(1)
    assert [(r["instance"], kwargs_of(r)) for r in runs] == [("t_a#0", {"go": {"n": 1}})]
    # An operation the instance's status forbids (t_a#0 is scheduled, not failed).
    KafkaStorage(UID, app.bootstrap, app.topics.prefix).publish(SkipRequested("t_a#0", False, None, utc_now()))
    skip = events.wait_for(lambda rs: any(r.type == "SkipRequested" for r in rs), "the skip event")
    skip_record = next(r for r in skip if r.type == "SkipRequested")
    sent.append(
        {
            "reason": "operation_not_allowed",
            "key": key,
            "value": skip_record.raw,
            "partition": skip_record.partition,
            "offset": skip_record.offset,
        }
    )
    # A status that does not exist (the runners' reports carry an Avro enum; admin updates a string).
    bogus = encode(
        "InstanceStatusUpdateRequested",
        event_record("InstanceStatusUpdateRequested", UID, instance="t_a#0", status="bogus"),
    )
    partition, offset = app.produce_raw(key, bogus)
    sent.append({"reason": "invalid_payload", "key": key, "value": bogus, "partition": partition, "offset": offset})
    app.finished(UID, "t_a#0", {"done": True})
    runs = readers["task-runs"].wait_count(2)
    assert [(r["instance"], kwargs_of(r)) for r in runs][1] == ("t_b#0", {"t_a": {"done": True}})

    dead = readers["dead-letter"].wait_count(len(sent))
    readers["dead-letter"].settle(quiet_s=0.5)
    assert len(dead) == len(sent)
    by_place = {(r["partition"], r["offset"]): r for r in dead}
    for expected in sent:
        record = by_place[(expected["partition"], expected["offset"])]
        assert record.type == "DeadLetter"
        assert record["reason"] == expected["reason"], (expected, record["error"])
        assert record["value"] == expected["value"], expected["reason"]
        assert record["key"] == expected["key"] and record.key == expected["key"]
        assert record["topic"] == app.topics.events
        assert record["error"]
        assert record["event_id"] == f"{expected['partition']}:{expected['offset']}:dead-letter"
        uid = None if expected["key"] in (None, b"\xff\xfe") else expected["key"].decode()
        assert record["session_uid"] == uid

    # None of it touched the session: only the good configuration and events are in its state.
    def committed() -> Any:
        return KafkaStorage(UID, app.bootstrap, app.topics.prefix)

    wait_until(lambda: "t_b#0" in committed().instances, "t_b#0 committed")
    state = committed()
    assert sorted(state.tasks) == ["t_a", "t_b"]
    assert {name: str(i.status) for name, i in state.instances.items()} == {"t_a#0": "finished", "t_b#0": "scheduled"}
    assert dict(state.latest_kwargs) == {"go": {"n": 1}, "t_a": {"done": True}}
    assert workers.started[0].running
