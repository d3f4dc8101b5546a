"""The ``stream-triggers`` command line: argument parsing on top, one call into the product below."""

from stream_triggers.cli.main import cli, main

__all__ = ["cli", "main"]
