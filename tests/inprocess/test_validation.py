"""Bad configurations and bad payloads are refused at the call site, and change nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest

from stream_triggers.engine.errors import InvalidConfiguration
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.memory import MemoryStorage
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from tests.support import Session

GOOD = {"t_good": {"after": ["a"], "run": PassThruTask.name}}

BAD_CONFIGURATIONS = [
    pytest.param({"run": DevNullTask.name}, "after", id="missing-after"),
    pytest.param({"after": ["a"]}, "run", id="missing-run"),
    pytest.param({"after": "a", "run": DevNullTask.name}, "after", id="after-is-a-string"),
    pytest.param({"after": {"a": 1}, "run": DevNullTask.name}, "after", id="after-is-a-dict"),
    pytest.param({"after": ["a", 1], "run": DevNullTask.name}, "after", id="after-holds-a-number"),
    pytest.param({"after": ["a", ""], "run": DevNullTask.name}, "after", id="after-holds-an-empty-name"),
    pytest.param({"after": ["a"], "unless": "stop", "run": DevNullTask.name}, "unless", id="unless-is-a-string"),
    pytest.param({"after": ["a"], "unless": [None], "run": DevNullTask.name}, "unless", id="unless-holds-none"),
    pytest.param({"after": [], "andEvery": ["page"], "run": DevNullTask.name}, "andEvery", id="and-every-is-a-list"),
    pytest.param({"after": [], "andEvery": 3, "run": DevNullTask.name}, "andEvery", id="and-every-is-a-number"),
    pytest.param(
        {"after": ["a"], "run": DevNullTask.name, "withParams": {"model": "Psych 01"}},
        "withParams",
        id="with-params-not-dict-of-dicts",
    ),
    pytest.param(
        {"after": ["a"], "run": DevNullTask.name, "withParams": [{"a": {}}]}, "withParams", id="with-params-a-list"
    ),
    pytest.param({"after": ["a"], "run": 42}, "run", id="run-is-a-number"),
    pytest.param({"after": ["a"], "run": DevNullTask}, "run", id="run-is-a-class"),
    pytest.param({"after": ["a"], "run": ""}, "run", id="run-is-empty"),
    pytest.param({"after": ["a"], "run": DevNullTask.name, "using": 7}, "using", id="using-is-a-number"),
]


@pytest.mark.parametrize(("directives", "directive"), BAD_CONFIGURATIONS)
def test_a_bad_directive_is_refused_naming_task_and_directive(
    session: Session, directives: dict[str, Any], directive: str
) -> None:
    session.manager.update_configuration(GOOD)
    session.fire("a", {"n": 1})
    before = session.storage.debug_repr()

    with pytest.raises(ValueError, match=f"t_broken.*{directive}") as caught:
        # A good task in the same payload is not applied either.
        session.manager.update_configuration(
            {"t_other": {"after": ["b"], "run": DevNullTask.name}, "t_broken": directives}
        )
    assert isinstance(caught.value, InvalidConfiguration)
    assert caught.value.task == "t_broken"
    assert caught.value.directive == directive

    assert session.storage.debug_repr() == before
    assert "t_other" not in session.storage.tasks
    # The session still works.
    session.fire("b")
    session.assertInstanceMissing("t_other#0")


def test_a_configuration_must_be_a_mapping_of_mappings(session: Session) -> None:
    with pytest.raises(ValueError, match="mapping"):
        session.manager.update_configuration([("t_x", {"after": ["a"], "run": DevNullTask.name})])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_x"):
        session.manager.update_configuration({"t_x": ["after", "a"]})  # type: ignore[dict-item]
    assert dict(session.storage.tasks) == {}


def test_an_empty_configuration_changes_nothing(session: Session) -> None:
    session.manager.update_configuration(GOOD)
    session.manager.update_configuration({})
    assert list(session.storage.tasks) == ["t_good"]


def test_updating_a_task_replaces_its_configuration_only(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_keep": {"after": ["a"], "run": DevNullTask.name},
            "t_change": {"after": ["a"], "run": FailingTask.name},
        }
    )
    session.manager.update_configuration({"t_change": {"after": ["a"], "run": PassThruTask.name}})
    tasks = session.storage.tasks
    assert tasks["t_keep"].run == DevNullTask.name
    assert tasks["t_change"].run == PassThruTask.name
    session.fire("a")
    session.assertInstanceFinished("t_change#0", {"kwargs": {"a": {}}})


class Opaque:
    """Not something JSON can carry."""


BAD_KWARGS = [
    pytest.param(["not", "a", "mapping"], "mapping", id="a-list"),
    pytest.param("text", "mapping", id="a-string"),
    pytest.param(Opaque(), "mapping", id="an-object"),
    pytest.param({"who": Opaque()}, "who", id="an-object-inside"),
    pytest.param({"deep": {"er": [1, {"x": Opaque()}]}}, "deep", id="an-object-deep-inside"),
    pytest.param({1: "numeric key"}, "1", id="a-non-string-key"),
]


@pytest.mark.parametrize(("kwargs", "named"), BAD_KWARGS)
def test_fire_refuses_kwargs_json_cannot_carry(session: Session, kwargs: Any, named: str) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a", "b"], "run": PassThruTask.name}})
    before = session.storage.debug_repr()
    with pytest.raises(ValueError, match=named) as caught:
        session.manager.fire("a", kwargs)
    assert "'a'" in str(caught.value)  # the message names the trigger
    ThreadingTaskRunner.join_all()
    assert session.storage.debug_repr() == before
    assert "a" not in session.storage.latest_kwargs
    session.assertInstanceMissing("t_x#0")


@pytest.mark.parametrize("name", ["", None, 5, ["a"]])
def test_fire_refuses_a_bad_trigger_name(session: Session, name: Any) -> None:
    with pytest.raises(ValueError, match="trigger name"):
        session.manager.fire(name)


def test_fire_accepts_json_like_values_and_copies_them(session: Session) -> None:
    session.manager.update_configuration({"t_x": {"after": ["a"], "run": PassThruTask.name}})
    kwargs = {"text": "é", "n": 1, "f": 1.5, "ok": True, "none": None, "list": [1, "2", {"3": [4]}], "tuple": (1, 2)}
    kwargs |= {"ids": {1, 2}, "bytes": b"x", "nan": math.inf}  # (the payload rules: what the storages carry)
    session.fire("a", kwargs)
    kwargs["text"] = "changed afterwards"
    kwargs["list"][2]["3"].append(5)
    session.assertInstanceFinished(
        "t_x#0",
        {
            "kwargs": {
                "a": {
                    "text": "é",
                    "n": 1,
                    "f": 1.5,
                    "ok": True,
                    "none": None,
                    "list": [1, "2", {"3": [4]}],
                    "tuple": (1, 2),
                    "ids": {1, 2},
                    "bytes": b"x",
                    "nan": math.inf,
                }
            }
        },
    )


def test_replay_and_skip_refuse_payloads_json_cannot_carry(session: Session) -> None:
    session.manager.update_configuration({"t_bad": {"after": ["a"], "run": FailingTask.name}})
    session.fire("a")
    with pytest.raises(ValueError, match="Replacement"):
        session.manager.replay_failed_instance("t_bad#0", replacement_kwargs={"a": {Opaque()}})
    with pytest.raises(ValueError):
        session.manager.replay_failed_instance("t_bad#0", replacement_kwargs=["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Result"):
        session.manager.skip_failed_instance("t_bad#0", cascade=True, result={"x": Opaque()})
    session.assertInstanceFailed("t_bad#0", RuntimeError)
    session.assertInstanceMissing("t_bad#1")


def test_a_session_uid_must_be_a_non_empty_string() -> None:
    with pytest.raises(ValueError, match="UID"):
        MemoryStorage("")
    with pytest.raises(ValueError, match="UID"):
        MemoryStorage(42)  # type: ignore[arg-type]


# -- configurations built once, shared by sessions configured alike -----------------------


def test_sessions_configured_alike_share_their_task_configs() -> None:
    from stream_triggers.engine import build_task_configs

    configuration = {
        "t_a": {"after": ["a", "b"], "run": PassThruTask.name, "withParams": {"a": {"x": 1}}, "team": ["x"]},
        "t_b": {"after": ["t_a"], "unless": ["stop"], "run": DevNullTask.name},
    }
    first = build_task_configs(configuration)
    again = build_task_configs({name: dict(directives) for name, directives in configuration.items()})
    assert first == again and all(again[name] is first[name] for name in first)
    assert again is not first  # callers get their own dict
    other = build_task_configs({**configuration, "t_b": {"after": ["t_a"], "run": DevNullTask.name}})
    assert other["t_a"] is not first["t_a"] and other["t_b"].unless == frozenset()


def test_a_configuration_is_not_mistaken_for_one_with_the_same_json() -> None:
    from stream_triggers.engine import build_task_configs

    build_task_configs({"1": {"after": ["a"], "run": DevNullTask.name}})
    with pytest.raises(InvalidConfiguration, match="task names must be non-empty strings"):
        build_task_configs({1: {"after": ["a"], "run": DevNullTask.name}})
    build_task_configs({"t": {"after": ["a"], "run": DevNullTask.name, "retries": 1}})
    built = build_task_configs({"t": {"after": ["a"], "run": DevNullTask.name, "retries": True}})
    assert built["t"].extras["retries"] is True
