"""``inspect`` of one session: asking its owner against scanning its changelog partition.

For each partition size (default: 1 and 20,000 sessions in the session's changelog
partition; the topics have one partition so every session lands in it), the script

1. starts the embedded Tansu broker (once) and creates the topics under a fresh prefix;
2. writes the sessions' ``SessionSnapshot`` records straight to the changelog (a
   configured session each: what a worker would have committed);
3. starts a real ``stream-triggers worker`` with ``--metrics-port``; it restores the
   partition and advertises itself in ``PREFIX.owners``;
4. times, for one session, ``KafkaStorage.read_snapshot()`` in process and the
   ``stream-triggers inspect`` command (a new process each time), each with
   ``read_from="owner"`` and ``read_from="changelog"``; prints the medians.

Named ``queries.py``, not ``inspect.py``: a script's folder comes first on
``sys.path``, and a ``bench/inspect.py`` would shadow the standard library's ``inspect``.

    python bench/queries.py                  # 1 and 20,000 sessions, 7 reads each
    python bench/queries.py --sizes 1 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from stream_triggers.engine import EMPTY, ConfigurationUpdated, step
from stream_triggers.events.codec import encode
from stream_triggers.events.state_format import encode_state
from stream_triggers.kafka import clients
from stream_triggers.kafka.owners import read_owners
from stream_triggers.kafka.topics import Topics, create_topics
from stream_triggers.ops.broker import EmbeddedBroker, free_port
from stream_triggers.storages.base import utc_now
from stream_triggers.storages.kafka import KafkaStorage

CONFIG = {f"t_{n}": {"after": ["page", f"step_{n}"], "run": f"task_{n}"} for n in range(5)}
STATE = encode_state(step(EMPTY, ConfigurationUpdated(CONFIG, utc_now()))[0], 0)
TARGET = "target-session"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("stream-triggers")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stream_triggers.cli"]


def preload(bootstrap: str, topics: Topics, sessions: int) -> None:
    """``sessions`` committed sessions in changelog partition 0, the target one in the middle."""
    producer = clients.producer(bootstrap, "bench", linger_ms=20, batch_num_messages=10_000)
    uids = [f"other-{i}" for i in range(sessions - 1)]
    uids.insert(len(uids) // 2, TARGET)
    for offset, uid in enumerate(uids):
        record = {"session_uid": uid, "produced_at": 0, "state": STATE, "input_partition": 0, "applied_offset": offset}
        producer.produce(topics.changelog, encode("SessionSnapshot", record), uid.encode(), 0)
        if offset % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("preload not acknowledged")


def wait_advertised(bootstrap: str, topics: Topics, endpoint: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer = clients.consumer(bootstrap, "bench", enable_partition_eof=True)
        try:
            owner = read_owners(consumer, topics.owners, 10).get(0)
        finally:
            consumer.close()
        if owner is not None and owner.endpoint == endpoint:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not advertise {endpoint} within {timeout} s")


def time_storage(bootstrap: str, topics: Topics, read_from: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        storage = KafkaStorage(TARGET, bootstrap, topics.prefix, read_from=read_from, timeout_s=120)
        started = time.perf_counter()
        snapshot = storage.read_snapshot()
        times.append(time.perf_counter() - started)
        assert snapshot is not None and snapshot["state"] == STATE, storage.read_source
    return statistics.median(times)


def time_inspect(bootstrap: str, topics: Topics, read_from: str, repeat: int) -> float:
    args = [*_cli(), "inspect", "--bootstrap", bootstrap, "--topic-prefix", topics.prefix, TARGET]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run([*args, "--read-from", read_from], capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"inspect failed: {result.stderr}")
    return statistics.median(times)


def measure(broker: EmbeddedBroker, sessions: int, repeat: int, work: Path) -> dict[str, float]:
    topics = Topics(prefix=f"bq{uuid.uuid4().hex[:8]}")
    create_topics(broker.bootstrap, topics, partitions=1)
    preload(broker.bootstrap, topics, sessions)
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    command = [
        *_cli(),
        "worker",
        "--bootstrap",
        broker.bootstrap,
        "--topic-prefix",
        topics.prefix,
        "--group",
        f"bq-{uuid.uuid4().hex[:8]}",
        "--state-dir",
        str(work / topics.prefix),
        "--metrics-port",
        str(port),
        "--advertise",
        endpoint,
    ]
    with open(work / f"{topics.prefix}.log", "wb") as log:
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_advertised(broker.bootstrap, topics, endpoint)
        return {
            "storage_owner_s": time_storage(broker.bootstrap, topics, "owner", repeat),
            "storage_changelog_s": time_storage(broker.bootstrap, topics, "changelog", repeat),
            "inspect_owner_s": time_inspect(broker.bootstrap, topics, "owner", repeat),
            "inspect_changelog_s": time_inspect(broker.bootstrap, topics, "changelog", repeat),
        }
    finally:
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 20_000], help="Sessions in the partition.")
    ap.add_argument("--repeat", type=int, default=7, help="Reads per path and size (the median is shown).")
    args = ap.parse_args(argv)
    print(f"host {socket.gethostname()}, {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'sessions':>9}  {'storage owner':>14}  {'storage scan':>13}  {'inspect owner':>14}  {'inspect scan':>13}")
    with tempfile.TemporaryDirectory() as work, EmbeddedBroker() as broker:
        for sessions in args.sizes:
            figures = measure(broker, sessions, args.repeat, Path(work))
            print(
                f"{sessions:>9,}  {figures['storage_owner_s'] * 1000:>11.1f} ms  "
                f"{figures['storage_changelog_s'] * 1000:>10.1f} ms  "
                f"{figures['inspect_owner_s'] * 1000:>11.1f} ms  {figures['inspect_changelog_s'] * 1000:>10.1f} ms",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
