"""Commands on one session: ``configure`` and ``fire`` publish, ``inspect`` reads.

Each publishes one event to ``PREFIX.events`` through the ``kafka`` storage (the worker owning
the session applies it) or reads the state the workers last committed.  Whatever can be
checked here (JSON, mappings, names, the configuration) is, before any broker is contacted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from stream_triggers.cli.kafka_settings import kafka_options
from stream_triggers.cli.options import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_SESSION,
    bootstrap_option,
    check_broker,
    check_name,
    env_option,
    fail,
    json_mapping_arg,
    prefix_option,
)

__all__ = ["configure", "fire", "inspect", "publish_to", "submit"]


def publish_to(
    bootstrap: str,
    prefix: str,
    session: str,
    kafka_config: dict[str, str],
    *,
    wrap: Callable[[Any], Any] | None = None,
) -> Any:
    """A manager publishing SESSION's events (exit 3 without a broker, 5 without the topics).

    Its producer is built here, once the broker answered, with the user's client settings (and
    handed through ``wrap`` if given); the storage reads with them too.
    """
    from stream_triggers.kafka import clients
    from stream_triggers.manager import TriggerManager
    from stream_triggers.storages.kafka import KafkaStorage

    events = f"{prefix}.events"
    if events not in check_broker(bootstrap, kafka_config):  # else a publish waits 30 s for a topic that never comes
        fail(
            f"topic {events!r} does not exist on {bootstrap}: create the topics first "
            f"(stream-triggers topics create), or check --topic-prefix",
            EXIT_INPUT,
        )
    producer = clients.producer(bootstrap, "cli", kafka_config=kafka_config)
    if wrap is not None:
        producer = wrap(producer)
    # The commands check what they can against the committed state themselves (and say so
    # with their own exit codes); the worker's dead letter stays the final word.
    storage = KafkaStorage(
        session, bootstrap, prefix, producer=producer, kafka_config=kafka_config, check_committed=False
    )
    return TriggerManager(storage)


def submit(action: Callable[[], Any]) -> None:
    """Run ``action`` (one manager call); a refusal exits 5 (4 for an unknown instance or session)."""
    from confluent_kafka import KafkaException

    from stream_triggers.engine import EngineError

    try:
        action()
    except EngineError as exc:
        fail(str(exc), EXIT_SESSION if exc.reason == "unknown_instance" else EXIT_INPUT)
    except (ValueError, TypeError) as exc:
        fail(str(exc), EXIT_INPUT)
    except LookupError as exc:
        fail(str(exc), EXIT_SESSION)
    except KafkaException as exc:
        fail(f"the broker did not take the event: {exc}", EXIT_FAILURE)


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("file", type=click.File("r"))
@kafka_options
def configure(bootstrap: str, topic_prefix: str, session: str, file: Any, kafka_config: dict[str, str]) -> None:
    """Publish a task configuration (JSON file, or - for stdin) for SESSION."""
    check_name(session, "the session UID")
    configuration = json_mapping_arg(file.read(), "the configuration")
    from stream_triggers.engine import build_task_configs

    submit(lambda: build_task_configs(configuration))  # validate before publishing
    manager = publish_to(bootstrap, topic_prefix, session, kafka_config)
    submit(lambda: manager.update_configuration(configuration))
    click.echo(f"configured {len(configuration)} task(s) for {session}")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("trigger")
@env_option(
    "--kwargs",
    "kwargs_json",
    help="Trigger kwargs as a JSON object (the tasks waiting for TRIGGER receive them).",
)
@kafka_options
def fire(
    bootstrap: str, topic_prefix: str, session: str, trigger: str, kwargs_json: str | None, kafka_config: dict[str, str]
) -> None:
    """Fire TRIGGER for SESSION."""
    check_name(session, "the session UID")
    check_name(trigger, "the trigger name")
    kwargs = json_mapping_arg(kwargs_json, "--kwargs")
    manager = publish_to(bootstrap, topic_prefix, session, kafka_config)
    submit(lambda: manager.fire(trigger, kwargs))
    click.echo(f"fired {trigger} for {session}")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@env_option(
    "--json/--text",
    "as_json",
    default=False,
    show_default=True,
    help="Print the session as JSON (for scripts) instead of tables.",
)
@env_option(
    "--read-from",
    type=click.Choice(["auto", "owner", "changelog"]),
    default="auto",
    show_default=True,
    help="auto: ask the worker that owns the session, else scan its changelog partition.",
)
@kafka_options
def inspect(
    bootstrap: str, topic_prefix: str, session: str, as_json: bool, read_from: str, kafka_config: dict[str, str]
) -> None:
    """Show SESSION as the workers last committed it: tasks, instances, unresolved tasks.

    Prints on stderr where the state came from (its owner, or the changelog).
    """
    check_name(session, "the session UID")
    from stream_triggers.cli.inspect import render_session, session_document
    from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound, SessionUnreadable

    check_broker(bootstrap, kafka_config)
    storage = KafkaStorage(session, bootstrap, topic_prefix, kafka_config=kafka_config, read_from=read_from)
    try:
        state = storage.state
    except SessionNotFound as exc:
        from stream_triggers.cli.purged import find_purge, purge_message

        purge = find_purge(bootstrap, topic_prefix, session, kafka_config=kafka_config)
        fail(str(exc) if purge is None else purge_message(session, purge), EXIT_SESSION)
    except SessionUnreadable as exc:
        fail(str(exc), EXIT_FAILURE)
    click.echo(f"read from {storage.read_source}", err=True)
    if as_json:
        click.echo(json.dumps(session_document(session, state), indent=2, default=str))
    else:
        click.echo(render_session(session, state))
