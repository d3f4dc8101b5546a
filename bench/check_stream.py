#!/usr/bin/env python
"""Record-by-record check of the stream worker's outputs against the peer workload.

The reference is the peer's ``gen_workload.expected(sessions, seed, concurrency)``:
``{(session, type, task): cause_seq}`` with ``("task-run", task)`` for each task that
runs and ``("session-finalized", None)`` once per session.  Our worker says the same
thing in its own records:

* ``<prefix>.task-results``: ``InstanceStatusChanged`` with status ``finished`` is a
  ``("task-run", task)`` (any other status is unexpected in this workload);
* ``<prefix>.sessions``: ``SessionFinalized`` is a ``("session-finalized", None)``.

Both topics are read with ``assign()`` from the beginning (no consumer group).  Every
expected record must arrive exactly once with ``int(cause_event_id)`` equal to the
expected ``cause_seq`` (the benchmark uses the input's ``seq`` as its ``event_id``).
A duplicate is a record whose (session, instance, status) - or (session,
sessionFinalized) - was already seen; ``duplicates_new_event_id`` counts those whose
``event_id`` was *not* seen before, i.e. duplicates a subscriber dropping repeated
event ids would still see.

Records missing after the live pass are looked for again in a second pass from the
beginning (on Tansu a tailing reader can skip a batch that is stored); they are
reported as ``missed_by_live_reader_found_on_reread``, not as missing.  There is no
order check between task-results and sessions: they are different topics.

Latency per output (ms) = receive time here - the cause's ``produced_at``
(``cause_produced_at`` in every output); and, to tell the worker's share from the
output's delivery to this reader, until the worker produced it (the output's own
``produced_at``: ``latency_produced_steady_ms``).  Also recorded: silences in the output
stream (gaps between consecutive receive times, overall and per partition) longer
than ``--gap-min-s``, from which the benchmark reads rebalance pauses and failover.

Used as a module (:func:`check`) or a script (``--result FILE`` gets the JSON)::

    python bench/check_stream.py --bootstrap 127.0.0.1:9092 --topic-prefix bench1 \\
        --sessions 2000 --result check.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream_triggers.events.codec import CodecError, decode
from stream_triggers.kafka.topics import Topics

__all__ = ["check", "find_peers_dir", "import_gen_workload", "latency_summary", "percentile"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "peers" / "quix"

Key = tuple[str, str, str | None]


def find_peers_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the peer's ``gen_workload.py`` (``<repo>/../shared/peers/quix``).

    ``given`` may name that folder or its parent (``.../peers``).  Raises
    ``FileNotFoundError`` with a readable message when neither holds the script.
    """
    base = Path(given) if given is not None else DEFAULT_PEERS_DIR
    for candidate in (base, base / "quix"):
        if (candidate / "gen_workload.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"the peer workload generator gen_workload.py is not in {base} (nor in {base / 'quix'}); "
        f"the benchmark needs ../shared/peers/quix beside the repository, or --peers-dir DIR"
    )


def import_gen_workload(peers_dir: Path) -> Any:
    """Import the peer's ``gen_workload`` module from ``peers_dir``."""
    if str(peers_dir) not in sys.path:
        sys.path.insert(0, str(peers_dir))
    import gen_workload  # the peer's script, found through the path set above

    return gen_workload


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, as the peer's checker computes it."""
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(p / 100.0 * (len(sorted_values) - 1))))
    return round(sorted_values[i], 2)


def latency_summary(values: list[float]) -> dict[str, Any] | None:
    values = sorted(values)
    if not values:
        return None
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": round(values[-1], 2),
        "mean": round(sum(values) / len(values), 2),
    }


def _output_key(type_name: str, record: dict[str, Any]) -> tuple[Key | None, tuple[Any, ...]]:
    """(expected-records key or None if not a workload output, duplicate key)."""
    uid = record.get("session_uid")
    if type_name == "InstanceStatusChanged":
        dup_key = (uid, record.get("instance"), record.get("status"))
        if record.get("status") == "finished":
            return (uid, "task-run", record.get("task")), dup_key
        return None, dup_key
    if type_name == "SessionFinalized":
        return (uid, "session-finalized", None), (uid, "sessionFinalized")
    return None, (uid, type_name, record.get("event_id"))


def _cause_seq(record: dict[str, Any]) -> int | None:
    try:
        return int(record.get("cause_event_id"))
    except (TypeError, ValueError):
        return None


