"""``stream-triggers``: run the broker, workers and executors; drive and inspect sessions.

The group and its global options live here; the commands live in small modules:
:mod:`~stream_triggers.cli.run` (broker, topics, worker, executor),
:mod:`~stream_triggers.cli.session` (configure, fire, replay, skip, inspect),
:mod:`~stream_triggers.cli.tail`, :mod:`~stream_triggers.cli.dead_letters` and
:mod:`~stream_triggers.cli.demo`.  Shared options and exit codes:
:mod:`~stream_triggers.cli.options`.
"""

from __future__ import annotations

import logging

import click

from stream_triggers.cli import dead_letters, demo, run, session, tail
from stream_triggers.cli.options import ENV

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", envvar=ENV + "LOG_LEVEL", default="INFO", show_default=True, show_envvar=True)
@click.option("--json-logs/--plain-logs", envvar=ENV + "JSON_LOGS", default=False, show_envvar=True)
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
    session.replay,
    session.skip,
    session.inspect,
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
