"""``stream-triggers``: run the broker, workers and executors; drive and inspect sessions.

Every option can also come from an environment variable (``STREAM_TRIGGERS_BOOTSTRAP``,
``STREAM_TRIGGERS_TOPIC_PREFIX``, ...; see ``--help``).  Exit codes: 0 ok, 1 failure,
2 usage error, 3 broker unreachable, 4 unknown session, 5 invalid input.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

EXIT_FAILURE, EXIT_BROKER, EXIT_SESSION, EXIT_INPUT = 1, 3, 4, 5

_ENV = "STREAM_TRIGGERS_"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def bootstrap_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--bootstrap",
        envvar=_ENV + "BOOTSTRAP",
        required=True,
        show_envvar=True,
        help="Kafka bootstrap servers (host:port).",
    )(f)


def prefix_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--topic-prefix",
        envvar=_ENV + "TOPIC_PREFIX",
        default="triggers",
        show_default=True,
        show_envvar=True,
        help="Prefix of the six topics (PREFIX.events, PREFIX.task-runs, ...).",
    )(f)


def _setup_logging(level: str, json_logs: bool = False) -> None:
    from stream_triggers.ops.logs import configure_logging

    configure_logging(level, json_logs)


def _check_broker(bootstrap: str, timeout: float = 8.0) -> set[str]:
    """The broker's topic names; exit 3 when it does not answer."""
    from confluent_kafka.admin import AdminClient

    try:
        # librdkafka's own connection errors (log_level 0: none) would bury the one line below.
        metadata = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
    except Exception as exc:
        _fail(f"cannot reach the Kafka broker at {bootstrap} ({exc}); is it running?", EXIT_BROKER)
    return set(metadata.topics)


def _is_endpoint(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what} is not valid JSON: {exc}", EXIT_INPUT)


