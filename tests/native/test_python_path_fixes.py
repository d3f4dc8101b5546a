"""Three places where the Python path disagreed with the native core (and with itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stream_triggers.engine import InvalidPayload
from stream_triggers.engine.validation import build_task_configs
from stream_triggers.events import codec
from stream_triggers.events.envelope import event_record
from stream_triggers.events.records import input_from_record

from .reference import PythonSide


@pytest.mark.parametrize("produced_at", [2**62, -(2**62), 253_402_300_800_000_000])
def test_a_produced_at_outside_the_years_1_to_9999_is_a_dead_letter(produced_at: int) -> None:
    record = event_record("TriggerFired", "s", "e", produced_at, trigger="a", kwargs_json="{}")
    with pytest.raises(InvalidPayload, match="outside the years 1-9999"):
        input_from_record("TriggerFired", record)
    outcome = PythonSide().apply(0, 0, b"s", codec.encode("TriggerFired", record), 0)
    assert outcome == ("dead", "invalid_payload", f"produced_at {produced_at} is outside the years 1-9999")


NEW_INSTANCE_KWARGS = """
from stream_triggers.manager import TriggerManager
from stream_triggers.storages.memory import MemoryStorage
manager = TriggerManager(MemoryStorage("s"))
for trigger in "hgfedcb":
    manager.fire(trigger, {"from": trigger})
manager.update_configuration({"t": {"after": list("abcdefgh") + ["z"], "run": "x"}})
manager.fire("a")  # creates t#0, which inherits the triggers fired before
print(list(manager.storage.state.instances["t#0"].kwargs))
"""


def test_the_kwargs_of_a_new_instance_do_not_depend_on_the_hash_seed() -> None:
    seen = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", NEW_INSTANCE_KWARGS], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seen.add(done.stdout.strip())
    assert seen == {str(list("bcdefgha"))}


def test_task_order_does_not_come_from_another_sessions_equal_configuration() -> None:
    first = {"b": {"after": ["go"], "run": "x"}, "a": {"after": ["go"], "run": "x"}}
    second = dict(reversed(list(first.items())))
    assert first == second
    assert list(build_task_configs(first)) == ["b", "a"]
    assert list(build_task_configs(second)) == ["a", "b"]
    # Through the worker: the session configured second settles its tasks in its own order.
    side = PythonSide()
    for n, (uid, configuration) in enumerate([("s1", first), ("s2", second)]):
        value = codec.encode(
            "ConfigurationUpdated",
            event_record("ConfigurationUpdated", uid, f"c{n}", 0, configuration_json=json.dumps(configuration)),
        )
        side.apply(0, 2 * n, uid.encode(), value, 0)
        fire = codec.encode(
            "TriggerFired", event_record("TriggerFired", uid, f"f{n}", 0, trigger="go", kwargs_json="{}")
        )
        _, _, outputs = side.apply(0, 2 * n + 1, uid.encode(), fire, 0)
        assert [codec.decode(v)[1]["task"] for _, v in outputs] == list(configuration)