def check(
    bootstrap: str,
    topics: Topics,
    expected: dict[Key, int],
    *,
    timeout: float = 900.0,
    idle: float = 30.0,
    grace: float = 2.0,
    fetch_wait_ms: int = 10,
    latency_skip_s: float = 5.0,
    gap_min_s: float = 0.2,
    on_ready: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Read ``task-results`` and ``sessions`` from the beginning and compare with ``expected``.

    Returns when every expected record arrived (plus ``grace`` s for duplicates), after
    ``idle`` s without records (once one arrived), at ``timeout``, or when ``stop`` is set.
    """
    names = [topics.task_results, topics.sessions]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "stream-bench-checker",  # never joined: assign() only
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
        }
    )
    deadline = time.time() + timeout
    assignment: list[TopicPartition] = []
    while not assignment:
        metadata = consumer.list_topics(timeout=10)
        found = [metadata.topics.get(name) for name in names]
        if all(t is not None and t.error is None and t.partitions for t in found):
            assignment = [
                TopicPartition(name, p, OFFSET_BEGINNING)
                for name, t in zip(names, found, strict=True)
                for p in sorted(t.partitions)
            ]
            break
        if time.time() > deadline:
            consumer.close()
            return {"error": f"topics {names} not found on {bootstrap}"}
        time.sleep(0.2)
    consumer.assign(assignment)
    if on_ready is not None:
        on_ready()

    total = len(expected)
    seen_keys: set[tuple[Any, ...]] = set()
    seen_expected: set[Key] = set()
    event_ids: set[str] = set()
    counts: dict[str, int] = {}
    duplicates = duplicates_new_id = undecodable = 0
    unexpected: list[Any] = []
    unexpected_count = 0
    wrong_cause: list[Any] = []
    latencies: list[tuple[float, float]] = []  # (cause time s, latency ms)
    in_worker: list[tuple[float, float]] = []  # (cause time s, ms until the worker produced the output)
    gaps: list[list[float]] = []  # [start (receive time before the silence), length s]
    partition_gaps: dict[int, list[float]] = {}  # partition -> [start, length] of its longest silence
    partition_last: dict[int, float] = {}
    first_recv = last_recv = None
    done_at = None
    received = 0

    def take(message: Any, recv: float) -> None:
        nonlocal received, duplicates, duplicates_new_id, undecodable, unexpected_count
        nonlocal first_recv, last_recv
        if message.error():
            print(f"consumer error: {message.error()}", file=sys.stderr)
            return
        received += 1
        if first_recv is None:
            first_recv = recv
        elif recv - last_recv >= gap_min_s:
            gaps.append([last_recv, recv - last_recv])
        last_recv = recv
        partition = message.partition()
        before = partition_last.get(partition)
        if before is not None and recv - before > partition_gaps.get(partition, (0, 0))[1]:
            partition_gaps[partition] = [before, recv - before]
        partition_last[partition] = recv
        try:
            type_name, record = decode(message.value() or b"")
        except CodecError as exc:
            undecodable += 1
            print(f"undecodable output at {message.topic()}:{partition}:{message.offset()}: {exc}", file=sys.stderr)
            return
        counts[type_name] = counts.get(type_name, 0) + 1
        key, dup_key = _output_key(type_name, record)
        event_id = record.get("event_id")
        if dup_key in seen_keys:
            duplicates += 1
            if event_id not in event_ids:
                duplicates_new_id += 1
            event_ids.add(event_id)
            return
        seen_keys.add(dup_key)
        event_ids.add(event_id)
        if key is None or key not in expected:
            unexpected_count += 1
            if len(unexpected) < 5:
                unexpected.append([type_name, {k: v for k, v in record.items() if not k.endswith("_json")}])
            return
        seen_expected.add(key)
        cause = _cause_seq(record)
        if cause != expected[key]:
            wrong_cause.append([list(key), cause, expected[key]])
        cause_at = record.get("cause_produced_at")
        if isinstance(cause_at, int) and cause_at > 0:
            cause_s = cause_at / 1e6
            latencies.append((cause_s, (recv - cause_s) * 1000.0))
            produced_at = record.get("produced_at")
            if isinstance(produced_at, int) and produced_at > 0:
                in_worker.append((cause_s, (produced_at - cause_at) / 1000.0))

    while True:
        now = time.time()
        if now > deadline or (stop is not None and stop.is_set()):
            break
        if done_at is not None and now - done_at > grace:
            break
        if last_recv is not None and now - last_recv > idle:
            break
        # Take what is already fetched without waiting; otherwise wait for one record.
        # (consume(n, timeout) would hold records back until n arrive, adding latency.)
        messages = consumer.consume(10_000, 0)
        if not messages:
            message = consumer.poll(0.1)
            messages = [message] if message is not None else []
        recv = time.time()
        for message in messages:
            take(message, recv)
        if done_at is None and len(seen_expected) == total:
            done_at = time.time()
    consumer.close()

    missing = [k for k in expected if k not in seen_expected]
    missed_live = 0
    if missing:
        want = set(missing)
        again = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "stream-bench-checker",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
                "allow.auto.create.topics": False,
            }
        )
        again.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in assignment])
        quiet_since = time.time()
        while want and time.time() - quiet_since < 5:
            message = again.poll(0.2)
            if message is None or message.error():
                continue
            quiet_since = time.time()
            try:
                type_name, record = decode(message.value() or b"")
            except CodecError:
                continue
            key, _ = _output_key(type_name, record)
            if key in want:
                want.discard(key)
                missed_live += 1
                if _cause_seq(record) != expected[key]:
                    wrong_cause.append([list(key), _cause_seq(record), expected[key]])
        again.close()
        missing = [k for k in missing if k in want]

    steady = produced_steady = None
    if latencies and latency_skip_s:
        t0 = min(c for c, _ in latencies)
        steady = latency_summary([lat for c, lat in latencies if c >= t0 + latency_skip_s])
        produced_steady = latency_summary([lat for c, lat in in_worker if c >= t0 + latency_skip_s])
    expected_counts: dict[str, int] = {}
    for _, typ, _ in expected:
        expected_counts[typ] = expected_counts.get(typ, 0) + 1
    span = (last_recv - first_recv) if first_recv is not None and last_recv is not None else None
    largest = max(gaps, key=lambda g: g[1]) if gaps else None
    complete = not missing and not wrong_cause and unexpected_count == 0 and undecodable == 0
    return {
        "expected_total": total,
        "expected_counts": expected_counts,
        "received_total": received,
        "received_counts": counts,
        "correct": complete and duplicates == 0,
        "complete": complete,
        "missing": len(missing),
        "missing_examples": [list(k) for k in missing[:3]],
        "missed_by_live_reader_found_on_reread": missed_live,
        "duplicates": duplicates,
        "duplicates_new_event_id": duplicates_new_id,
        "unexpected": unexpected_count,
        "unexpected_examples": unexpected,
        "undecodable": undecodable,
        "wrong_cause_seq": len(wrong_cause),
        "wrong_cause_examples": wrong_cause[:3],
        "first_recv": first_recv,
        "last_recv": last_recv,
        "recv_span_s": round(span, 3) if span else None,
        "out_rate_rec_s": round(received / span, 1) if span else None,
        "max_recv_gap_s": round(largest[1], 3) if largest else 0.0,
        "max_recv_gap_at": largest[0] if largest else None,
        "gaps": gaps,
        "partition_gaps": {str(p): g for p, g in sorted(partition_gaps.items())},
        "latency_recv_ms": latency_summary([lat for _, lat in latencies]),
        "latency_recv_steady_ms": steady,
        "latency_produced_steady_ms": produced_steady,
        "fetch_wait_ms": fetch_wait_ms,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic-prefix", default="triggers")
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--concurrency", type=int, default=1_000)
    ap.add_argument("--peers-dir", default=None, help=f"folder of gen_workload.py [default: {DEFAULT_PEERS_DIR}]")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--idle", type=float, default=30.0, help="stop after N s without records (once one arrived)")
    ap.add_argument("--grace", type=float, default=2.0, help="keep reading N s after the last expected record")
    ap.add_argument("--fetch-wait-ms", type=int, default=10)
    ap.add_argument("--latency-skip-s", type=float, default=5.0, help="warm-up excluded from the steady latency")
    ap.add_argument("--gap-min-s", type=float, default=0.2)
    ap.add_argument("--ready-file", help="create this file once both topics are assigned")
    ap.add_argument("--result", help="write the JSON result here (else stdout)")
    a = ap.parse_args(argv)
    try:
        peers = find_peers_dir(a.peers_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _, expected = import_gen_workload(peers).expected(a.sessions, a.seed, a.concurrency)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready() -> None:
        if a.ready_file:
            Path(a.ready_file).touch()

    result = check(
        a.bootstrap,
        Topics(a.topic_prefix),
        expected,
        timeout=a.timeout,
        idle=a.idle,
        grace=a.grace,
        fetch_wait_ms=a.fetch_wait_ms,
        latency_skip_s=a.latency_skip_s,
        gap_min_s=a.gap_min_s,
        on_ready=ready,
        stop=stop,
    )
    text = json.dumps(result)
    if a.result:
        Path(a.result).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0 if result.get("correct") else 1


if __name__ == "__main__":
    sys.exit(main())
