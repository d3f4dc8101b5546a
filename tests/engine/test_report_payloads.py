"""The payload rules meet what a task reports: the same reports pass in process, on
replay and from Kafka; the levels a report wraps around a payload do not count; a task's
result is checked by the same rules, with messages that never quote a whole value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from stream_triggers.engine import (
    EMPTY,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    ConfigurationUpdated,
    Input,
    InvalidPayload,
    MetadataUpdated,
    SessionState,
    StatusReported,
    TriggerFired,
    checked_input,
    checked_instance,
    step,
)
from stream_triggers.events.codec import decode, encode
from stream_triggers.events.envelope import event_record
from stream_triggers.events.records import input_from_record, record_from_input
from stream_triggers.failures import jsonable_context
from stream_triggers.task import (
    Changed,
    Failed,
    Finished,
    TaskContext,
    TriggerTask,
    execute,
    outcome_input,
    running_input,
)
from stream_triggers.types import Status, TaskInstance

AT = datetime(2024, 5, 1, 12, 0)
CONFIGURATION = {"t": {"after": ["go"], "run": "tests.engine.Reported"}}


def nested(depth: int) -> dict[str, Any]:
    """A dict ``depth`` levels deep (the dict itself is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def through_kafka(event: Input) -> Input:
    """``event`` as the stream worker gets it: encoded, decoded, translated back."""
    type_name, fields = record_from_input(event)
    decoded_type, record = decode(encode(type_name, event_record(type_name, "s-1", **fields)))
    return input_from_record(decoded_type, record)


def fired(kwargs: dict[str, Any] | None = None) -> SessionState:
    state, _ = step(EMPTY, ConfigurationUpdated(CONFIGURATION, AT))
    state, _ = step(state, TriggerFired("go", kwargs or {}, AT))
    return state


def running(state: SessionState) -> SessionState:
    instance = state.instances["t#0"]
    state, _ = step(state, running_input("t#0", instance.kwargs, AT))
    return state


# -- 1. a report's echoed result weighs once, however it was decoded --------------------


def test_a_result_over_half_the_limit_is_accepted_in_process_and_from_kafka_alike() -> None:
    result = {"s": "x" * (300 * 1024)}  # over half the limit: weighed twice it would not fit
    report = outcome_input("t#0", Finished(result, 0), AT)
    decoded = through_kafka(report)
    assert decoded.metadata[TaskInstance.META_RESULT] is not decoded.result  # type: ignore[union-attr]
    for event in (report, decoded):
        state, _ = step(running(fired()), event)
        assert state.instances["t#0"].status == Status.FINISHED
        assert state.instances["t#0"].metadata[TaskInstance.META_RESULT] == result


def test_an_echo_that_differs_from_the_result_is_weighed_as_well() -> None:
    half = {"s": "x" * (MAX_PAYLOAD_BYTES // 2)}
    other = {"s": "y" * (MAX_PAYLOAD_BYTES // 2)}
    report = StatusReported("t#0", Status.FINISHED, {TaskInstance.META_RESULT: other}, AT, half)
    with pytest.raises(InvalidPayload, match="weigh"):
        checked_input(report)


# -- 2. depth counts in the user's payload, not in the report around it ------------------


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH - 1, MAX_PAYLOAD_DEPTH])
def test_kwargs_that_fit_still_fit_once_an_instance_and_its_reports_wrap_them(depth: int) -> None:
    state = running(fired(nested(depth)))
    instance = state.instances["t#0"]
    assert instance.metadata[TaskInstance.META_ACTUAL_KWARGS] == {"go": nested(depth)}
    assert checked_instance(instance) is instance
    report = running_input("t#0", fired(nested(depth)).instances["t#0"].kwargs, AT)
    state, _ = step(fired(nested(depth)), through_kafka(report))
    assert state.instances["t#0"].metadata[TaskInstance.META_ACTUAL_KWARGS] == {"go": nested(depth)}


def test_kwargs_one_level_too_deep_are_refused_when_fired() -> None:
    with pytest.raises(InvalidPayload, match=f"more than {MAX_PAYLOAD_DEPTH} deep"):
        fired(nested(MAX_PAYLOAD_DEPTH + 1))


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH - 1, MAX_PAYLOAD_DEPTH])
def test_a_result_that_fits_still_fits_in_its_report_and_its_instance(depth: int) -> None:
    outcome = execute(_returning(nested(depth)), _context())
    assert isinstance(outcome, Finished)
    report = outcome_input("t#0", outcome, AT)
    for event in (report, through_kafka(report)):
        state, _ = step(running(fired()), event)
        instance = state.instances["t#0"]
        assert instance.metadata[TaskInstance.META_RESULT] == nested(depth)
        assert checked_instance(instance) is instance


def test_a_result_one_level_too_deep_fails_the_task_naming_the_path() -> None:
    outcome = execute(_returning(nested(MAX_PAYLOAD_DEPTH + 1)), _context())
    assert isinstance(outcome, Failed)
    info = outcome.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert f"nests containers more than {MAX_PAYLOAD_DEPTH} deep" in info
    step(running(fired()), outcome_input("t#0", outcome, AT))  # (the failure itself is reportable)


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH - 1, MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_DEPTH + 1])
def test_metadata_is_limited_at_its_own_depth_in_every_report(depth: int) -> None:
    metadata = nested(depth)
    changed = execute(_raising(TriggerTask.skip(metadata)), _context())
    reports = [MetadataUpdated("t#0", metadata, AT)]
    if isinstance(changed, Changed):  # (metadata too deep fails the task instead, see below)
        reports.append(outcome_input("t#0", changed, AT))
    for report in reports:
        if depth > MAX_PAYLOAD_DEPTH:
            with pytest.raises(InvalidPayload, match=f"more than {MAX_PAYLOAD_DEPTH} deep"):
                step(running(fired()), report)
            continue
        state, _ = step(running(fired()), report)
        instance = state.instances["t#0"]
        assert checked_instance(instance) is instance
        step(running(fired()), through_kafka(report))


