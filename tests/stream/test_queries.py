"""Reads served by the owner: ``inspect`` and the ``kafka`` storage ask the worker.

Real broker, real worker processes.  A worker with ``--metrics-port`` serves its
sessions' committed state on ``/sessions/<uid>`` and advertises itself in
``<prefix>.owners``; readers ask it, follow the partitions to a new owner after a
rebalance, and with the owner gone fall back to the changelog after a bounded wait,
or fail with an error that names the owner they tried.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from stream_triggers.engine import SessionState
from stream_triggers.events.state_format import decode_state, encode_state
from stream_triggers.ops.broker import free_port
from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound, SessionUnreadable
from tests.support import Pipeline, Proc, run_cli, wait_until

ALL = {0, 1, 2, 3}
CONFIG = {"t_report": {"after": ["page"], "run": "report"}}


def serving_worker(workers: Pipeline, name: str) -> tuple[Proc, str]:
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    worker = workers.worker(name, extra=["--metrics-port", str(port), "--advertise", endpoint])
    return worker, endpoint


def advertised(worker: Proc, endpoint: str, partitions: set[int]) -> bool:
    text = f"advertised {endpoint} as the owner of partitions {sorted(partitions)}"
    return text in worker.log()


def inspect(workers: Pipeline, uid: str) -> tuple[int, str, str]:
    result = run_cli(
        "inspect", "--bootstrap", workers.bootstrap, "--topic-prefix", workers.topics.prefix, uid, "--json"
    )
    return result.returncode, result.stdout, result.stderr


def same(state: SessionState) -> bytes:
    """A state's comparable form (states compare by identity)."""
    return encode_state(state)


def storage(workers: Pipeline, uid: str, **options: object) -> KafkaStorage:
    return KafkaStorage(uid, workers.bootstrap, workers.topics.prefix, **options)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.broker
def test_reads_ask_the_owner_follow_it_and_fall_back_without_it(workers: Pipeline, app: Pipeline) -> None:
    first, first_endpoint = serving_worker(workers, "w0")
    wait_until(lambda: advertised(first, first_endpoint, ALL), "w0 advertising its partitions")
    uid = "query-session"
    app.configure(uid, CONFIG)
    app.fire(uid, "page", {"n": 1})

    def fired() -> bool:
        try:
            return "page" in storage(workers, uid).state.latest_kwargs
        except SessionNotFound:
            return False

    wait_until(fired, "the fire committed")
    expected = same(storage(workers, uid).state)

    # The kafka storage and inspect get the committed state from the owner.
    read = storage(workers, uid)
    assert same(read.state) == expected
    assert read.read_source.startswith(f"owner {first_endpoint} ")
    code, out, err = inspect(workers, uid)
    assert code == 0, err
    assert json.loads(out)["latest_kwargs"] == {"page": {"n": 1}}
    assert f"read from owner {first_endpoint} " in err

    # The owner says so when it owns the partition and has no such session.
    unknown = storage(workers, "never-configured")
    with pytest.raises(SessionNotFound):
        _ = unknown.state
    assert unknown.read_source.startswith(f"owner {first_endpoint} ")

    # The raw endpoint: the committed record bytes, decoded by the reader.
    answer = json.loads(_get(first_endpoint, uid, 4))
    partition = answer["partition"]
    assert answer["found"] is True
    assert same(decode_state(base64.b64decode(answer["state"]))) == expected

    # A rebalance: the partitions move to a second worker, readers find it there.
    second, second_endpoint = serving_worker(workers, "w1")
    second.wait_assigned()
    assert first.terminate() == 0
    wait_until(lambda: advertised(second, second_endpoint, ALL), "w1 advertising all partitions")
    with pytest.raises(urllib.error.HTTPError) as refused:  # w1 serves, w0 is gone; ask w1 for a wrong count
        _get(second_endpoint, uid, 0)
    assert refused.value.code == 400
    assert json.loads(_get(second_endpoint, uid, 4))["epoch"] > answer["epoch"]  # a later owner
    moved = storage(workers, uid)
    assert same(moved.state) == expected
    assert moved.read_source.startswith(f"owner {second_endpoint} (partition {partition}, ")
    code, out, err = inspect(workers, uid)
    assert code == 0 and f"read from owner {second_endpoint} " in err, err

    # The owner is gone (SIGKILL: still advertised): a bounded wait, then the changelog.
    second.kill()
    fallback = storage(workers, uid, owner_wait_s=1.0)
    assert same(fallback.state) == expected
    assert fallback.read_source.startswith(f"changelog {workers.topics.changelog}[{partition}]")
    assert second_endpoint in fallback.read_source
    code, out, err = inspect(workers, uid)
    assert code == 0 and "read from changelog" in err, err

    # Without the fallback, a clear error naming the owner that did not answer.
    owner_only = storage(workers, uid, owner_wait_s=0.5, read_from="owner")
    with pytest.raises(SessionUnreadable, match=f"no owner answered: {second_endpoint} did not answer"):
        _ = owner_only.state
    result = run_cli(
        "inspect",
        "--bootstrap",
        workers.bootstrap,
        "--topic-prefix",
        workers.topics.prefix,
        uid,
        "--read-from",
        "owner",
    )
    assert result.returncode == 1 and f"no owner answered: {second_endpoint} did not answer" in result.stderr


def _get(endpoint: str, uid: str, partitions: int) -> bytes:
    url = f"http://{endpoint}/sessions/{uid}?partitions={partitions}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