def _manager(bootstrap: str, prefix: str, session: str) -> Any:
    from stream_triggers.manager import TriggerManager
    from stream_triggers.storages.kafka import KafkaStorage

    events = f"{prefix}.events"
    if events not in _check_broker(bootstrap):  # else a publish waits 30 s for a topic that never comes
        _fail(
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
        _fail(str(exc), EXIT_INPUT)
    except KafkaException as exc:
        _fail(f"the broker did not take the event: {exc}", EXIT_FAILURE)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", envvar=_ENV + "LOG_LEVEL", default="INFO", show_default=True, show_envvar=True)
@click.option("--json-logs/--plain-logs", envvar=_ENV + "JSON_LOGS", default=False, show_envvar=True)
@click.version_option(package_name="stream-triggers")
def cli(log_level: str, json_logs: bool) -> None:
    """The Triggers framework on Kafka: run a task once its triggers fired, in any order."""
    _setup_logging(log_level, json_logs)


@cli.command()
@click.option(
    "--port",
    envvar=_ENV + "BROKER_PORT",
    type=int,
    default=None,
    show_envvar=True,
    help="Loopback port (default: a free one).",
)
def broker(port: int | None) -> None:
    """Run the embedded Tansu broker in the foreground (dev and demo; in memory)."""
    from stream_triggers.ops.broker import BrokerError, EmbeddedBroker

    try:
        sys.exit(EmbeddedBroker(port=port).run_foreground())
    except BrokerError as exc:
        _fail(str(exc), EXIT_BROKER)


@cli.group()
def topics() -> None:
    """Manage the product's topics."""


@topics.command("create")
@bootstrap_option
@prefix_option
@click.option("--partitions", envvar=_ENV + "PARTITIONS", type=int, default=4, show_default=True, show_envvar=True)
@click.option("--replication", type=int, default=1, show_default=True)
def topics_create(bootstrap: str, topic_prefix: str, partitions: int, replication: int) -> None:
    """Create the topics (events and changelog co-partitioned); idempotent."""
    from stream_triggers.kafka.topics import Topics, TopicsError, create_topics

    _check_broker(bootstrap)
    try:
        done = create_topics(bootstrap, Topics(topic_prefix), partitions=partitions, replication=replication)
    except TopicsError as exc:
        _fail(str(exc), EXIT_FAILURE)
    for name, what in done.items():
        click.echo(f"{name}: {what}")


@cli.command()
@bootstrap_option
@prefix_option
@click.option(
    "--state-dir",
    envvar=_ENV + "STATE_DIR",
    required=True,
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="RocksDB stores, one per owned partition.",
)
@click.option(
    "--manager",
    envvar=_ENV + "MANAGER",
    default="finalizing",
    show_default=True,
    show_envvar=True,
    help="Trigger manager registry key (its hooks run in the worker).",
)
@click.option("--group", envvar=_ENV + "GROUP", default="stream-triggers", show_default=True, show_envvar=True)
@click.option(
    "--import",
    "imports",
    envvar=_ENV + "IMPORT",
    multiple=True,
    show_envvar=True,
    help="Module to import first (e.g. one registering a custom manager). Repeatable.",
)
@click.option("--batch-size", envvar=_ENV + "BATCH_SIZE", type=int, default=10_000, show_default=True, show_envvar=True)
@click.option(
    "--fetch-wait-ms",
    envvar=_ENV + "FETCH_WAIT_MS",
    type=int,
    default=10,
    show_default=True,
    show_envvar=True,
    help="Upper bound on input latency when idle.",
)
@click.option(
    "--session-timeout-ms",
    envvar=_ENV + "SESSION_TIMEOUT_MS",
    type=int,
    default=6000,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--metrics-port",
    envvar=_ENV + "METRICS_PORT",
    type=int,
    default=None,
    show_envvar=True,
    help="Serve /metrics, /healthz, /readyz and /sessions/<uid> (committed state) on this port.",
)
@click.option(
    "--advertise",
    envvar=_ENV + "ADVERTISE",
    default=None,
    show_envvar=True,
    metavar="HOST:PORT",
    help="Where readers reach this worker's /sessions/ endpoint, written to PREFIX.owners "
    "[default: this host's fully qualified name and the --metrics-port; no metrics port: not advertised].",
)
@click.option(
    "--stats-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="On exit, write the worker's counters (WorkerStats) here as JSON (benchmarks read it).",
)
def worker(
    bootstrap: str,
    topic_prefix: str,
    state_dir: str,
    manager: str,
    group: str,
    imports: tuple[str, ...],
    batch_size: int,
    fetch_wait_ms: int,
    session_timeout_ms: int,
    metrics_port: int | None,
    advertise: str | None,
    stats_out: str | None,
) -> None:
    """Run a stream worker: apply trigger events to session state, publish outputs."""
    from stream_triggers.executor import import_task_modules
    from stream_triggers.manager import trigger_managers
    from stream_triggers.registry import RegistryKeyError
    from stream_triggers.stream.worker import StreamWorker, WorkerSettings

    errors = import_task_modules(imports)
    if errors:
        _fail(f"cannot import {errors}", EXIT_INPUT)
    try:
        trigger_managers.get_class(manager)
    except RegistryKeyError as exc:
        _fail(str(exc).strip('"'), EXIT_INPUT)
    _check_broker(bootstrap)
    settings = WorkerSettings(
        bootstrap=bootstrap,
        state_dir=state_dir,
        group=group,
        topic_prefix=topic_prefix,
        manager=manager,
        batch_size=batch_size,
        fetch_wait_ms=fetch_wait_ms,
        session_timeout_ms=session_timeout_ms,
    )
    if advertise is not None and (metrics_port is None or not _is_endpoint(advertise)):
        _fail(f"--advertise {advertise!r} needs HOST:PORT and a --metrics-port to serve on", EXIT_INPUT)
    instance = StreamWorker(settings)
    instance.install_signal_handlers()
    if metrics_port is not None:
        import socket

        from stream_triggers.ops.metrics import serve_worker_metrics
        from stream_triggers.ops.queries import SESSIONS_PATH, session_route

        routes = {SESSIONS_PATH: session_route(instance.served)}
        server = serve_worker_metrics(instance, metrics_port, routes=routes)
        # The fully qualified name: what other hosts resolve (a StatefulSet pod's is
        # pod.service.namespace.svc..., its bare host name only resolves inside the pod).
        settings.advertise = advertise or f"{socket.getfqdn()}:{server.port}"  # read at assignment
    try:
        instance.run()
    finally:
        if stats_out is not None:
            import dataclasses

            with open(stats_out, "w", encoding="utf-8") as out:
                json.dump(dataclasses.asdict(instance.stats), out)


@cli.command()
@bootstrap_option
@prefix_option
@click.option(
    "--import",
    "imports",
    envvar=_ENV + "IMPORT",
    multiple=True,
    show_envvar=True,
    help="Module defining TriggerTasks (they register on import). Repeatable.",
)
@click.option(
    "--runner",
    envvar=_ENV + "RUNNER",
    default="kafka",
    show_default=True,
    show_envvar=True,
    help="Serve tasks whose `using` is this runner name.",
)
@click.option(
    "--group",
    envvar=_ENV + "EXECUTOR_GROUP",
    default=None,
    show_envvar=True,
    help="Consumer group [default: stream-triggers-executor-RUNNER].",
)
@click.option("--concurrency", envvar=_ENV + "CONCURRENCY", type=int, default=4, show_default=True, show_envvar=True)
@click.option(
    "--session-timeout-ms",
    envvar=_ENV + "SESSION_TIMEOUT_MS",
    type=int,
    default=6000,
    show_default=True,
    show_envvar=True,
    help="How soon the group notices a dead executor (joins take about half of it).",
)
@click.option("--metrics-port", envvar=_ENV + "METRICS_PORT", type=int, default=None, show_envvar=True)
def executor(
    bootstrap: str,
    topic_prefix: str,
    imports: tuple[str, ...],
    runner: str,
    group: str | None,
    concurrency: int,
    session_timeout_ms: int,
    metrics_port: int | None,
) -> None:
    """Run a task executor: run requested TriggerTasks and report their outcome."""
    from stream_triggers.executor import ExecutorSettings, TaskExecutor

    _check_broker(bootstrap)
    settings = ExecutorSettings(
        bootstrap=bootstrap,
        imports=list(imports),
        runner=runner,
        group=group,
        topic_prefix=topic_prefix,
        concurrency=concurrency,
        session_timeout_ms=session_timeout_ms,
    )
    instance = TaskExecutor(settings)
    instance.install_signal_handlers()
    if metrics_port is not None:
        from stream_triggers.ops.metrics import serve_executor_metrics

        serve_executor_metrics(instance, metrics_port)
    instance.run()


@cli.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("file", type=click.File("r"))
def configure(bootstrap: str, topic_prefix: str, session: str, file: Any) -> None:
    """Publish a task configuration (JSON file, or - for stdin) for SESSION."""
    configuration = _json_arg(file.read(), "the configuration")
    from stream_triggers.engine import build_task_configs

    _submit(lambda: build_task_configs(configuration))  # validate before publishing
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.update_configuration(configuration))
    click.echo(f"configured {len(configuration)} task(s) for {session}")


