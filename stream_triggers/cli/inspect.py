"""A session as people (``stream-triggers inspect``) and scripts (``--json``) want to see it.

:func:`session_document` turns a :class:`~stream_triggers.engine.SessionState` into plain
JSON-ready data: every task with its directives, every instance with its status, kwargs,
result, failure (exception type, the traceback's last line, the exception's context),
log level and timestamps, the unresolved tasks, and the latest kwargs of each trigger.
:func:`render_session` prints the same document as plain-text tables (no dependency).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from stream_triggers.engine import SessionState
from stream_triggers.types import FAILURE_STATUSES, SESSION_FINALIZED, TaskInstance

__all__ = ["session_document", "render_session"]

_SHOWN_META = frozenset(
    {
        TaskInstance.META_ACTUAL_KWARGS,
        TaskInstance.META_COOLDOWN,
        TaskInstance.META_DEPTH,
        TaskInstance.META_EXCEPTION_CONTEXT,
        TaskInstance.META_EXCEPTION_INFO,
        TaskInstance.META_EXCEPTION_TYPE,
        TaskInstance.META_LOG_LEVEL,
        TaskInstance.META_LOGS_RESOLVED,
        TaskInstance.META_PARENT,
        TaskInstance.META_RESULT,
        TaskInstance.META_TIMESTAMPS,
    }
)
"""Metadata keys the document shows as fields of their own; the rest go under ``metadata``."""

_CELL_WIDTH = 64


def session_document(uid: str, state: SessionState) -> dict[str, Any]:
    """The session as JSON-ready data (datetimes as ISO 8601 strings)."""
    unresolved = [config.name for config in state.unresolved_tasks()]
    return {
        "session_uid": uid,
        "finalized": SESSION_FINALIZED in state.latest_kwargs,
        "tasks": {name: _plain(_directives(config.serialize())) for name, config in state.tasks.items()},
        "instances": [_instance(instance) for instance in state.instances.values()],
        "unresolved_tasks": unresolved,
        "unresolved_instances": [instance.name for instance in state.unresolved_instances()],
        "latest_kwargs": _plain(dict(state.latest_kwargs)),
    }


def _directives(directives: Mapping[str, Any]) -> dict[str, Any]:
    """Directives as configured: empty optional ones left out."""
    return {k: v for k, v in directives.items() if v not in (None, [], {}) or k in ("after", "run")}


def _instance(instance: TaskInstance) -> dict[str, Any]:
    metadata = instance.metadata
    level = instance.log_level
    document: dict[str, Any] = {
        "name": instance.name,
        "task": instance.config.name,
        "status": str(instance.status),
        "kwargs": _plain(instance.kwargs),
        "result": _plain(metadata.get(TaskInstance.META_RESULT)),
        "failure": _failure(metadata),
        "log_level": level,
        "log_level_name": logging.getLevelName(level),
        "logs_resolved": instance.logs_resolved,
        "depth": instance.depth,
        "parent": metadata.get(TaskInstance.META_PARENT),
        "cooldown": metadata.get(TaskInstance.META_COOLDOWN),
        "abandon_state": sorted(instance.abandon_state),
        "waiting_for": sorted(instance.config.after.difference(instance.kwargs)) if instance.can_schedule else [],
        "timestamps": _plain(metadata.get(TaskInstance.META_TIMESTAMPS) or {}),
    }
    actual = metadata.get(TaskInstance.META_ACTUAL_KWARGS)
    if actual is not None and actual != instance.kwargs:
        document["actual_kwargs"] = _plain(actual)  # withParams merged in
    others = {k: v for k, v in metadata.items() if k not in _SHOWN_META}
    if others:
        document["metadata"] = _plain(others)
    return document


def _failure(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = metadata.get(TaskInstance.META_EXCEPTION_TYPE)
    info = metadata.get(TaskInstance.META_EXCEPTION_INFO)
    if kind is None and info is None:
        return None
    lines = [line for line in str(info or "").splitlines() if line.strip()]
    return {
        "type": kind,
        "message": lines[-1].strip() if lines else None,
        "context": _plain(metadata.get(TaskInstance.META_EXCEPTION_CONTEXT) or {}),
        "traceback": info,
    }


def _plain(value: Any) -> Any:
    """JSON-ready: mappings and sequences recursed, dates as ISO strings, the rest as is or str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=str)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- plain text ----------------------------------------------------------------------------------


def render_session(uid: str, state: SessionState) -> str:
    """The session as readable plain-text tables."""
    document = session_document(uid, state)
    instances = document["instances"]
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance["status"]] = counts.get(instance["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no instances"
    out = [
        f"session {uid}: {len(document['tasks'])} task(s), {summary}"
        + ("; finalized" if document["finalized"] else ""),
        "",
        "tasks",
    ]
    task_rows = [
        [
            name,
            ", ".join(d["after"]) or "-",
            d.get("andEvery") or "-",
            ", ".join(d.get("unless") or []) or "-",
            d["run"] + (f" (using {d['using']})" if d.get("using") else ""),
        ]
        for name, d in document["tasks"].items()
    ]
    out += _table(["TASK", "AFTER", "AND EVERY", "UNLESS", "RUN"], task_rows) if task_rows else ["  (none)"]
    out += ["", "instances"]
    instance_rows = [
        [
            i["name"],
            i["status"],
            i["log_level_name"] if i["log_level"] else "-",
            _short_time(i["timestamps"].get(TaskInstance.TIMESTAMP_LAST_MODIFIED)),
            _outcome(i),
        ]
        for i in instances
    ]
    headers = ["INSTANCE", "STATUS", "LOG", "LAST MODIFIED", "RESULT / FAILURE"]
    out += _table(headers, instance_rows) if instance_rows else ["  (none)"]
    failures = [i for i in instances if i["failure"] and i["failure"]["context"]]
    for i in failures:
        out.append(f"  {i['name']} exception context: {_json(i['failure']['context'])}")
    out += ["", "unresolved tasks: " + (", ".join(document["unresolved_tasks"]) or "none")]
    out += ["", "latest trigger kwargs"]
    kwargs_rows = [[trigger, _json(kwargs)] for trigger, kwargs in document["latest_kwargs"].items()]
    out += _table(["TRIGGER", "KWARGS"], kwargs_rows) if kwargs_rows else ["  (none fired)"]
    return "\n".join(out)


def _outcome(instance: Mapping[str, Any]) -> str:
    failure = instance["failure"]
    if failure and instance["status"] in FAILURE_STATUSES:
        text = failure["message"] or failure["type"] or "failed"
        if instance["status"] == "skipped" and instance["result"] is not None:
            text = f"{text}; result {_json(instance['result'])}"
        return text
    if instance["result"] is not None:
        return _json(instance["result"])
    if instance["waiting_for"]:
        return "waiting for " + ", ".join(instance["waiting_for"])
    return ""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), sort_keys=False, default=str)


def _short_time(iso: str | None) -> str:
    """``2024-05-01T12:00:00.123456`` -> ``2024-05-01 12:00:00.123``."""
    if not iso:
        return "-"
    text = iso.replace("T", " ")
    head, dot, fraction = text.partition(".")
    return head + (dot + fraction[:3] if dot else "")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, each cell cut at a readable width."""
    cells = [[_cut(str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return ("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()

    return [line(headers)] + [line(row) for row in cells]


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"
