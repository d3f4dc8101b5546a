#!/usr/bin/env python
"""What consumers' fetches cost the embedded broker (Tansu) as a topic's log grows.

A benchmark *script*: it prints figures and never asserts them.  It starts a fresh
embedded broker and a 4-partition topic, a producer of ``--rate`` records/s (100 bytes,
``linger.ms=5``, as the stream benchmark's generator), and one consumer per
``--fetch-wait-ms`` value (each in its own group, reading from the beginning).  Every
``--window`` seconds it prints the broker's CPU (cores, from ``/proc``) and each
consumer's fetch requests per second (librdkafka's statistics).  First the producer runs
alone for ``--alone`` seconds, so the producer's own cost shows.

Why: Tansu lists every batch a partition has stored whenever a fetch finds records past
its offset (bench/README.md, "Reading them"), so what a consumer costs it grows with the
log and with how often the consumer fetches.

    .venv/bin/python bench/broker_fetch.py --fetch-wait-ms 10 --duration 40
    .venv/bin/python bench/broker_fetch.py --fetch-wait-ms 10,100 --duration 40   # side by side
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_triggers.ops.broker import EmbeddedBroker

TOPIC = "fetch-cost"


def consume(bootstrap: str, wait_ms: int, fetches: dict[int, int], stop: threading.Event) -> None:
    """Read the topic from the beginning until ``stop``; ``fetches[wait_ms]``: fetch requests so far."""

    def on_stats(raw: str) -> None:
        brokers = json.loads(raw)["brokers"].values()
        fetches[wait_ms] = sum(broker["req"].get("Fetch", 0) for broker in brokers)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fetch-cost-{wait_ms}-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": wait_ms,
            "session.timeout.ms": 6000,  # Tansu's join waits about half of it
            "statistics.interval.ms": 1000,
            "stats_cb": on_stats,
        }
    )
    consumer.subscribe([TOPIC])
    try:
        while not stop.is_set():
            consumer.consume(1000, 0.05)
    finally:
        consumer.close()


def _waits(text: str) -> list[int]:
    """``10,100`` -> ``[10, 100]``; anything else is a usage error naming the option."""
    try:
        waits = [int(w) for w in text.split(",") if w]
    except ValueError:
        waits = []
    if not waits or min(waits) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated milliseconds >= 0, got {text!r}")
    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch-wait-ms", type=_waits, default=[10], help="comma-separated: one consumer per value [10]")
    ap.add_argument("--rate", type=int, default=2000, help="records/s produced [2000]")
    ap.add_argument("--alone", type=float, default=10.0, help="seconds of the producer alone first [10]")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds with the consumers [40]")
    ap.add_argument("--window", type=float, default=5.0, help="seconds per printed line [5]")
    a = ap.parse_args()
    waits: list[int] = a.fetch_wait_ms

    broker = EmbeddedBroker()
    broker.start()
    stop = threading.Event()
    readers: list[threading.Thread] = []
    try:
        bootstrap = broker.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})  # (kept alive until the topic exists)
        for future in admin.create_topics([NewTopic(TOPIC, 4, 1)]).values():
            future.result()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        process = psutil.Process(broker.pid)
        fetches: dict[int, int] = {}
        start = time.monotonic()
        sent = 0
        window: dict[str, Any] = {"at": start, "cpu": sum(process.cpu_times()[:2]), "fetches": {}}
        print(f"producer alone for {a.alone:g} s, then consumers with fetch waits {waits} ms")
        while (elapsed := time.monotonic() - start) < a.alone + a.duration:
            if not readers and elapsed >= a.alone:
                readers = [threading.Thread(target=consume, args=(bootstrap, w, fetches, stop)) for w in waits]
                for reader in readers:
                    reader.start()
            while sent < int(elapsed * a.rate):
                producer.produce(TOPIC, b"x" * 100, str(sent % 1000).encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.002)
            now = time.monotonic()
            if now - window["at"] >= a.window:
                cpu = sum(process.cpu_times()[:2])
                span = now - window["at"]
                rates = {w: (fetches.get(w, 0) - window["fetches"].get(w, 0)) / span for w in waits}
                shown = ", ".join(f"{w} ms: {rates[w]:.0f}/s" for w in waits) if readers else "(no consumer yet)"
                print(f"t={now - start:5.1f} s  broker {(cpu - window['cpu']) / span:.2f} cores  fetches {shown}")
                window = {"at": now, "cpu": cpu, "fetches": dict(fetches)}
        producer.flush(10)
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
        broker.stop()


if __name__ == "__main__":
    main()
