"""The cookbook's three recipes, as a user would write them (import paths aside)."""

from __future__ import annotations

import threading
import types
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stream_triggers.manager import FinalizingTriggerManager, TriggerManager, trigger_managers
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages import storage_backends
from stream_triggers.task import TaskContext, TriggerTask
from stream_triggers.testing import DevNullTask, FailingTask, PassThruTask
from stream_triggers.types import TaskConfig, TaskInstance
from tests.support import Session

# -- recipe 1: manager and storage types chosen by settings ------------------------------------


def get_trigger_manager(settings: Any, uid: str) -> TriggerManager:
    """Given a session UID, returns a trigger manager configured from the settings."""
    storage = storage_backends.get(settings.TRIGGER_STORAGE_TYPE, uid)
    return trigger_managers.get(settings.TRIGGER_MANAGER_TYPE, storage)


@pytest.mark.parametrize(
    ("manager_type", "manager_cls"), [("default", TriggerManager), ("finalizing", FinalizingTriggerManager)]
)
def test_manager_and_storage_types_come_from_settings(
    backend: str, registry_env: str, manager_type: str, manager_cls: type
) -> None:
    settings = types.SimpleNamespace(TRIGGER_MANAGER_TYPE=manager_type, TRIGGER_STORAGE_TYPE=backend)
    manager = get_trigger_manager(settings, registry_env)
    assert type(manager) is manager_cls
    assert type(manager.storage) is storage_backends.get_class(backend)

    manager.update_configuration(
        {
            "t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PassThruTask.name},
            "t_done": {"after": ["sessionFinalized"], "run": DevNullTask.name},
        }
    )
    # Each request builds its own manager for the same uid; the session carries over.
    get_trigger_manager(settings, registry_env).fire("firstPageReceived", {"responses": {"name": "Marcus"}})
    get_trigger_manager(settings, registry_env).fire("questionnaireComplete")
    ThreadingTaskRunner.join_all()

    session = Session(get_trigger_manager(settings, registry_env))
    session.assertInstanceFinished(
        "t_importSubject#0",
        {"kwargs": {"firstPageReceived": {"responses": {"name": "Marcus"}}, "questionnaireComplete": {}}},
    )
    if manager_type == "finalizing":
        session.assertInstanceFinished("t_done#0", {})
    else:
        session.assertInstanceMissing("t_done#0")


# -- recipe 2: finalizing a session --------------------------------------------------------------


class CookbookFinalizingTriggerManager(TriggerManager):
    """The cookbook's recipe, as written there."""

    TRIGGER_SESSION_FINALIZED = "sessionFinalized"

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        # Prevent infinite recursion.
        if trigger_name == self.TRIGGER_SESSION_FINALIZED:
            return

        # A session can only be finalized once.
        if self.TRIGGER_SESSION_FINALIZED in self.storage.latest_kwargs:
            return

        # Check for any unresolved tasks, ignoring those waiting for the finalization.
        config: TaskConfig
        for config in self.get_unresolved_tasks():
            if self.TRIGGER_SESSION_FINALIZED not in config.after:
                return

        self.fire(self.TRIGGER_SESSION_FINALIZED)


@pytest.fixture(params=["cookbook", "builtin"])
def finalizing(request: pytest.FixtureRequest, make_storage: Any) -> Iterator[Session]:
    """A session managed by the cookbook's finalizer (registered at runtime) or the built-in one."""
    if request.param == "cookbook":
        key = f"finalizing-{uuid.uuid4().hex}"
        trigger_managers.register(key)(CookbookFinalizingTriggerManager)
    else:
        key = "finalizing"
    try:
        yield Session(trigger_managers.get(key, make_storage("finalizing")))
    finally:
        ThreadingTaskRunner.join_all()
        if request.param == "cookbook":
            trigger_managers.unregister(key)


