"""Commands on one task instance: ``replay``, ``skip``, ``mark-logs-resolved``, ``update-status``.

Each first reads the session's committed state, so that an unknown session or instance is
refused at once (exit 4) and an operation the instance's status does not allow (replaying a
finished instance) too (exit 5).  The event is then published; the worker owning the session
applies it a moment later, or rejects it to the dead-letter topic (the state may have moved on
meanwhile).  ``--wait`` waits for that outcome: exit 0 once the committed state shows it, 4 or
5 when the event was dead-lettered, 1 when nothing happened in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from stream_triggers.cli.kafka_settings import kafka_options
from stream_triggers.cli.options import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_SESSION,
    bootstrap_option,
    check_name,
    env_option,
    fail,
    json_mapping_arg,
    prefix_option,
)
from stream_triggers.cli.session import publish_to, submit
from stream_triggers.types import Status, TaskInstance

__all__ = ["mark_logs_resolved", "replay", "skip", "update_status"]

Outcome = Callable[[TaskInstance], bool]


def _wait_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = env_option(
        "--wait-timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        help="With --wait: seconds to wait for the outcome before exiting 1.",
    )(f)
    return env_option(
        "--wait/--no-wait",
        default=False,
        show_default=True,
        help="Wait until the worker applied the request (exit 0) or rejected it (exit 4 or 5).",
    )(f)


def _known_instance(storage: Any, session: str, name: str) -> TaskInstance:
    """The instance as last committed; exit 4 when the session or the instance is unknown."""
    from stream_triggers.storages.kafka import SessionNotFound

    try:
        state = storage.state
    except SessionNotFound as exc:
        fail(f"unknown session: {exc}", EXIT_SESSION)
    instance = state.instances.get(name)
    if instance is None:
        known = ", ".join(state.instances) or "none"
        fail(f"session {session!r} has no task instance {name!r} (instances: {known})", EXIT_SESSION)
    return instance


class _Landed:
    """The CLI's producer, remembering where its records landed: the request's own offset tells
    its fate apart from any other event of the session (applied, or dead-lettered)."""

    def __init__(self) -> None:
        self._producer: Any = None
        self.positions: list[tuple[int, int]] = []

    def wrap(self, producer: Any) -> _Landed:
        """Record through ``producer`` from now on (built once the broker answered)."""
        self._producer = producer
        return self

    def produce(self, *args: Any, on_delivery: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        def delivered(error: Any, message: Any) -> None:
            if error is None:
                self.positions.append((message.partition(), message.offset()))
            if on_delivery is not None:
                on_delivery(error, message)

        return self._producer.produce(*args, on_delivery=delivered, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def _run(
    ctx: click.Context,
    kafka_config: dict[str, str],
    instance_name: str,
    allowed: Outcome | None,
    action: Callable[[Any], Any],
    what: str,
) -> None:
    """Check the instance, publish ``action``'s event, then report (and with --wait, await) the outcome."""
    params = ctx.params
    session = check_name(params["session"], "the session UID")
    check_name(instance_name, "the instance name")
    landed = _Landed()
    manager = publish_to(params["bootstrap"], params["topic_prefix"], session, kafka_config, wrap=landed.wrap)
    instance = _known_instance(manager.storage, session, instance_name)
    if allowed is not None and not allowed(instance):
        fail(f"{instance_name} is {instance.status}: only a failed instance can be {what}", EXIT_INPUT)
    submit(lambda: action(manager))
    if not params["wait"] or not landed.positions:
        click.echo(
            f"{what} of {instance_name} requested: the worker owning {session} applies it (or rejects it to "
            f"the dead-letter topic if the instance moved on); --wait waits for the outcome"
        )
        return
    _await_outcome(params, kafka_config, session, instance_name, what, landed.positions[-1])


