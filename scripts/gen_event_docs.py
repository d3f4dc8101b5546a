#!/usr/bin/env python3
"""Generate docs/events.md, the topic and event reference, from schemas/*.avsc.

    python scripts/gen_event_docs.py           # rewrite docs/events.md
    python scripts/gen_event_docs.py --check   # exit 1 if docs/events.md is out of date

Everything a record type's section says comes from its schema file (doc strings,
fields, types, defaults) and from the package (topic names and configs, fingerprints,
schema history); the only hand-kept facts are below in TOPIC_OF and PRODUCED_BY, and
the script refuses to run if a schema is missing from them.  tests/test_event_docs.py
fails when the committed file differs from what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "events.md"

if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from stream_triggers.events.codec import HISTORY_DIR, SCHEMA_DIR, schema_fingerprint  # noqa: E402
from stream_triggers.kafka.topics import Topics, topic_configs  # noqa: E402

TOPIC_OF = {
    "ConfigurationUpdated": "events",
    "TriggerFired": "events",
    "InstanceStatusReported": "events",
    "RetryRequested": "events",
    "ReplayRequested": "events",
    "SkipRequested": "events",
    "InstanceStatusUpdateRequested": "events",
    "InstanceMetadataUpdateRequested": "events",
    "LogsResolved": "events",
    "TaskRunRequested": "task-runs",
    "InstanceStatusChanged": "task-results",
    "SessionFinalized": "sessions",
    "SessionPurged": "sessions",
    "SessionSnapshot": "changelog",
    "DeadLetter": "dead-letter",
}
"""Record type -> short name of the topic it is published on."""

PRODUCED_BY = {
    "ConfigurationUpdated": "application (`TriggerManager.update_configuration`, `stream-triggers configure`)",
    "TriggerFired": "application (`fire`, `stream-triggers fire`); a task through `context.manager`",
    "InstanceStatusReported": "task executor (running, finished, failed, skipped)",
    "RetryRequested": "task executor (a task raised `self.retry(...)`)",
    "ReplayRequested": "application (`replay_failed_instance`, `stream-triggers replay`)",
    "SkipRequested": "application (`skip_failed_instance`, `stream-triggers skip`)",
    "InstanceStatusUpdateRequested": "application (`update_instance_status`)",
    "InstanceMetadataUpdateRequested": "application (`update_instance_metadata`)",
    "LogsResolved": "application (`mark_instance_logs_resolved`)",
    "TaskRunRequested": "stream worker (an instance became ready to run)",
    "InstanceStatusChanged": "stream worker",
    "SessionFinalized": "stream worker (the `finalizing` manager fired `sessionFinalized`)",
    "SessionPurged": "stream worker (a session reached `--session-retention` or `--session-ttl`)",
    "SessionSnapshot": "stream worker (once per touched session per batch; tombstones when purged)",
    "DeadLetter": "stream worker (bad `events` input); task executor (bad `task-runs` input)",
}

TOPIC_ROLE = {
    "events": "Input of the stream workers: every operation on a session. Co-partitioned with `changelog`.",
    "task-runs": "Instances ready to run; task executors consume it (one group per runner name).",
    "task-results": "Instance outcomes for subscribers: finished, failed, abandoned, skipped, replayed.",
    "sessions": "Session-level outputs (`sessionFinalized`, and `SessionPurged` when a session is purged).",
    "changelog": "Session state after each batch; workers restore their RocksDB stores from it.",
    "dead-letter": "Input that could not be decoded or applied, with the reason and the original bytes.",
    "owners": "Which worker serves which partition's committed state, and where (one partition; JSON values, "
    "not Avro): see [queries.md](queries.md).",
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def render_type(avro: Any) -> str:
    if isinstance(avro, list):
        return " \\| ".join(render_type(branch) for branch in avro)
    if isinstance(avro, dict):
        kind = avro.get("type")
        if kind == "enum":
            return f"enum `{avro['name']}` ({', '.join(f'`{s}`' for s in avro['symbols'])})"
        if kind == "array":
            return f"array of {render_type(avro['items'])}"
        if kind == "map":
            return f"map of {render_type(avro['values'])}"
        return render_type(kind)
    return f"`{avro}`"


def render_default(field: dict[str, Any]) -> str:
    if "default" not in field:
        return "required"
    return f"`{json.dumps(field['default'])}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_record(schema: dict[str, Any], topics: Topics) -> list[str]:
    name = schema["name"]
    topic = f"{topics.prefix}.{TOPIC_OF[name]}"
    lines = [
        f"### {name}",
        "",
        schema.get("doc", ""),
        "",
        f"* Topic: `{topic}`",
        f"* Produced by: {PRODUCED_BY[name]}",
        f"* Full name: `{schema.get('namespace', '')}.{name}`" if schema.get("namespace") else f"* Full name: `{name}`",
        f"* Fingerprint (CRC-64-AVRO, header bytes 3-10): `{schema_fingerprint(schema).hex()}`",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for field in schema["fields"]:
        lines.append(
            f"| `{field['name']}` | {cell(render_type(field['type']))} | {render_default(field)} "
            f"| {cell(field.get('doc', ''))} |"
        )
    lines.append("")
    return lines


def render() -> str:
    topics = Topics()
    schemas = {path.stem: load(path) for path in sorted(SCHEMA_DIR.glob("*.avsc"))}
    missing = sorted(set(schemas) - set(TOPIC_OF)) + sorted(set(schemas) - set(PRODUCED_BY))
    stale = sorted(set(TOPIC_OF) - set(schemas))
    if missing or stale:
        raise SystemExit(f"scripts/gen_event_docs.py: map every schema to a topic and producer: {missing or stale}")
    short_names = [name.split(".", 1)[1] for name in topics.all]
    lines = [
        "# Topics and events",
        "",
        "<!-- Generated by scripts/gen_event_docs.py from schemas/*.avsc: edit those, then run the script. -->",
        "",
        "Every record on every topic is an Avro record in *single-object encoding*: the two",
        "bytes `C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's",
        "Parsing Canonical Form, then the Avro binary body. A reader holding the `.avsc` files",
        "(`schemas/`, shipped inside the package) can decode any record without a schema",
        "registry: `stream_triggers.events.codec.decode(value)` returns `(type name, record)`.",
        "",
        "* The record key is the session UID (UTF-8) on every topic, so all records of a",
        "  session share a partition of each topic (a dead letter keeps the key of the input",
        "  it carries, which may be missing or not UTF-8).",
        "* Free-form maps (kwargs, results, metadata, configurations) travel as JSON strings",
        "  in the `*_json` fields. Values JSON lacks (datetimes, decimals, sets, ...) are",
        '  tagged objects `{"$st": tag, "v": value}` (see `stream_triggers/events/jsonx.py`).',
        "* Timestamps (`produced_at`, `cause_produced_at`, `not_before`) are microseconds since",
        "  the Unix epoch, UTC.",
        "* `event_id`: worker outputs have deterministic ids, `<partition>:<offset>:<n>` of the",
        "  input that caused them: outputs are delivered at least once, so subscribers drop",
        "  records whose `event_id` they have seen. Dead letters are deterministic too:",
        "  `<partition>:<offset>:dead-letter` from a worker (the `events` position),",
        "  `executor:<partition>:<offset>:dead-letter` from an executor (the `task-runs`",
        "  position). Inputs (an application's operations, an executor's reports) carry a",
        "  random id (32 hex digits); a repeated report changes nothing, whatever its id.",
        "* Schemas evolve only by adding fields with defaults. Older versions are kept in",
        "  `schemas/history/` so records written by older producers stay readable (see",
        "  [Schema history](#schema-history)).",
        "",
        "## Topics",
        "",
        f"Names are `<prefix>.<name>`; the prefix defaults to `{topics.prefix}`"
        " (`--topic-prefix`, `STREAM_TRIGGERS_TOPIC_PREFIX`). `stream-triggers topics create`"
        " creates them all with these configs.",
        "",
        "| topic | configs | record types | role |",
        "|---|---|---|---|",
    ]
    for short, full in zip(short_names, topics.all, strict=True):
        configs = ", ".join(f"`{k}={v}`" for k, v in topic_configs(topics, full).items())
        types = ", ".join(f"[{n}](#{n.lower()})" for n in sorted(schemas) if TOPIC_OF[n] == short)
        lines.append(f"| `{full}` | {configs} | {types} | {TOPIC_ROLE[short]} |")
    lines.append("")
    for short in short_names:
        names = [n for n in sorted(schemas) if TOPIC_OF[n] == short]
        if not names:
            continue  # owners: no event records (kafka/owners.py)
        lines += [f"## On `{topics.prefix}.{short}`", ""]
        for name in names:
            lines += render_record(schemas[name], topics)
    history = sorted(HISTORY_DIR.glob("*.avsc")) if HISTORY_DIR.is_dir() else []
    lines += [
        "## Schema history",
        "",
        "Older writer schemas this version still reads; their records are resolved to the",
        "current schema (new fields take their defaults).",
        "",
        "| file | record | fingerprint | fields |",
        "|---|---|---|---|",
    ]
    for path in history:
        schema = load(path)
        fields = ", ".join(f"`{f['name']}`" for f in schema["fields"])
        lines.append(f"| `{path.name}` | {schema['name']} | `{schema_fingerprint(schema).hex()}` | {fields} |")
    if not history:
        lines.append("| (none) | | | |")
    lines.append("")
    return "\n".join(lines).replace("\n\n\n", "\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/events.md is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/gen_event_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
