"""The long-running parts and their set-up: ``broker``, ``topics create``, ``worker``, ``executor``."""

from __future__ import annotations

import json
import sys

import click

from stream_triggers.cli.durations import retention_options
from stream_triggers.cli.kafka_settings import kafka_options
from stream_triggers.cli.options import (
    EXIT_BROKER,
    EXIT_FAILURE,
    EXIT_INPUT,
    bootstrap_option,
    check_broker,
    check_state_dir,
    env_option,
    fail,
    fetch_wait_option,
    prefix_option,
)

__all__ = ["broker", "executor", "topics", "worker"]


@click.command()
@env_option(
    "--port",
    env="BROKER_PORT",
    type=int,
    default=None,
    help="Loopback port (default: a free one).",
)
def broker(port: int | None) -> None:
    """Run the embedded Tansu broker in the foreground (dev and demo; in memory)."""
    from stream_triggers.ops.broker import BrokerError, EmbeddedBroker

    try:
        sys.exit(EmbeddedBroker(port=port).run_foreground())
    except BrokerError as exc:
        fail(str(exc), EXIT_BROKER)


@click.group()
def topics() -> None:
    """Manage the product's topics."""


@topics.command("create")
@bootstrap_option
@prefix_option
@env_option(
    "--partitions",
    type=int,
    default=4,
    show_default=True,
    help="Partitions per topic: the most workers (and executors) that can share the work; cannot change later.",
)
@env_option(
    "--replication",
    type=int,
    default=1,
    show_default=True,
    help="Replicas of each partition (3 on a production cluster).",
)
@kafka_options
def topics_create(
    bootstrap: str, topic_prefix: str, partitions: int, replication: int, kafka_config: dict[str, str]
) -> None:
    """Create the topics (events and changelog co-partitioned); idempotent."""
    from stream_triggers.kafka.topics import Topics, TopicsError, create_topics

    for name, value in (("--partitions", partitions), ("--replication", replication)):
        if value < 1:
            fail(f"{name} must be at least 1, not {value}", EXIT_INPUT)
    check_broker(bootstrap, kafka_config)
    try:
        done = create_topics(
            bootstrap, Topics(topic_prefix), partitions=partitions, replication=replication, kafka_config=kafka_config
        )
    except TopicsError as exc:
        fail(str(exc), EXIT_FAILURE)
    for name, what in done.items():
        click.echo(f"{name}: {what}")


