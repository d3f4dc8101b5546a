"""List dead letters, and re-publish chosen ones to the topic they came from.

    python -m stream_triggers.cli.dead_letters list   [--reason R] [--session S]
    python -m stream_triggers.cli.dead_letters replay [--reason R] [--session S] [--after P:O] [--dry-run]

(``--bootstrap`` / ``$STREAM_TRIGGERS_BOOTSTRAP`` and ``--topic-prefix`` as for
``stream-triggers``.)  Each dead letter carries the rejected record's key and value
byte for byte, and the topic, partition and offset it had.  Replaying produces that
key and value again to the same topic and partition, where it gets a new offset and is applied
like any new input - so replay a dead letter once the reason it was rejected for is
gone (a missing configuration published, a manager bug fixed and deployed), and only
once: replaying it twice applies it twice.  ``replay`` prints the position of the
last dead letter it handled per partition (``--after`` takes them) so a later run
can carry on from there.

Only ``events`` records are replayed unless ``--topic task-runs`` is given (a
``task-runs`` dead letter is a request no executor could decode; replaying it would
run a task).  Records without a value (there is nothing to re-publish) are skipped.
Reading never joins a consumer group and commits nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING

from stream_triggers.cli.kafka_settings import kafka_options
from stream_triggers.cli.options import EXIT_INPUT, bootstrap_option, check_broker, env_option, fail, prefix_option
from stream_triggers.events.codec import CodecError, decode
from stream_triggers.kafka import clients
from stream_triggers.kafka.topics import Topics

__all__ = ["DeadLetter", "read_dead_letters", "replay_dead_letters", "select"]


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, where it sits, and what it says."""

    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def describe(self) -> str:
        r = self.record
        return (
            f"{self.position} {r['reason']} session={r.get('session_uid')} "
            f"from={r['topic']}[{r['partition']}]@{r['offset']}: {r['error']}"
        )


def read_dead_letters(
    bootstrap: str, topics: Topics, timeout_s: float = 30.0, *, kafka_config: clients.KafkaConfig | None = None
) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic, from the beginning to the end each partition has now."""
    consumer = clients.consumer(bootstrap, "dead-letters", kafka_config=kafka_config, enable_partition_eof=True)
    try:
        metadata = consumer.list_topics(topics.dead_letter, timeout=timeout_s).topics.get(topics.dead_letter)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise LookupError(f"no topic {topics.dead_letter} on {bootstrap}")
        start = dict.fromkeys(metadata.partitions, OFFSET_BEGINNING)
        for batch in clients.read_to_end(consumer, topics.dead_letter, start, timeout_s):
            for message in batch:
                try:
                    type_name, record = decode(message.value() or b"")
                except CodecError:
                    continue  # not a dead letter we wrote
                if type_name == "DeadLetter":
                    yield DeadLetter(message.partition(), message.offset(), record)
    finally:
        consumer.close()


def select(
    letters: Iterable[DeadLetter],
    *,
    reasons: Iterable[str] = (),
    sessions: Iterable[str] = (),
    source_topics: Iterable[str] = (),
    after: dict[int, int] | None = None,
) -> Iterator[DeadLetter]:
    """The dead letters matching every filter given (an empty filter matches all).

    ``after`` maps a dead-letter partition to the last offset already handled there.
    """
    reasons, sessions, source_topics = set(reasons), set(sessions), set(source_topics)
    after = after or {}
    for letter in letters:
        r = letter.record
        if letter.offset <= after.get(letter.partition, -1):
            continue
        if reasons and r["reason"] not in reasons:
            continue
        if sessions and r.get("session_uid") not in sessions:
            continue
        if source_topics and r["topic"] not in source_topics:
            continue
        yield letter


def replay_dead_letters(
    bootstrap: str,
    letters: Iterable[DeadLetter],
    *,
    dry_run: bool = False,
    echo: Callable[[str], Any] = print,
    kafka_config: clients.KafkaConfig | None = None,
) -> dict[int, int]:
    """Produce each letter's original key and value to its original topic (in order).

    Returns dead-letter partition -> offset of the last letter handled, for ``after``.
    """
    records: list[tuple[str, bytes | None, bytes | None, int]] = []
    last: dict[int, int] = {}
    for letter in letters:
        r = letter.record
        if r.get("value") is None:
            echo(f"skip {letter.describe()} (no value to re-publish)")
            continue
        echo(f"{'would replay' if dry_run else 'replay'} {letter.describe()}")
        # The original partition: the session's, whatever partitioner produced it first.
        records.append((r["topic"], r.get("key"), r["value"], r["partition"]))
        last[letter.partition] = max(letter.offset, last.get(letter.partition, -1))
    if records and not dry_run:
        producer = clients.producer(bootstrap, "dead-letters", kafka_config=kafka_config)
        clients.publish_and_wait(producer, records, 30.0, "replayed dead letters")
    return last


# -- command line ---------------------------------------------------------------------------


def _positions(values: tuple[str, ...]) -> dict[int, int]:
    after = {}
    for value in values:
        partition, _, offset = value.partition(":")
        if not (partition.isdigit() and offset.lstrip("-").isdigit()):
            raise click.BadParameter(f"{value!r} is not PARTITION:OFFSET", param_hint="--after")
        after[int(partition)] = int(offset)
    return after


_common = [
    bootstrap_option,
    prefix_option,
    env_option(
        "--reason",
        "reasons",
        env="DEAD_LETTER_REASON",
        multiple=True,
        help="Only this reason, e.g. unknown_instance (repeatable).",
    ),
    env_option(
        "--session",
        "sessions",
        env="DEAD_LETTER_SESSION",
        multiple=True,
        help="Only this session UID (repeatable).",
    ),
    env_option(
        "--after",
        "after",
        env="DEAD_LETTER_AFTER",
        multiple=True,
        help="PARTITION:OFFSET of the dead-letter topic already handled (repeatable).",
    ),
]


def _check_topic(bootstrap: str, topics: Topics, kafka_config: dict[str, str]) -> None:
    """Exit 3 when the broker does not answer, 5 when it has no dead-letter topic under the prefix."""
    if topics.dead_letter not in check_broker(bootstrap, kafka_config):
        fail(f"no topic {topics.dead_letter!r} on {bootstrap}: check --topic-prefix", EXIT_INPUT)


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = kafka_options(f)
    for option in reversed(_common):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Inspect and replay the dead-letter topic."""


