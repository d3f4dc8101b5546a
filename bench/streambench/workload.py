"""The peer's workload as our events, produced to the events topic; when the group is done."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from stream_triggers.events import jsonx
from stream_triggers.events.codec import encode


def workload(gen_workload: Any, sessions: int, seed: int, concurrency: int) -> list[tuple[int, str, str, str]]:
    """``(seq, uid, record type, configuration JSON or trigger name)`` in stream order."""
    out = []
    for seq, uid, ev in gen_workload.events(sessions, seed, concurrency):
        if ev["type"] == "configure":
            configuration = {
                task["name"]: {"after": list(task["after"]), "run": "bench.noop", "using": "noop"}
                for task in ev["tasks"]
            }
            out.append((seq, uid, "ConfigurationUpdated", jsonx.dumps(configuration)))
        else:
            out.append((seq, uid, "TriggerFired", ev["trigger"]))
    return out


def encode_event(seq: int, uid: str, type_name: str, payload: str, produced_at_us: int) -> bytes:
    record = {"event_id": str(seq), "session_uid": uid, "produced_at": produced_at_us}
    if type_name == "ConfigurationUpdated":
        record["configuration_json"] = payload
    else:
        record["trigger"] = payload
        record["kwargs_json"] = "{}"
    return encode(type_name, record)


class EventProducer:
    """Produces the workload; remembers the last delivered offset of every partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.last_offsets: dict[int, int] = {}
        self.errors: list[str] = []
        self.produced = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000,
                "log.connection.close": False,
            }
        )

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))
        elif message.offset() > self.last_offsets.get(message.partition(), -1):
            self.last_offsets[message.partition()] = message.offset()

    def produce(self, event: tuple[int, str, str, str]) -> None:
        seq, uid, type_name, payload = event
        value = encode_event(seq, uid, type_name, payload, time.time_ns() // 1000)
        while True:
            try:
                self._producer.produce(self.topic, value, uid.encode(), on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)
        self.produced += 1

    def run(self, events: list[tuple[int, str, str, str]], rate: float, tick: Callable[[], None]) -> dict[str, Any]:
        """Produce everything (paced at ``rate`` events/s if > 0), calling ``tick`` as it goes."""
        t0 = time.time()
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = t0
        for n, event in enumerate(events):
            if interval:
                now = time.time()
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
                tick()
            elif n % 10_000 == 0:
                tick()
            self.produce(event)
        produce_s = time.time() - t0
        remaining = self._producer.flush(120)
        total_s = time.time() - t0
        if remaining:
            self.errors.append(f"{remaining} records not delivered after flush")
        return {
            "produced": self.produced,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "produce_s": round(produce_s, 3),
            "produce_plus_flush_s": round(total_s, 3),
            "rate_ev_s": round(self.produced / total_s, 1) if total_s else None,
            "target_rate": rate,
        }


def committed_all(bootstrap: str, group: str, topic: str, last_offsets: dict[int, int]) -> bool:
    """Has ``group`` committed past the last produced offset of every partition?"""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log.connection.close": False}
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(last_offsets)]
        got = consumer.committed(tps, timeout=5)
    except KafkaException:
        return False
    finally:
        consumer.close()
    return all(tp.offset >= last_offsets[tp.partition] + 1 for tp in got)
