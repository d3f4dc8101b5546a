"""Differential tests: generated sessions through the Python engine and the native core.

Hypothesis builds sessions - configurations with after / andEvery / unless / withParams /
using (``noop`` finishes inline, anything else goes to task-runs), fires, status reports,
retries, replays, skips, status and metadata updates, logs resolved, re-deliveries and bad
payloads - and feeds each record to both engines.  After every input the outcome, the
output records and the session state must be the same.

Output records and state bytes are compared byte for byte (the Python engine iterates a
new instance's triggers in sorted order, as the core does, so no hash seed shows).  The
state bytes are those the worker writes: the core's state exported
(``stream/native_engine.state_from_parts``) and encoded by ``events/state_format``.

Inputs the core hands back (``("python", why)``: an integer beyond 64 bits, a payload
nested deeper than the core follows) are applied by the Python engine as a native worker
does, and the session is loaded back into the core from the Python state
(``state_parts``), which the following inputs then exercise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record
from stream_triggers.events.state_format import encode_state
from stream_triggers.stream.native_engine import state_from_parts, state_parts

from .reference import TOPICS, PythonSide, comparable, native_state

native = pytest.importorskip("stream_triggers_native")

UID = "s1"
NOW = 1_800_000_000_000_000
TASKS = ["a", "b", "c"]
TRIGGERS = ["t1", "t2", "t3", "a", "b", "c", "sessionFinalized"]
INSTANCES = ["a#0", "b#0", "c#0", "a#1", "b#1", "a#2", "zz"]
REPORTED = ["running", "finished", "failed", "skipped"]
STATUSES = ["unstarted", "scheduled", "running", "finished", "failed", "replayed", "skipped", "abandoned"]

keys = st.sampled_from(["k", "x", "é", "model", "$"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='ab"\\\n\u00e9\u2603\U0001f600', max_size=4)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=6
)
mappings = st.dictionaries(keys, values, max_size=3)
triggers = st.sampled_from(TRIGGERS)


def listenable(task: str) -> st.SearchStrategy[str]:
    """Triggers ``task`` may wait for: never itself or a later task, so cascades end."""
    return st.sampled_from([t for t in TRIGGERS if t not in TASKS or t < task])


@st.composite
def task_config(draw: st.DrawFn, task: str) -> dict[str, Any]:
    triggers = listenable(task)
    after = draw(st.lists(triggers, min_size=draw(st.sampled_from([0, 1, 1, 1, 1])), max_size=3))
    config: dict[str, Any] = {"after": after, "run": draw(st.sampled_from(["x", "y"]))}
    if draw(st.integers(0, 2)) == 0:
        config["andEvery"] = draw(triggers)
    if draw(st.integers(0, 3)) == 0:
        config["unless"] = draw(st.lists(triggers, min_size=1, max_size=2))
    if draw(st.integers(0, 3)) == 0:
        config["withParams"] = draw(st.dictionaries(triggers, mappings, max_size=2))
    using = draw(st.sampled_from([None, "noop", "noop", "kafka", "threading"]))
    if using is not None:
        config["using"] = using
    if draw(st.integers(0, 5)) == 0:
        config["extra"] = draw(values)
    return config


configurations = st.lists(st.sampled_from(TASKS), min_size=1, max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: task_config(name) for name in names})
)
optional_json = st.none() | mappings.map(json.dumps)


def record(type_name: str, **fields: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.tuples(st.just(type_name), st.fixed_dictionaries(fields))


def inputs(fired: st.SearchStrategy[str], instances: st.SearchStrategy[str]) -> st.SearchStrategy[tuple]:
    """Any events record, naming mostly the triggers and instances the session has."""
    return st.one_of(
        record("ConfigurationUpdated", configuration_json=configurations.map(json.dumps)),
        record("TriggerFired", trigger=fired, kwargs_json=mappings.map(json.dumps)),
        record("TriggerFired", trigger=fired, kwargs_json=mappings.map(json.dumps)),
        record("TriggerFired", trigger=fired, kwargs_json=mappings.map(json.dumps)),
        record(
            "InstanceStatusReported",
            instance=instances,
            status=st.sampled_from(REPORTED),
            metadata_json=mappings.map(json.dumps),
            result_json=optional_json,
        ),
        record(
            "InstanceStatusReported",
            instance=instances,
            status=st.sampled_from(REPORTED),
            metadata_json=mappings.map(json.dumps),
            result_json=optional_json,
        ),
        record(
            "RetryRequested",
            instance=instances,
            metadata_json=mappings.map(json.dumps),
            replacement_kwargs_json=optional_json,
            cooldown_s=st.none() | st.just(0.0) | st.floats(-5, 1e6),
        ),
        record("ReplayRequested", instance=instances, replacement_kwargs_json=optional_json),
        record("SkipRequested", instance=instances, cascade=st.booleans(), result_json=optional_json),
        record(
            "InstanceStatusUpdateRequested",
            instance=instances,
            status=st.sampled_from([*STATUSES, "bogus"]),
            metadata_json=mappings.map(json.dumps) | st.just(""),
            cascade=st.booleans(),
            cascade_kwargs_json=optional_json,
        ),
        record("InstanceMetadataUpdateRequested", instance=instances, metadata_json=mappings.map(json.dumps)),
        record("LogsResolved", instance=instances),
        record("TriggerFired", trigger=fired, kwargs_json=st.sampled_from(["[1]", "{", "null", '{"a":NaN}'])),
    )


@st.composite
def sessions(draw: st.DrawFn) -> tuple[str, list[tuple[int, bytes]]]:
    manager = draw(st.sampled_from(["default", "finalizing"]))
    configuration = draw(configurations)
    steps = [("ConfigurationUpdated", {"configuration_json": json.dumps(configuration)})]
    waited = sorted(
        {t for c in configuration.values() for t in [*c["after"], *c.get("unless", ()), c.get("andEvery")] if t}
    )
    fired = st.sampled_from(waited) | triggers if waited else triggers
    names = [f"{task}#{n}" for task in configuration for n in (0, 0, 0, 1, 1, 2)]
    instances = st.sampled_from(names) | st.sampled_from(INSTANCES)
    steps += draw(st.lists(inputs(fired, instances), min_size=5, max_size=30))
    at = 1_700_000_000_000_000
    offset = 0
    records = []
    for n, (type_name, fields) in enumerate(steps):
        at += draw(st.integers(0, 3_000_000))
        value = codec.encode(type_name, event_record(type_name, UID, event_id=f"e{n}", produced_at_us=at, **fields))
        if records and draw(st.integers(0, 12)) == 0:
            offset -= 1  # a re-delivery of the offset before
        records.append((offset, value))
        offset += 1
    return manager, records


def assert_same_outputs(theirs: list[tuple[str, bytes]], ours: list[tuple[str, bytes, str | None]]) -> None:
    assert [topic for topic, *_ in ours] == [topic for topic, _ in theirs]
    for (_, mine, status), (_, reference) in zip(ours, theirs, strict=True):
        assert mine == reference, (codec.decode(mine), codec.decode(reference))
        assert status == codec.decode(mine)[1].get("status"), "the status the worker counts"


HANDED_BACK = ("an integer beyond 64 bits", "JSON nested too deeply")


def run_both(manager: str, records: list[tuple[int, bytes]]) -> None:
    python = PythonSide(manager)
    core = native.NativeCore(manager, TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    for offset, value in records:
        theirs = python.apply(0, offset, UID.encode(), value, NOW)
        [ours] = core.apply_batch(0, [(offset, UID.encode(), value)], NOW)
        state = python.sessions.get(UID)
        if ours[0] == "python":
            assert ours[1] in HANDED_BACK, f"input {codec.decode(value)} handed back to Python: {ours[1]}"
            if state is not None:  # as the worker does: the session comes back from the Python engine
                core.load(UID, state.applied_offset, *state_parts(state.state))
        else:
            assert ours[:2] == theirs[:2], (codec.decode(value), theirs, ours)
            if theirs[0] == "applied":
                assert_same_outputs(theirs[2], ours[2])
            elif theirs[0] == "dead" and not theirs[2].startswith("jsonx: not JSON text"):
                assert ours[2] == theirs[2]
        assert native_state(core, UID) == (None if state is None else comparable(state.state))
        assert core.applied_offset(UID) == (-1 if state is None else state.applied_offset)
        if state is not None:
            expected = encode_state(state.state, 7)
            assert encode_state(state_from_parts(core.export(UID)), 7) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sessions())
def test_sessions_match_the_python_engine(session: tuple[str, list[tuple[int, bytes]]]) -> None:
    run_both(*session)


def encoded(type_name: str, at: int, **fields: Any) -> bytes:
    return codec.encode(type_name, event_record(type_name, UID, event_id="e", produced_at_us=at, **fields))


def test_a_retry_chain_with_cooldown_and_a_noop_cascade() -> None:
    at = 1_700_000_000_000_000
    configuration = {
        "a": {"after": ["t1"], "run": "x", "withParams": {"t1": {"model": "m"}}},
        "b": {"after": ["a"], "run": "y", "using": "noop"},
        "c": {"after": ["b", "t2"], "run": "z", "unless": ["t3"]},
    }
    records = [
        encoded("ConfigurationUpdated", at, configuration_json=json.dumps(configuration)),
        encoded("TriggerFired", at + 1, trigger="t2", kwargs_json='{"v":2}'),
        encoded("TriggerFired", at + 2, trigger="t1", kwargs_json='{"k":"é"}'),
        encoded("InstanceStatusReported", at + 3, instance="a#0", status="running", metadata_json="{}"),
        encoded("RetryRequested", at + 4, instance="a#0", metadata_json='{"logLevel":40}', cooldown_s=2.5),
        encoded("InstanceStatusReported", at + 5, instance="a#1", status="failed", metadata_json='{"e":1}'),
        encoded("ReplayRequested", at + 6, instance="a#1", replacement_kwargs_json='{"t1":{"k":0}}'),
        encoded(
            "InstanceStatusReported",
            at + 7,
            instance="a#2",
            status="finished",
            metadata_json="{}",
            result_json='{"r":[1,2]}',
        ),
    ]
    for manager in ("default", "finalizing"):
        run_both(manager, list(enumerate(records)))


def test_one_batch_of_interleaved_sessions() -> None:
    """One call per batch: several sessions, their offsets interleaved, re-deliveries skipped."""
    at = 1_700_000_000_000_000
    configuration = json.dumps({"t": {"after": ["a", "b"], "run": "x"}, "n": {"after": ["t"], "run": "y"}})
    batch = []
    for n, uid in enumerate(["s1", "s2", "s3"] * 2):
        fields = {"configuration_json": configuration} if n < 3 else {"trigger": "a", "kwargs_json": "{}"}
        kind = "ConfigurationUpdated" if n < 3 else "TriggerFired"
        batch.append((n, uid.encode(), codec.encode(kind, event_record(kind, uid, f"e{n}", at, **fields))))
    for n, uid in enumerate(["s1", "s2"], start=len(batch)):
        batch.append(
            (
                n,
                uid.encode(),
                codec.encode(
                    "TriggerFired", event_record("TriggerFired", uid, f"e{n}", at, trigger="b", kwargs_json='{"v":1}')
                ),
            )
        )
    batch.append(batch[-1])  # a re-delivery within the batch
    python = PythonSide()
    core = native.NativeCore("default", TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    theirs = [python.apply(3, offset, key, value, NOW) for offset, key, value in batch]
    ours = core.apply_batch(3, batch, NOW)
    assert [o[:2] for o in ours] == [t[:2] for t in theirs]
    assert ours[-1][0] == "skipped"
    for mine, reference in zip(ours, theirs, strict=True):
        if reference[0] == "applied":
            assert_same_outputs(reference[2], mine[2])
    for uid in ("s1", "s2", "s3"):
        assert native_state(core, uid) == comparable(python.sessions[uid].state)


def test_what_the_core_does_not_model_goes_back_to_python_unchanged() -> None:
    """jsonx-tagged payloads (datetimes, sets...) are the Python engine's: the core says so."""
    at = 1_700_000_000_000_000
    core = native.NativeCore("default", TOPICS.task_runs, TOPICS.task_results, TOPICS.sessions)
    config = encoded("ConfigurationUpdated", at, configuration_json='{"t": {"after": ["a"], "run": "x"}}')
    tagged = encoded("TriggerFired", at, trigger="a", kwargs_json='{"when":{"$st":"date","v":"2024-01-02"}}')
    outcomes = core.apply_batch(0, [(0, UID.encode(), config), (1, UID.encode(), tagged)], NOW)
    assert outcomes[0][0] == "applied"
    assert outcomes[1][0] == "python"
    assert core.applied_offset(UID) == 0