@cli.command("list")
@_options
def list_command(
    bootstrap: str,
    topic_prefix: str,
    reasons: tuple[str, ...],
    sessions: tuple[str, ...],
    after: tuple[str, ...],
    kafka_config: dict[str, str],
) -> None:
    """Print the dead letters (position, reason, session, origin, error)."""
    topics = Topics(topic_prefix)
    positions = _positions(after)
    _check_topic(bootstrap, topics, kafka_config)
    letters = select(
        read_dead_letters(bootstrap, topics, kafka_config=kafka_config),
        reasons=reasons,
        sessions=sessions,
        after=positions,
    )
    count = 0
    for letter in letters:
        click.echo(letter.describe())
        count += 1
    click.echo(f"{count} dead letter(s)", err=True)


@cli.command()
@_options
@env_option(
    "--topic",
    "source",
    env="DEAD_LETTER_TOPIC",
    type=click.Choice(["events", "task-runs"]),
    default="events",
    show_default=True,
    help="Replay dead letters that came from this topic.",
)
@env_option(
    "--dry-run/--publish",
    default=False,
    show_default=True,
    help="Print what would be replayed and publish nothing.",
)
def replay(
    bootstrap: str,
    topic_prefix: str,
    reasons: tuple[str, ...],
    sessions: tuple[str, ...],
    after: tuple[str, ...],
    source: str,
    dry_run: bool,
    kafka_config: dict[str, str],
) -> None:
    """Re-publish the selected dead letters' original records to their topic."""
    topics = Topics(topic_prefix)
    source_topic = topics.events if source == "events" else topics.task_runs
    positions = _positions(after)
    _check_topic(bootstrap, topics, kafka_config)
    letters = select(
        read_dead_letters(bootstrap, topics, kafka_config=kafka_config),
        reasons=reasons,
        sessions=sessions,
        source_topics=[source_topic],
        after=positions,
    )
    last = replay_dead_letters(bootstrap, letters, dry_run=dry_run, echo=click.echo, kafka_config=kafka_config)
    if last:
        resume = " ".join(f"--after {p}:{o}" for p, o in sorted(last.items()))
        click.echo(f"done; to carry on later without repeating these: {resume}", err=True)
    else:
        click.echo("nothing to replay", err=True)


def main() -> None:
    cli(prog_name="python -m stream_triggers.cli.dead_letters")


if __name__ == "__main__":
    sys.exit(main())