def finalized_count(session: Session) -> int:
    """How many times sessionFinalized fired (t_onFinalize runs once per firing)."""
    return len(session.storage.instances_of_task("t_onFinalize"))


FINALIZING_WORKFLOW = {
    "t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": PassThruTask.name},
    "t_importResponses": {"after": ["t_importSubject"], "andEvery": "pageReceived", "run": PassThruTask.name},
    "t_computeScore": {"after": ["t_importSubject", "sessionFinalized"], "run": PassThruTask.name},
    "t_onFinalize": {"after": [], "andEvery": "sessionFinalized", "run": DevNullTask.name},
}


def test_session_finalizes_once_everything_else_is_resolved(finalizing: Session) -> None:
    finalizing.manager.update_configuration(FINALIZING_WORKFLOW)
    finalizing.fire("firstPageReceived", {"responses": {"name": "Marcus"}})
    finalizing.fire("pageReceived", {"page": 1})
    assert "sessionFinalized" not in finalizing.storage.latest_kwargs
    finalizing.assertInstanceUnstarted("t_importResponses#0")

    finalizing.fire("questionnaireComplete")
    finalizing.assertInstanceFinished("t_importSubject#0")
    finalizing.assertInstanceFinished("t_importResponses#0")
    # Every other task resolved: the session finalized, and the tasks waiting for it ran.
    assert "sessionFinalized" in finalizing.storage.latest_kwargs
    finalizing.assertInstanceFinished(
        "t_computeScore#0",
        {
            "kwargs": {
                "t_importSubject": {
                    "kwargs": {"firstPageReceived": {"responses": {"name": "Marcus"}}, "questionnaireComplete": {}}
                },
                "sessionFinalized": {},
            }
        },
    )
    assert finalized_count(finalizing) == 1

    # More triggers later do not finalize it again.
    finalizing.fire("pageReceived", {"page": 2})
    finalizing.assertInstanceFinished("t_importResponses#1")
    finalizing.fire("somethingElse")
    assert finalized_count(finalizing) == 1


def test_a_failed_task_holds_finalization_until_it_is_resolved(finalizing: Session) -> None:
    finalizing.manager.update_configuration(
        {
            "t_ok": {"after": ["go"], "run": DevNullTask.name},
            "t_bad": {"after": ["go"], "run": FailingTask.name},
            "t_onFinalize": {"after": [], "andEvery": "sessionFinalized", "run": DevNullTask.name},
        }
    )
    finalizing.fire("go")
    finalizing.assertInstanceFailed("t_bad#0", RuntimeError)
    assert finalized_count(finalizing) == 0

    # Skipping without a cascade fires no trigger: the recipe (checking in _post_fire
    # only) waits for the next fire; the built-in manager finalizes at once.
    finalizing.manager.skip_failed_instance("t_bad#0")
    ThreadingTaskRunner.join_all()
    recipe = isinstance(finalizing.manager, CookbookFinalizingTriggerManager)
    assert finalized_count(finalizing) == (0 if recipe else 1)
    finalizing.fire("anything")
    assert finalized_count(finalizing) == 1


def test_a_task_that_never_ran_holds_finalization(finalizing: Session) -> None:
    finalizing.manager.update_configuration(
        {
            "t_first": {"after": ["a"], "run": DevNullTask.name},
            "t_second": {"after": ["b"], "run": DevNullTask.name},
            "t_onFinalize": {"after": [], "andEvery": "sessionFinalized", "run": DevNullTask.name},
        }
    )
    finalizing.fire("a")
    assert finalized_count(finalizing) == 0
    finalizing.fire("b")
    assert finalized_count(finalizing) == 1
    finalizing.assertUnresolvedTasks([])


