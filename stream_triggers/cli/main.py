"""``stream-triggers``: run the broker, workers and executors; drive and inspect sessions.

The group and its global options live here; the commands live in small modules:
:mod:`~stream_triggers.cli.run` (broker, topics, worker, executor),
:mod:`~stream_triggers.cli.session` (configure, fire, inspect),
:mod:`~stream_triggers.cli.instance` (replay, skip, mark-logs-resolved, update-status),
:mod:`~stream_triggers.cli.tail`, :mod:`~stream_triggers.cli.dead_letters` and
:mod:`~stream_triggers.cli.demo`.  Shared options and exit codes:
:mod:`~stream_triggers.cli.options`.
"""

from __future__ import annotations

import logging

import click

from stream_triggers.cli import dead_letters, demo, instance, run, session, tail
from stream_triggers.cli.options import LOG_LEVELS, env_option

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@env_option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe log records shown (on stderr).",
)
@env_option(
    "--json-logs/--plain-logs",
    default=False,
    show_default=True,
    help="Log one JSON object per line (for log collectors) instead of plain text.",
)
@click.version_option(package_name="stream-triggers")
def cli(log_level: str, json_logs: bool) -> None:
    """The Triggers framework on Kafka: run a task once its triggers fired, in any order."""
    from stream_triggers.ops.logs import configure_logging

    configure_logging(log_level, json_logs)


for command in (
    run.broker,
    run.topics,
    run.worker,
    run.executor,
    session.configure,
    session.fire,
    session.inspect,
    instance.replay,
    instance.skip,
    instance.mark_logs_resolved,
    instance.update_status,
    tail.tail,
    demo.demo,
):
    cli.add_command(command)
cli.add_command(dead_letters.cli, name="dead-letters")


def main() -> None:
    logging.captureWarnings(True)
    cli()


if __name__ == "__main__":
    main()