# -- 3. a task's result is checked by the payload rules, with short messages -------------


def test_a_result_is_checked_by_the_payload_rules() -> None:
    result = {"when": datetime(2024, 5, 1, tzinfo=UTC), "ids": {1, 2}, "pair": (1, "a"), "inf": float("inf")}
    outcome = execute(_returning(result), _context())
    assert outcome == Finished(result, 0)
    assert type(outcome.result["pair"]) is tuple  # type: ignore[union-attr]
    step(running(fired()), outcome_input("t#0", outcome, AT))


def test_a_refused_result_is_named_by_path_and_type_never_quoted_whole() -> None:
    huge = frozenset(range(200_000))
    outcome = execute(_returning({"ids": [huge, object()]}), _context())
    assert isinstance(outcome, Failed)
    info = outcome.metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "Result of tests.engine.Returning['ids'][1] is a builtins.object (<object" in info
    assert len(info) < 4_000


def test_a_result_that_is_no_mapping_is_quoted_clipped() -> None:
    outcome = execute(_returning(list(range(200_000))), _context())  # type: ignore[arg-type]
    assert isinstance(outcome, Failed)
    assert len(repr(outcome.metadata)) < 8_000
    assert outcome.metadata[TaskInstance.META_EXCEPTION_CONTEXT]["actual_result"].startswith("[0, 1, 2")
    assert "returned list" in outcome.metadata[TaskInstance.META_EXCEPTION_INFO]


def test_refusals_never_quote_a_whole_huge_value() -> None:
    with pytest.raises(InvalidPayload) as raised:
        checked_input(MetadataUpdated("t#0", {"n": 10**5000}, AT))
    assert "16610-bit integer" in str(raised.value)
    with pytest.raises(InvalidPayload) as raised:
        checked_input(TriggerFired("go", [0] * 200_000, AT))  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200


# -- helpers --------------------------------------------------------------------------


class Returning(TriggerTask):
    name = "tests.engine.Returning"
    result: Any = None

    def _run(self, context: TaskContext) -> Any:
        return type(self).result


class Raising(TriggerTask):
    name = "tests.engine.Raising"
    error: BaseException = RuntimeError()

    def _run(self, context: TaskContext) -> Any:
        raise type(self).error


def _returning(result: Any) -> type[TriggerTask]:
    return type("Returning", (Returning,), {"name": Returning.name, "result": result})


def _raising(error: BaseException) -> type[TriggerTask]:
    return type("Raising", (Raising,), {"name": Raising.name, "error": error})


def _context() -> TaskContext:
    return TaskContext("t#0", {}, lambda: None)


def test_an_exception_context_quotes_values_clipped() -> None:
    huge = set(range(200_000))
    context = jsonable_context({"ids": huge, "few": {1, 2}})
    assert context["few"] == "{1, 2}"
    assert context["ids"].startswith("{0, 1, 2") and len(context["ids"]) < 2_000