@cli.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("trigger")
@click.option("--kwargs", "kwargs_json", help="Trigger kwargs as a JSON object.")
def fire(bootstrap: str, topic_prefix: str, session: str, trigger: str, kwargs_json: str | None) -> None:
    """Fire TRIGGER for SESSION."""
    kwargs = _json_arg(kwargs_json, "--kwargs")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.fire(trigger, kwargs))
    click.echo(f"fired {trigger} for {session}")


@cli.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.argument("instance")
@click.option("--kwargs", "kwargs_json", help="Replacement trigger kwargs (JSON object).")
def replay(bootstrap: str, topic_prefix: str, session: str, instance: str, kwargs_json: str | None) -> None:
    """Replay a failed INSTANCE of SESSION (optionally with replacement kwargs)."""
    kwargs = _json_arg(kwargs_json, "--kwargs")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.replay_failed_instance(instance, kwargs))
    click.echo(f"replay of {instance} requested")


@cli.command()
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
    result = _json_arg(result_json, "--result")
    manager = _manager(bootstrap, topic_prefix, session)
    _submit(lambda: manager.skip_failed_instance(instance, cascade, result))
    click.echo(f"skip of {instance} requested")


@cli.command()
@bootstrap_option
@prefix_option
@click.argument("session")
@click.option("--json", "as_json", is_flag=True, help="Print the session as JSON.")
@click.option(
    "--read-from",
    type=click.Choice(["auto", "owner", "changelog"]),
    default="auto",
    show_default=True,
    help="auto: ask the worker that owns the session, else scan its changelog partition.",
)
def inspect(bootstrap: str, topic_prefix: str, session: str, as_json: bool, read_from: str) -> None:
    """Show SESSION as the workers last committed it: tasks, instances, unresolved tasks.

    Prints on stderr where the state came from (its owner, or the changelog).
    """
    from stream_triggers.cli.inspect import render_session, session_document
    from stream_triggers.storages.kafka import KafkaStorage, SessionNotFound, SessionUnreadable

    _check_broker(bootstrap)
    storage = KafkaStorage(session, bootstrap, topic_prefix, read_from=read_from)
    try:
        state = storage.state
    except SessionNotFound as exc:
        _fail(str(exc), EXIT_SESSION)
    except SessionUnreadable as exc:
        _fail(str(exc), EXIT_FAILURE)
    click.echo(f"read from {storage.read_source}", err=True)
    if as_json:
        click.echo(json.dumps(session_document(session, state), indent=2, default=str))
    else:
        click.echo(render_session(session, state))


@cli.command()
@bootstrap_option
@prefix_option
@click.argument("topic")
@click.option("--from-beginning/--from-end", default=True, show_default=True)
@click.option("--max", "max_records", type=int, default=None, help="Stop after this many records.")
@click.option("--idle-exit", type=float, default=None, help="Stop after this many seconds without records.")
def tail(
    bootstrap: str,
    topic_prefix: str,
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    idle_exit: float | None,
) -> None:
    """Decode and print records of TOPIC (a full name, or a short one: events, task-runs, ...)."""
    from stream_triggers.cli.tail import tail_topic

    _check_broker(bootstrap)
    try:
        tail_topic(bootstrap, topic_prefix, topic, from_beginning, max_records, idle_exit, click.echo)
    except LookupError as exc:
        _fail(str(exc), EXIT_INPUT)


@cli.command()
@click.option("--sessions", type=int, default=3, show_default=True, help="Questionnaire sessions to run.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--metrics-port", type=int, default=None, help="Worker metrics port (executor: +1).")
def demo(sessions: int, seed: int, metrics_port: int | None) -> None:
    """Start a broker, topics, a worker and an executor; run the questionnaire example."""
    from stream_triggers.cli.demo import run_demo

    sys.exit(run_demo(sessions=sessions, seed=seed, metrics_port=metrics_port, echo=click.echo))


def _add_dead_letters() -> None:
    from stream_triggers.cli.dead_letters import cli as dead_letters

    cli.add_command(dead_letters, name="dead-letters")


_add_dead_letters()


def main() -> None:
    logging.captureWarnings(True)
    cli()


if __name__ == "__main__":
    main()