def _is_endpoint(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


@click.command()
@bootstrap_option
@prefix_option
@env_option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="RocksDB stores, one per owned partition.",
)
@env_option(
    "--manager",
    default="finalizing",
    show_default=True,
    help="Trigger manager registry key (its hooks run in the worker).",
)
@env_option(
    "--group",
    default="stream-triggers",
    show_default=True,
    help="Consumer group of the workers: every worker of one deployment joins the same one.",
)
@env_option(
    "--import",
    "imports",
    multiple=True,
    help="Module to import first (e.g. one registering a custom manager). Repeatable.",
)
@env_option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5_000,
    show_default=True,
    help="Most events applied per batch, and per checkpoint.",
)
@env_option(
    "--checkpoint-interval-ms",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Longest time applied batches wait for their checkpoint (state, RocksDB write, offset commit).",
)
@fetch_wait_option("input events")
@env_option(
    "--linger-ms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="After a batch that emptied the input queue, wait up to this for a fuller one: fewer, "
    "larger batches under a steady stream, for up to this much more latency (0: apply each at once).",
)
@env_option(
    "--fetch-min-bytes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The broker holds an input fetch until this many bytes are there (or --fetch-wait-ms "
    "passes): fewer, larger fetches under a steady stream, for up to --fetch-wait-ms more latency.",
)
@env_option(
    "--session-timeout-ms",
    type=click.IntRange(min=1),
    default=6000,
    show_default=True,
    help="How soon the group notices a dead worker (joins take about half of it).",
)
@env_option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /metrics, /healthz, /readyz and /sessions/<uid> (committed state) on this port.",
)
@env_option(
    "--advertise",
    default=None,
    metavar="HOST:PORT",
    help="Where readers reach this worker's /sessions/ endpoint, written to PREFIX.owners "
    "[default: this host's fully qualified name and the --metrics-port; no metrics port: not advertised].",
)
@env_option(
    "--stats-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="On exit, write the worker's counters (WorkerStats) here as JSON (benchmarks read it).",
)
@env_option(
    "--restore-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds a partition's state may take to restore from the changelog before the worker gives up.",
)
@env_option(
    "--engine",
    type=click.Choice(["auto", "native", "python"]),
    default="auto",
    show_default=True,
    help="What applies inputs: the native core (Rust), the Python engine, or auto "
    "(native when installed and the manager is a built-in one).",
)
@retention_options
@kafka_options
def worker(
    bootstrap: str,
    topic_prefix: str,
    state_dir: str,
    manager: str,
    group: str,
    imports: tuple[str, ...],
    batch_size: int,
    checkpoint_interval_ms: int,
    fetch_wait_ms: int,
    linger_ms: int,
    fetch_min_bytes: int,
    session_timeout_ms: int,
    metrics_port: int | None,
    advertise: str | None,
    stats_out: str | None,
    restore_timeout: float,
    engine: str,
    session_retention: float | None,
    session_ttl: float | None,
    kafka_config: dict[str, str],
) -> None:
    """Run a stream worker: apply trigger events to session state, publish outputs."""
    from stream_triggers.engine.native import NativeUnavailable
    from stream_triggers.executor import import_task_modules
    from stream_triggers.manager import trigger_managers
    from stream_triggers.registry import RegistryKeyError
    from stream_triggers.stream.worker import StreamWorker, WorkerSettings

    errors = import_task_modules(imports)
    if errors:
        fail(f"cannot import {errors}", EXIT_INPUT)
    try:
        trigger_managers.get_class(manager)
    except RegistryKeyError as exc:
        fail(str(exc).strip('"'), EXIT_INPUT)
    if advertise is not None and (metrics_port is None or not _is_endpoint(advertise)):
        fail(f"--advertise {advertise!r} needs HOST:PORT and a --metrics-port to serve on", EXIT_INPUT)
    check_state_dir(state_dir)
    check_broker(bootstrap, kafka_config)
    settings = WorkerSettings(
        bootstrap=bootstrap,
        state_dir=state_dir,
        group=group,
        topic_prefix=topic_prefix,
        manager=manager,
        batch_size=batch_size,
        checkpoint_interval_s=checkpoint_interval_ms / 1000,
        fetch_wait_ms=fetch_wait_ms,
        linger_s=linger_ms / 1000,
        fetch_min_bytes=fetch_min_bytes,
        session_timeout_ms=session_timeout_ms,
        restore_timeout_s=restore_timeout,
        engine=engine,
        session_retention_s=session_retention,
        session_ttl_s=session_ttl,
        kafka_config=kafka_config,
    )
    try:
        instance = StreamWorker(settings)
    except NativeUnavailable as exc:
        fail(str(exc), EXIT_INPUT)
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


@click.command()
@bootstrap_option
@prefix_option
@env_option(
    "--import",
    "imports",
    multiple=True,
    help="Module defining TriggerTasks (they register on import). Repeatable.",
)
@env_option(
    "--runner",
    default="kafka",
    show_default=True,
    help="Serve tasks whose `using` is this runner name.",
)
@env_option(
    "--group",
    env="EXECUTOR_GROUP",
    default=None,
    help="Consumer group [default: stream-triggers-executor-RUNNER].",
)
@env_option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Tasks run at the same time (threads).",
)
@env_option(
    "--session-timeout-ms",
    type=click.IntRange(min=1),
    default=6000,
    show_default=True,
    help="How soon the group notices a dead executor (joins take about half of it).",
)
@env_option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /metrics, /healthz and /readyz on this port.",
)
@env_option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=1_000,
    show_default=True,
    help="Requests taken and not yet reported (queued, running, cooling down) beyond which fetching pauses.",
)
@fetch_wait_option("task requests")
@kafka_options
def executor(
    bootstrap: str,
    topic_prefix: str,
    imports: tuple[str, ...],
    runner: str,
    group: str | None,
    concurrency: int,
    session_timeout_ms: int,
    metrics_port: int | None,
    max_in_flight: int,
    fetch_wait_ms: int,
    kafka_config: dict[str, str],
) -> None:
    """Run a task executor: run requested TriggerTasks and report their outcome."""
    from stream_triggers.executor import ExecutorSettings, TaskExecutor

    check_broker(bootstrap, kafka_config)
    settings = ExecutorSettings(
        bootstrap=bootstrap,
        imports=list(imports),
        runner=runner,
        group=group,
        topic_prefix=topic_prefix,
        concurrency=concurrency,
        max_in_flight=max_in_flight,
        session_timeout_ms=session_timeout_ms,
        fetch_wait_ms=fetch_wait_ms,
        kafka_config=kafka_config,
    )
    instance = TaskExecutor(settings)
    instance.install_signal_handlers()
    if metrics_port is not None:
        from stream_triggers.ops.metrics import serve_executor_metrics

        serve_executor_metrics(instance, metrics_port)
    instance.run()
