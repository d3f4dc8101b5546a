"""Commands on one session: ``configure``, ``fire``, ``replay``, ``skip`` publish; ``inspect`` reads.

Each publishes one event to ``PREFIX.events`` through the ``kafka`` storage (the worker owning
the session applies it) or reads the state the workers last committed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from stream_triggers.cli.options import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_SESSION,
    bootstrap_option,
    check_broker,
    fail,
    json_arg,
    prefix_option,
)

__all__ = ["configure", "fire", "inspect", "replay", "skip"]


def _manager(bootstrap: str, prefix: str, session: str) -> Any:
    from stream_triggers.manager import TriggerManager
    from stream_triggers.storages.kafka import KafkaStorage

    events = f"{prefix}.events"
    if events not in check_broker(bootstrap):  # else a publish waits 30 s for a topic that never comes
        fail(
            f"topic {events!r} does not exist on {bootstrap}: create the topics first "
            f"(stream-triggers topics create), or check --topic-prefix",
            EXIT_INPUT,
        )
    return TriggerManager(KafkaStorage(session, bootstrap, prefix))


def _submit(action: Callable[[], Any]) -> None:
    from confluent_kafka import KafkaException

    from stream_triggers.engine import EngineError

    try:
        action()
    except (EngineError, ValueError, TypeError) as exc:
        fail(str(exc), EXIT_INPUT)
    except KafkaException as exc:
        fail(f"the broker did not take the event: {exc}", EXIT_FAILURE)


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("file", type=click.File("r"))
def configure(bootstrap: str, topic_prefix: str, session: str, file: Any) -> None:
    """Publish a task configuration (JSON file, or - for stdin) for SESSION."""
    configuration = json_arg(file.read(), "the configuration")
    from stream_triggers.engine import build_task_configs

    _submit(lambda: build_task_configs(configuration))  # validate before publishing
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.update_configuration(configuration))
    click.echo(f"configured {len(configuration)} task(s) for {session}")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("trigger")
@click.option("--kwargs", "kwargs_json", help="Trigger kwargs as a JSON object.")
def fire(bootstrap: str, topic_prefix: str, session: str, trigger: str, kwargs_json: str | None) -> None:
    """Fire TRIGGER for SESSION."""
    kwargs = json_arg(kwargs_json, "--kwargs")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.fire(trigger, kwargs))
    click.echo(f"fired {trigger} for {session}")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@click.option("--kwargs", "kwargs_json", help="Replacement trigger kwargs (JSON object).")
def replay(bootstrap: str, topic_prefix: str, session: str, instance: str, kwargs_json: str | None) -> None:
    """Replay a failed INSTANCE of SESSION (optionally with replacement kwargs)."""
    kwargs = json_arg(kwargs_json, "--kwargs")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.replay_failed_instance(instance, kwargs))
    click.echo(f"replay of {instance} requested")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@click.option("--cascade", is_flag=True, help="Fire the task's name as if it had finished.")
@click.option("--result", "result_json", help="Fake result (JSON object) for the cascade.")
def skip(
    bootstrap: str, topic_prefix: str, session: str, instance: str, cascade: bool, result_json: str | None
) -> None:
    """Skip a failed INSTANCE of SESSION."""
    result = json_arg(result_json, "--result")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.skip_failed_instance(instance, cascade, result))
    click.echo(f"skip of {instance} requested")


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
def inspect(bootstrap: str, topic_prefix: str, session: str, as_json: bool) -> None:
    """Show SESSION as the workers last committed it: tasks, instances, unresolved tasks."""
    from stream_triggers.cli.inspect import render_session, session_document
    from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound

    check_broker(bootstrap)
    storage = KafkaStorage(session, bootstrap, topic_prefix)
    try:
        state = storage.state
    except SessionNotFound as exc:
        fail(str(exc), EXIT_SESSION)
    if as_json:
        click.echo(json.dumps(session_document(session, state), indent=2, default=str))
    else:
        click.echo(render_session(session, state))
