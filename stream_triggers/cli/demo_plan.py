"""The demo's sessions: questionnaires and the cookbook's applicant super session, and the
triggers fired for them - shuffled and interleaved, deterministic for a given seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from stream_triggers.cli.demo_tasks import QUESTIONNAIRE, SUPER_SESSION

__all__ = ["Fire", "Plan", "plan_sessions"]

_NAMES = ("Marcus", "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret")
_AGENTS = ("Firefox/126.0", "Chrome/125.0.6422", "Safari/17.4")
_QUESTIONS = ("likesPlants", "likesAnimals", "outdoors", "city", "gardens", "pets", "hikes", "zoo")


@dataclass
class Fire:
    """One step of the plan: a trigger (with kwargs) fired for a session."""

    session: str
    trigger: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    configurations: dict[str, dict[str, Any]]
    """Session UID -> configuration, in the order the sessions start."""
    fires: list[Fire]


def plan_sessions(sessions: int, seed: int) -> Plan:
    """The demo's sessions and the (shuffled, interleaved) triggers fired for them."""
    rng = random.Random(seed)
    configurations: dict[str, dict[str, Any]] = {}
    per_session: dict[str, list[list[Fire]]] = {}

    def questionnaire(uid: str, pages: int, embedded: bool, super_uid: str | None = None) -> None:
        configurations[uid] = QUESTIONNAIRE
        name = rng.choice(_NAMES)
        agent = rng.choice(_AGENTS)
        # Each inner list is fired as one step: a page, then (if any) the super session's trigger.
        steps: list[list[Fire]] = []
        for number in range(1, pages + 1):
            responses = {q: rng.choice(("yes", "no")) for q in rng.sample(_QUESTIONS, 3)}
            step = [Fire(uid, "pageReceived", {"number": number, "responses": responses, "userAgent": agent})]
            if number == 1:
                step.insert(0, Fire(uid, "firstPageReceived", {"responses": {"name": name, **responses}}))
            if super_uid is not None:
                kind = uid.split(":")[0]
                step.append(Fire(super_uid, f"{kind}_page{number}", {"responses": responses}))
            steps.append(step)
        steps.append([Fire(uid, "questionnaireComplete")])
        if embedded:
            steps.append([Fire(uid, "isEmbeddedApplication")])
        rng.shuffle(steps)
        per_session[uid] = steps

    for n in range(1, sessions + 1):
        questionnaire(f"questionnaire-{n}", pages=rng.randint(2, 4), embedded=n % 3 == 0)
    applicant = f"applicant:{rng.randint(1000, 9999)}"
    configurations[applicant] = SUPER_SESSION
    number = applicant.split(":")[1]
    questionnaire(f"flora:{number}", pages=4, embedded=False, super_uid=applicant)
    questionnaire(f"fauna:{number}", pages=6, embedded=False, super_uid=applicant)

    fires: list[Fire] = []
    while per_session:
        uid = rng.choice(sorted(per_session))
        fires.extend(per_session[uid].pop(0))
        if not per_session[uid]:
            del per_session[uid]
    return Plan(configurations, fires)
