"""Trigger tasks for the demo and the executor tests: deterministic, no external services.

The questionnaire of the getting-started guide (``ImportSubject``, ``ImportResponses``,
``ImportBrowserMetadata``), the cookbook's ``CompareResponses`` for an applicant's
"super session", and small tasks that exercise what an executor must handle:
failing once, retrying with a cooldown, running out of retries, logging a warning,
firing a trigger through ``context.manager``, and taking its time.

Determinism: a task's result depends only on its kwargs, the session UID and its replay
depth (``self.request.retries``), never on a clock, a counter or another process, so any
executor that runs (or re-runs) a request returns the same result.  The "databases" the
real tasks would write to are left out: the results, read by later tasks through the
cascade's kwargs, are the whole story.  ``WhoRunsMe`` and ``Sleep`` also return the
executor's PID, so tests can tell which executor ran them.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Mapping
from typing import Any

from stream_triggers.task import TaskContext, TriggerTask

__all__ = [
    "QUESTIONNAIRE",
    "SUPER_SESSION",
    "AlwaysRetries",
    "CompareResponses",
    "FailsOnce",
    "FiresFollowUp",
    "ImportBrowserMetadata",
    "ImportResponses",
    "ImportSubject",
    "RetriesThenSucceeds",
    "Sleep",
    "WarnsOnOddAnswers",
    "WhoRunsMe",
    "subject_id",
]

log = logging.getLogger(__name__)


def subject_id(session_uid: str | None, name: str) -> int:
    """The id a database would give the subject: stable for a session and a name."""
    return zlib.crc32(f"{session_uid}/{name}".encode()) % 1_000_000


# -- the getting-started questionnaire ---------------------------------------------------------


class ImportSubject(TriggerTask):
    """Creates the subject from the first page, once the questionnaire is complete."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        responses = context.trigger_kwargs["firstPageReceived"]["responses"]
        if not responses.get("name"):
            raise ValueError("The first page has no name.")
        return {"subjectId": subject_id(context.session_uid, responses["name"]), "name": responses["name"]}


class ImportResponses(TriggerTask):
    """Stores one page of responses under the subject ``ImportSubject`` created."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        subject = context.trigger_kwargs["t_importSubject"]["subjectId"]
        page = context.trigger_kwargs["pageReceived"]
        return {"subjectId": subject, "page": page["number"], "answers": len(page.get("responses") or {})}


class ImportBrowserMetadata(TriggerTask):
    """Looks up the browser behind one (any) page's user agent."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        subject = context.trigger_kwargs["t_importSubject"]["subjectId"]
        agent = context.trigger_kwargs["pageReceived"].get("userAgent") or "unknown"
        return {"subjectId": subject, "browser": agent.split("/")[0]}


QUESTIONNAIRE: dict[str, dict[str, Any]] = {
    "t_importSubject": {
        "after": ["firstPageReceived", "questionnaireComplete"],
        "run": ImportSubject.name,
    },
    "t_importResponses": {
        "after": ["t_importSubject"],
        "andEvery": "pageReceived",
        "run": ImportResponses.name,
    },
    "t_importBrowserMetadata": {
        "after": ["t_importSubject", "pageReceived"],
        "unless": ["isEmbeddedApplication"],
        "run": ImportBrowserMetadata.name,
    },
}
"""The getting-started configuration, with this module's tasks."""


# -- the cookbook's namespaced "super session" -------------------------------------------------


class CompareResponses(TriggerTask):
    """Compares an applicant's answers to Flora page 3 and Fauna page 6."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        flora = context.trigger_kwargs["flora_page3"]["responses"]
        fauna = context.trigger_kwargs["fauna_page6"]["responses"]
        common = sorted(set(flora) & set(fauna))
        return {
            "common": common,
            "agreeing": sorted(q for q in common if flora[q] == fauna[q]),
            "floraOnly": sorted(set(flora) - set(fauna)),
            "faunaOnly": sorted(set(fauna) - set(flora)),
        }


SUPER_SESSION: dict[str, dict[str, Any]] = {
    "t_compareResponses": {
        "after": ["flora_page3", "fauna_page6"],
        "run": CompareResponses.name,
    },
}
"""The cookbook's applicant-wide configuration (session UID ``applicant:<id>``)."""


# -- what an executor must cope with -------------------------------------------------------------


class FailsOnce(TriggerTask):
    """Fails on its first attempt; a replay (depth 1 or more) succeeds."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if self.request.retries == 0:
            raise ValueError(f"{context.instance_name} fails on its first attempt.")
        return {"attempt": self.request.retries + 1, "kwargs": dict(context.trigger_kwargs)}


class RetriesThenSucceeds(TriggerTask):
    """Retries itself ``times`` times (default 2) after ``cooldown`` s (default 0.5), then succeeds.

    Both come from the kwargs of a ``retry`` trigger, e.g. ``withParams: {"retry": {"times": 1}}``.
    """

    max_retries = 5

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        settings = context.trigger_kwargs.get("retry") or {}
        if self.request.retries < int(settings.get("times", 2)):
            raise self.retry(
                exc=RuntimeError(f"not yet (attempt {self.request.retries + 1})"),
                cooldown=float(settings.get("cooldown", 0.5)),
            )
        return {"attempts": self.request.retries + 1}


class AlwaysRetries(TriggerTask):
    """Retries forever; after ``max_retries`` (2) the framework fails it with MaxRetriesExceeded."""

    max_retries = 2

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise self.retry(exc=ConnectionError("the service is down"), cooldown=0.1)


class WarnsOnOddAnswers(TriggerTask):
    """Warns, through ``context.get_logger_context``, of answers other than yes/no (log level 30).

    Reads the ``responses`` of every trigger it waited for.
    """

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        answers = {
            question: answer
            for kwargs in context.trigger_kwargs.values()
            for question, answer in (kwargs.get("responses") or {}).items()
        }
        with context.get_logger_context({"answers": len(answers)}) as task_log:
            odd = sorted(q for q, a in answers.items() if a not in ("yes", "no"))
            if odd:
                task_log.warning("Odd answers to %s", ", ".join(odd), extra={"context": {"odd": odd}})
        return {"odd": odd}


class FiresFollowUp(TriggerTask):
    """Fires ``followUp`` (with kwargs of its own) through ``context.manager``."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        context.manager.fire("followUp", {"from": context.instance_name, "reason": "checked"})
        return {"fired": "followUp"}


class WhoRunsMe(TriggerTask):
    """Returns the PID of the executor that ran it."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"pid": os.getpid()}


class Sleep(TriggerTask):
    """Sleeps ``seconds`` (default 3; kwargs of a ``nap`` trigger) and returns the executor's PID."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        seconds = float((context.trigger_kwargs.get("nap") or {}).get("seconds", 3))
        log.info("%s sleeps %.1f s in pid %d", context.instance_name, seconds, os.getpid())
        time.sleep(seconds)
        return {"pid": os.getpid(), "slept": seconds}