def _await_outcome(
    params: dict[str, Any],
    kafka_config: dict[str, str],
    session: str,
    name: str,
    what: str,
    position: tuple[int, int],
) -> None:
    """Exit 0 once the committed state has applied the request at ``position`` of the events topic;
    4 or 5 when it was dead-lettered instead; 1 when neither happened within --wait-timeout."""
    from stream_triggers.cli.dead_letters import read_dead_letters
    from stream_triggers.events.state_format import decode_state
    from stream_triggers.kafka.topics import Topics
    from stream_triggers.storages.kafka import KafkaStorage

    bootstrap, topics = params["bootstrap"], Topics(params["topic_prefix"])
    partition, offset = position
    deadline = time.monotonic() + params["wait_timeout"]
    while True:
        snapshot = KafkaStorage(session, bootstrap, topics.prefix, kafka_config=kafka_config).read_snapshot()
        # Read after the snapshot: a batch's dead letters are flushed before its changelog records.
        for letter in read_dead_letters(bootstrap, topics, kafka_config=kafka_config):
            r = letter.record
            if (r["topic"], r["partition"], r["offset"]) == (topics.events, partition, offset):
                code = EXIT_SESSION if r["reason"] == "unknown_instance" else EXIT_INPUT
                fail(f"the worker rejected the {what}: {letter.describe()}", code)
        if snapshot is not None and snapshot["applied_offset"] >= offset:
            instance = decode_state(snapshot["state"]).instances.get(name)
            click.echo(f"{what}: {name} is now {instance.status if instance else 'gone'}")
            return
        if time.monotonic() > deadline:
            fail(f"no outcome for the {what} of {name} within {params['wait_timeout']} s", EXIT_FAILURE)
        time.sleep(0.2)


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@env_option(
    "--kwargs",
    "kwargs_json",
    help="Replacement trigger kwargs (JSON object) for the new instance.",
)
@_wait_options
@kafka_options
@click.pass_context
def replay(ctx: click.Context, instance: str, kwargs_json: str | None, kafka_config: dict[str, str], **_: Any) -> None:
    """Replay a failed INSTANCE of SESSION (optionally with replacement kwargs)."""
    kwargs = json_mapping_arg(kwargs_json, "--kwargs")
    _run(
        ctx,
        kafka_config,
        instance,
        lambda i: i.can_replay,
        lambda manager: manager.replay_failed_instance(instance, kwargs),
        "replay",
    )


@click.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@env_option(
    "--cascade/--no-cascade",
    default=False,
    show_default=True,
    help="Fire the task's name as if it had finished (with --result as its result).",
)
@env_option(
    "--result",
    "result_json",
    help="Fake result (JSON object) fired with the cascade.",
)
@_wait_options
@kafka_options
@click.pass_context
def skip(
    ctx: click.Context,
    instance: str,
    cascade: bool,
    result_json: str | None,
    kafka_config: dict[str, str],
    **_: Any,
) -> None:
    """Skip a failed INSTANCE of SESSION."""
    result = json_mapping_arg(result_json, "--result")
    _run(
        ctx,
        kafka_config,
        instance,
        lambda i: i.can_skip,
        lambda manager: manager.skip_failed_instance(instance, cascade, result),
        "skip",
    )


@click.command("mark-logs-resolved")
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@_wait_options
@kafka_options
@click.pass_context
def mark_logs_resolved(ctx: click.Context, instance: str, kafka_config: dict[str, str], **_: Any) -> None:
    """Mark the logs of INSTANCE of SESSION as looked at (mark_instance_logs_resolved)."""
    _run(
        ctx,
        kafka_config,
        instance,
        None,
        lambda manager: manager.mark_instance_logs_resolved(instance),
        "logs resolution",
    )


@click.command("update-status")
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@click.argument("status", type=click.Choice([s.value for s in Status]))
@env_option(
    "--metadata",
    "metadata_json",
    help="Metadata (JSON object) merged into the instance's.",
)
@env_option(
    "--cascade/--no-cascade",
    default=False,
    show_default=True,
    help="Fire the task's name as a trigger (with --kwargs), as a finished task does.",
)
@env_option(
    "--kwargs",
    "kwargs_json",
    help="Kwargs (JSON object) of the cascaded trigger.",
)
@_wait_options
@kafka_options
@click.pass_context
def update_status(
    ctx: click.Context,
    instance: str,
    status: str,
    metadata_json: str | None,
    cascade: bool,
    kwargs_json: str | None,
    kafka_config: dict[str, str],
    **_: Any,
) -> None:
    """Set the STATUS of INSTANCE of SESSION by hand (update_instance_status)."""
    metadata = json_mapping_arg(metadata_json, "--metadata")
    kwargs = json_mapping_arg(kwargs_json, "--kwargs")
    _run(
        ctx,
        kafka_config,
        instance,
        None,
        lambda manager: manager.update_instance_status(instance, status, metadata, cascade, kwargs),
        "status update",
    )