def test_builtin_finalizer_fires_once_when_parallel_tasks_finish_together(make_storage: Any) -> None:
    for attempt in range(5):
        session = Session(trigger_managers.get("finalizing", make_storage(f"parallel-{attempt}")))
        configuration: dict[str, Any] = {f"t_{n}": {"after": ["go"], "run": DevNullTask.name} for n in range(8)}
        configuration["t_onFinalize"] = {"after": [], "andEvery": "sessionFinalized", "run": DevNullTask.name}
        configuration["t_report"] = {"after": ["sessionFinalized"], "run": DevNullTask.name}
        session.manager.update_configuration(configuration)
        session.fire("go")  # eight tasks finish (and cascade) at nearly the same time
        assert finalized_count(session) == 1, f"attempt {attempt}"
        session.assertInstanceFinished("t_report#0", {})
        session.assertUnresolvedTasks([])


# -- recipe 3: namespaced "super session" uids ---------------------------------------------------


class CompareResponses(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        flora = context.trigger_kwargs["flora_page3"]["responses"]
        fauna = context.trigger_kwargs["fauna_page6"]["responses"]
        return {"same": sorted(set(flora) & set(fauna))}


def start_questionnaire(storage_type: str, questionnaire: str, session_uid: str, applicant_id: int) -> None:
    """What the 'start' view does: set up the questionnaire's session and the applicant's super session."""
    trigger_manager = TriggerManager(storage_backends.get(storage_type, session_uid))
    trigger_manager.update_configuration(
        {f"t_import_{questionnaire}": {"after": [], "andEvery": "pageReceived", "run": DevNullTask.name}},
    )
    super_trigger_manager = TriggerManager(storage_backends.get(storage_type, f"applicant:{applicant_id}"))
    super_trigger_manager.update_configuration(
        {"t_compareResponses": {"after": ["flora_page3", "fauna_page6"], "run": CompareResponses.name}},
    )


def responses(storage_type: str, questionnaire: str, session_uid: str, applicant_id: int, page: int) -> None:
    """What the 'responses' view does: fire in the questionnaire's session and in the super session."""
    answers = {f"{questionnaire}-q{page}": "yes", "shared": page}
    TriggerManager(storage_backends.get(storage_type, session_uid)).fire("pageReceived", {"responses": answers})
    TriggerManager(storage_backends.get(storage_type, f"applicant:{applicant_id}")).fire(
        trigger_name=f"{questionnaire}_page{page}",
        trigger_kwargs={"responses": answers},
    )


def test_super_session_across_two_questionnaires(backend: str, registry_env: str) -> None:
    applicant = 42
    flora_uid, fauna_uid = f"{registry_env}-flora", f"{registry_env}-fauna"
    start_questionnaire(backend, "flora", flora_uid, applicant)
    start_questionnaire(backend, "fauna", fauna_uid, applicant)

    def answer(questionnaire: str, uid: str, pages: range) -> None:
        for page in pages:
            responses(backend, questionnaire, uid, applicant, page)

    # The applicant works through both questionnaires at once.
    workers = [
        threading.Thread(target=answer, args=("flora", flora_uid, range(1, 5))),
        threading.Thread(target=answer, args=("fauna", fauna_uid, range(1, 8))),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    ThreadingTaskRunner.join_all()

    super_session = Session(TriggerManager(storage_backends.get(backend, f"applicant:{applicant}")))
    super_session.assertInstanceFinished("t_compareResponses#0", {"same": ["shared"]})
    super_session.assertInstanceMissing("t_compareResponses#1")
    kwargs = super_session.storage["t_compareResponses#0"].kwargs
    assert kwargs["flora_page3"] == {"responses": {"flora-q3": "yes", "shared": 3}}
    assert kwargs["fauna_page6"] == {"responses": {"fauna-q6": "yes", "shared": 6}}

    # The questionnaire sessions kept to themselves.
    flora = storage_backends.get(backend, flora_uid)
    assert len(flora.instances_of_task("t_import_flora")) == 4
    assert "t_compareResponses" not in flora.tasks
    assert len(storage_backends.get(backend, fauna_uid).instances_of_task("t_import_fauna")) == 7
    assert "t_import_flora" not in super_session.storage.tasks
