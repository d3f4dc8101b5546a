"""What the demo shows while it runs and at the end: the output topics as records arrive,
and each session's committed state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from stream_triggers.cli.demo_plan import Plan
from stream_triggers.cli.inspect import session_document
from stream_triggers.events.changelog_reader import ChangelogReader
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics
from stream_triggers.types import TERMINAL_STATUSES

__all__ = ["Watcher", "clock", "committed_states", "print_outcomes"]

_TERMINAL = TERMINAL_STATUSES

Echo = Callable[[str], Any]


class Watcher:
    """Tails task-runs, task-results and sessions; prints what arrives and keeps count."""

    def __init__(self, bootstrap: str, topics: Topics, partitions: int, echo: Echo, started: float) -> None:
        self.echo = echo
        self.started = started
        self.topics = topics
        # Topics are read side by side, so a result may show before its request does.
        self.requested: set[tuple[str, str]] = set()
        self.resolved: set[tuple[str, str]] = set()
        self.finalized: set[str] = set()
        self.finalized_events: list[str] = []
        self._consumer = clients.consumer(bootstrap, "demo-watch", fetch_wait_max_ms=20)  # assigned: never joins
        names = (topics.task_runs, topics.task_results, topics.sessions)
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for name in names for p in range(partitions)])

    @property
    def pending(self) -> set[tuple[str, str]]:
        """Requested runs without a final status yet."""
        return self.requested - self.resolved

    def poll(self, timeout: float) -> bool:
        """Print what arrived within ``timeout`` s; returns whether anything did."""
        messages = self._consumer.consume(500, timeout)
        seen = False
        for message in messages:
            if message.error() is not None:
                continue
            seen = True
            try:
                type_name, record = decode(message.value())
            except CodecError as exc:
                self.echo(f"{clock(self.started)} ?         undecodable record on {message.topic()}: {exc}")
                continue
            self._show(type_name, record)
        return seen

    def _show(self, type_name: str, record: dict[str, Any]) -> None:
        uid = record["session_uid"]
        at = clock(self.started)
        if type_name == "TaskRunRequested":
            self.requested.add((uid, record["instance"]))
            task = record["run"].rpartition(".")[2]
            self.echo(f"{at} run       {uid} {record['instance']} -> {task} (runner {record['runner']})")
        elif type_name == "InstanceStatusChanged":
            status = record["status"]
            if status in _TERMINAL:
                self.resolved.add((uid, record["instance"]))
            metadata = json.loads(record["metadata_json"])
            detail = ""
            if status == "finished":
                detail = _json(metadata.get("result", {}))
            elif status == "failed":
                detail = metadata.get("exceptionType", "")
            self.echo(f"{at} {status:<9} {uid} {record['instance']} {detail}".rstrip())
        elif type_name == "SessionFinalized":
            self.finalized.add(uid)
            self.finalized_events.append(record["event_id"])
            self.echo(f"{at} FINALIZED {uid} (SessionFinalized {record['event_id']})")

    def close(self) -> None:
        self._consumer.close()


def committed_states(bootstrap: str, topics: Topics, partitions: int, uids: set[str]) -> dict[str, Any]:
    """The newest committed state of each session, read from the changelog in one pass."""
    reader = ChangelogReader()  # sessions are stored in parts: the reader assembles them
    consumer = clients.consumer(bootstrap, "demo-read", enable_partition_eof=True)
    try:
        start = dict.fromkeys(range(partitions), OFFSET_BEGINNING)
        for batch in clients.read_to_end(consumer, topics.changelog, start, 10.0):
            for message in batch:
                key = message.key()
                if key is not None and key.split(b"\xff", 1)[0].decode(errors="replace") in uids:
                    reader.add(key, message.value(), message.partition())
    except clients.ReadTimeout:
        pass  # show what was read; the sessions missing are reported as such
    finally:
        consumer.close()
    states = {}
    for uid in uids:
        try:
            found = reader.state(uid)
        except StateFormatError:
            continue
        if found is not None:
            states[uid] = found[0]
    return states


def print_outcomes(plan: Plan, states: dict[str, Any], echo: Echo) -> None:
    for uid in plan.configurations:
        if uid not in states:
            echo(f"  {uid}: no committed state")
            continue
        document = session_document(uid, states[uid])
        flag = "finalized" if document["finalized"] else "NOT finalized"
        echo(f"  {uid} ({flag})")
        for instance in document["instances"]:
            detail = instance["result"] if instance["result"] is not None else ""
            if instance["failure"]:
                detail = instance["failure"]["message"]
            elif instance["waiting_for"]:
                detail = "waiting for " + ", ".join(instance["waiting_for"])
            shown = _json(detail) if isinstance(detail, dict) else detail
            echo(f"    {instance['name']:<28} {instance['status']:<9} {shown}".rstrip())


def clock(started: float) -> str:
    return f"[{time.monotonic() - started:5.1f}s]"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))
