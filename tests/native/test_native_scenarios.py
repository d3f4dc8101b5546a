"""Hand-picked sessions for the rules random generation reaches rarely, through both engines.

Each scenario is a list of ``(record type, fields)``; ``run_both`` compares outcomes,
outputs and states after every input (see test_native_differential).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record

from .test_native_differential import UID, run_both

pytest.importorskip("stream_triggers_native")


def configure(configuration: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "ConfigurationUpdated", {"configuration_json": json.dumps(configuration)}


def fire(trigger: str, kwargs: Any = None) -> tuple[str, dict[str, Any]]:
    return "TriggerFired", {"trigger": trigger, "kwargs_json": json.dumps(kwargs or {})}


def report(instance: str, status: str, metadata: Any = None, result: Any = None) -> tuple[str, dict[str, Any]]:
    return "InstanceStatusReported", {
        "instance": instance,
        "status": status,
        "metadata_json": json.dumps(metadata or {}),
        "result_json": None if result is None else json.dumps(result),
    }


def set_status(instance: str, status: str, **more: Any) -> tuple[str, dict[str, Any]]:
    return "InstanceStatusUpdateRequested", {"instance": instance, "status": status, **more}


def metadata(instance: str, values: Any) -> tuple[str, dict[str, Any]]:
    return "InstanceMetadataUpdateRequested", {"instance": instance, "metadata_json": json.dumps(values)}


SCENARIOS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "reopened instances settle in the order they re-joined": [
        configure({"t": {"after": ["a"], "andEvery": "e", "run": "x"}}),
        fire("a"),
        fire("e"),
        fire("e"),
        set_status("t#1", "finished"),
        set_status("t#0", "finished"),
        set_status("t#1", "unstarted"),
        set_status("t#0", "unstarted"),
        fire("e"),
    ],
    "a new configuration makes a waiting instance due at the next fire": [
        configure({"t": {"after": ["a", "b"], "run": "x"}, "u": {"after": ["c"], "run": "y"}}),
        fire("a", {"k": 1}),
        configure({"t": {"after": ["a"], "run": "x2", "using": "noop"}}),
        fire("c"),
        fire("a", {"k": 2}),
    ],
    "withParams merge under kwargs, nested maps merged": [
        configure({"t": {"after": ["a"], "run": "x", "withParams": {"a": {"m": 1, "n": {"p": 1}}, "z": {"q": 2}}}}),
        fire("a", {"n": {"r": 3}, "s": [1.5, 1e16, -0.0, 2**70]}),
    ],
    "unless before after abandons, andEvery with unless": [
        configure(
            {
                "t": {"after": ["a"], "unless": ["stop"], "run": "x"},
                "e": {"after": [], "andEvery": "tick", "unless": ["stop"], "run": "y"},
            }
        ),
        fire("stop"),
        fire("a"),
        fire("tick"),
    ],
    "finalizing waits for tasks after sessionFinalized": [
        configure(
            {
                "t": {"after": ["a"], "run": "x", "using": "noop"},
                "cleanup": {"after": ["sessionFinalized"], "run": "y", "using": "noop"},
            }
        ),
        fire("a"),
        fire("a"),
    ],
    "metadata outputs: non-ASCII, non-finite floats, big ints": [
        configure({"t": {"after": ["a"], "run": "x"}}),
        fire("a"),
        report("t#0", "running", {"note": "é \u2603 \U0001f600", "big": 2**80}),
        (
            "InstanceStatusReported",
            {"instance": "t#0", "status": "failed", "metadata_json": '{"x": NaN, "y": -Infinity}', "result_json": None},
        ),
        ("ReplayRequested", {"instance": "t#0", "replacement_kwargs_json": '{"a": {"v": 1E400}}'}),
    ],
    "cooldowns round like timedelta and retries deepen": [
        configure({"t": {"after": ["a"], "run": "x"}}),
        fire("a"),
        ("RetryRequested", {"instance": "t#0", "metadata_json": "{}", "cooldown_s": 0.0000005}),
        ("RetryRequested", {"instance": "t#1", "metadata_json": "{}", "cooldown_s": 2.0000015}),
        ("RetryRequested", {"instance": "t#2", "metadata_json": "{}", "cooldown_s": -1.25}),
        ("SkipRequested", {"instance": "t#3", "cascade": True, "result_json": '{"r": 1}'}),
        report("t#3", "finished"),
    ],
    "status updates with cascades and odd metadata": [
        configure({"t": {"after": ["a"], "run": "x"}, "n": {"after": ["t"], "run": "y", "using": "noop"}}),
        fire("a"),
        set_status("t#0", "finished", metadata_json="", cascade=True, cascade_kwargs_json='{"c": true}'),
        set_status("t#0", "finished", metadata_json='{"timestamps": null}', cascade=True),
        metadata("t#0", {"timestamps": {"created": "yesterday"}, "logLevel": 40}),
        ("LogsResolved", {"instance": "t#0"}),
        set_status("n#0", "bogus"),
    ],
    "user depth and cooldown the core does not model are handed back": [
        configure({"t": {"after": ["a"], "run": "x"}}),
        fire("a"),
        metadata("t#0", {"depth": 2, "cooldown": 3}),
        ("RetryRequested", {"instance": "t#0", "metadata_json": "{}"}),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("manager", ["default", "finalizing"])
def test_scenario(name: str, manager: str) -> None:
    at = 1_700_000_000_000_000
    records = []
    for n, (type_name, fields) in enumerate(SCENARIOS[name]):
        value = codec.encode(type_name, event_record(type_name, UID, f"e{n}", at + n * 1_000_001, **fields))
        records.append((n, value))
    run_both(manager, records)
