"""Which publish errors retire the kafka storage's shared producer (storages/producers.py).

The broker-level fault (a broker restarted empty under a running application) is
tests/faults/test_broker_restarted_empty.py; here, the rules without a broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError

from stream_triggers.kafka import clients
from stream_triggers.storages import producers
from stream_triggers.storages.producers import producer_replacements, retire_if_broken, shared_producer

NOWHERE = "127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_shared_producers() -> Iterator[None]:
    yield
    for key in [key for key in producers._producers if key[0] == NOWHERE]:
        producers._producers.pop(key)


@pytest.mark.parametrize(
    "code",
    [KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.UNKNOWN_PRODUCER_ID, KafkaError._FATAL],
)
def test_a_shared_producer_that_failed_for_good_is_replaced_once(code: int) -> None:
    failed = shared_producer(NOWHERE, timeout_s=1)
    before = producer_replacements()
    assert retire_if_broken(failed, KafkaError(code), "a publish")
    assert not retire_if_broken(failed, KafkaError(code), "a publish")  # a second caller finds it gone
    assert producer_replacements() == before + 1
    assert shared_producer(NOWHERE, timeout_s=1) is not failed


@pytest.mark.parametrize("error", [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), KafkaError(KafkaError._TRANSPORT), None])
def test_a_producer_is_kept_after_an_error_of_the_record_or_the_connection(error: KafkaError | None) -> None:
    kept = shared_producer(NOWHERE, timeout_s=1)
    assert not retire_if_broken(kept, error, "a publish")
    assert shared_producer(NOWHERE, timeout_s=1) is kept


def test_a_callers_own_producer_is_never_retired() -> None:
    own = clients.producer(NOWHERE, "app")
    assert not retire_if_broken(own, KafkaError(KafkaError._FATAL), "a publish")
