"""docs/events.md is generated from schemas/ by scripts/gen_event_docs.py and must be current."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from stream_triggers.events import records
from stream_triggers.events.codec import SCHEMA_DIR

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_event_docs", ROOT / "scripts" / "gen_event_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_events_md_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert committed == generator().render(), "docs/events.md is stale: run python scripts/gen_event_docs.py"


def test_every_schema_and_field_is_documented() -> None:
    text = generator().render()
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        assert f"### {schema['name']}\n" in text
        for field in schema["fields"]:
            assert f"| `{field['name']}` |" in text


def test_events_topic_types_are_the_ones_the_worker_applies() -> None:
    on_events = {name for name, topic in generator().TOPIC_OF.items() if topic == "events"}
    assert on_events == set(records._TO_INPUT)


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = generator()
    stale = tmp_path / "events.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(module, "OUTPUT", stale)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
