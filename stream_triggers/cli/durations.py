"""Durations on the command line: plain seconds or a number with a unit (``30s``, ``15m``, ``12h``, ``7d``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from stream_triggers.cli.options import env_option

__all__ = ["DURATION", "DurationType", "parse_duration", "retention_options"]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError (saying what is accepted) for anything else, zero included."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use seconds (3600) or a number with s, m, h or d (30s, 15m, 12h, 7d)"
        )
    seconds = float(match["number"]) * _UNITS[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


class DurationType(click.ParamType):
    """A click parameter holding a duration in seconds (bad input: a usage error naming the option)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def retention_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The worker's ``--session-retention`` and ``--session-ttl`` (seconds or None: never)."""
    command = env_option(
        "--session-ttl",
        type=DURATION,
        default=None,
        help="Purge a session that received no input for this long, finalized or not. Default: never.",
    )(command)
    return env_option(
        "--session-retention",
        type=DURATION,
        default=None,
        help="Purge a session this long after its sessionFinalized (seconds, or 30s, 15m, 12h, 7d). Default: never.",
    )(command)
