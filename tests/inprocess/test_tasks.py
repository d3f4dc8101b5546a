"""Trigger tasks: naming, results, retries, self-skipping, exception context, logging, context.manager."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from stream_triggers.exceptions import with_context
from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.runners import threading as threading_runner
from stream_triggers.task import MaxRetriesExceeded, TaskContext, TriggerTask, resolve_task, task_registry
from stream_triggers.testing import DevNullTask, PassThruTask, SelfRetryingTask, SelfSkippingTask
from stream_triggers.types import TaskInstance
from tests.support import Session, StorageFactory

# -- naming and registration ---------------------------------------------------------------


class ImportSubject(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        page = context.trigger_kwargs["firstPageReceived"]["responses"]
        return {"subjectId": f"subject-{page['name']}"}


class Renamed(TriggerTask):
    name = "custom.registered.Name"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"who": self.name}


class Scribbler(TriggerTask):
    """Edits the kwargs it was given, nested maps included."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        for trigger_kwargs in context.trigger_kwargs.values():
            trigger_kwargs["answers"]["q1"] = "scribbled"
            trigger_kwargs["extra"] = True
        return {}


def test_a_task_editing_its_kwargs_changes_nothing_stored(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_scribble": {"after": ["pageReceived"], "run": Scribbler.name},
            "t_wait": {"after": ["pageReceived", "never"], "run": PassThruTask.name},
        }
    )
    session.fire("pageReceived", {"answers": {"q1": "yes"}})
    session.assertInstanceFinished("t_scribble#0", {})
    storage = session.storage
    assert storage.latest_kwargs["pageReceived"] == {"answers": {"q1": "yes"}}
    assert storage["t_scribble#0"].kwargs == {"pageReceived": {"answers": {"q1": "yes"}}}
    assert storage["t_wait#0"].kwargs == {"pageReceived": {"answers": {"q1": "yes"}}}


def test_a_task_is_named_after_its_module_and_class_and_registers_itself() -> None:
    assert ImportSubject.name == f"{__name__}.ImportSubject"
    assert task_registry[ImportSubject.name] is ImportSubject
    assert resolve_task(ImportSubject.name) is ImportSubject
    assert PassThruTask.name == "stream_triggers.testing.PassThruTask"


def test_a_task_may_choose_its_own_name(session: Session) -> None:
    assert resolve_task("custom.registered.Name") is Renamed
    session.manager.update_configuration({"t_renamed": {"after": ["go"], "run": "custom.registered.Name"}})
    session.fire("go")
    session.assertInstanceFinished("t_renamed#0", {"who": "custom.registered.Name"})


def test_the_result_becomes_the_instance_result(session: Session) -> None:
    session.manager.update_configuration(
        {"t_importSubject": {"after": ["firstPageReceived", "questionnaireComplete"], "run": ImportSubject.name}},
    )
    session.fire("firstPageReceived", {"responses": {"name": "Marcus"}})
    session.fire("questionnaireComplete")
    session.assertInstanceFinished("t_importSubject#0", {"subjectId": "subject-Marcus"})


# -- results that cannot cascade -------------------------------------------------------------


class ReturnsAList(TriggerTask):
    def _run(self, context: TaskContext) -> Any:
        return ["not", "a", "mapping"]


class ReturnsASet(TriggerTask):
    def _run(self, context: TaskContext) -> Any:
        return {"ids": {1, 2, 3}}


def test_a_non_mapping_result_fails_with_a_clear_error(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_list": {"after": ["go"], "run": ReturnsAList.name},
            "t_next": {"after": ["t_list"], "run": DevNullTask.name},
        }
    )
    session.fire("go")
    session.assertInstanceFailed("t_list#0", ValueError)
    metadata = session.storage["t_list#0"].metadata
    assert "must return a Mapping" in metadata[TaskInstance.META_EXCEPTION_INFO]
    assert ReturnsAList.name in metadata[TaskInstance.META_EXCEPTION_INFO]
    assert "not" in metadata[TaskInstance.META_EXCEPTION_CONTEXT]["actual_result"]
    session.assertInstanceMissing("t_next#0")


def test_a_result_the_payload_rules_accept_finishes_though_json_cannot_carry_it(session: Session) -> None:
    session.manager.update_configuration({"t_set": {"after": ["go"], "run": ReturnsASet.name}})
    session.fire("go")
    session.assertInstanceFinished("t_set#0", {"ids": {1, 2, 3}})  # (the rules of every input, every storage)


# -- retries ----------------------------------------------------------------------------------


@pytest.fixture
def two_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SelfRetryingTask, "max_retries", 2)


def test_a_task_retries_itself(session: Session, two_retries: None) -> None:
    session.manager.update_configuration(
        {"t_replay": {"after": ["start"], "run": SelfRetryingTask.name, "withParams": {"retries": {"max": 2}}}},
    )
    session.fire("start")
    # Each retry is a new instance; the ones that retried end up 'replayed'.
    session.assertInstanceReplayed("t_replay#0")
    session.assertInstanceReplayed("t_replay#1")
    session.assertInstanceFinished("t_replay#2", {"count": 2})
    session.assertInstanceMissing("t_replay#3")
    assert session.storage["t_replay#2"].metadata[TaskInstance.META_PARENT] == "t_replay#1"
    session.assertUnresolvedInstances([])


def test_retrying_beyond_max_retries_fails(session: Session, two_retries: None) -> None:
    session.manager.update_configuration(
        {"t_replay": {"after": ["start"], "run": SelfRetryingTask.name, "withParams": {"retries": {"max": 3}}}},
    )
    session.fire("start")
    session.assertInstanceReplayed("t_replay#0")
    session.assertInstanceReplayed("t_replay#1")
    session.assertInstanceFailed("t_replay#2", MaxRetriesExceeded)
    session.assertInstanceMissing("t_replay#3")
    assert "max_retries" in session.storage["t_replay#2"].metadata[TaskInstance.META_EXCEPTION_INFO]
    session.assertUnresolvedInstances(["t_replay#2"])


class FlakyApi(TriggerTask):
    """Fails its first attempt with a (simulated) connection error, then succeeds."""

    max_retries = 3

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if self.request.retries == 0:
            try:
                raise ConnectionError("api unreachable")
            except ConnectionError as exc:
                raise self.retry(exc=exc, metadata={"attempt": 1}) from exc
        return {"attempts": self.request.retries + 1}


def test_retry_records_the_exception_on_the_replayed_instance(session: Session) -> None:
    session.manager.update_configuration({"t_api": {"after": ["go"], "run": FlakyApi.name}})
    session.fire("go")
    session.assertInstanceReplayed("t_api#0")
    session.assertInstanceFinished("t_api#1", {"attempts": 2})
    metadata = session.storage["t_api#0"].metadata
    assert metadata[TaskInstance.META_EXCEPTION_TYPE] == "builtins.ConnectionError"
    assert "api unreachable" in metadata[TaskInstance.META_EXCEPTION_INFO]
    assert metadata["attempt"] == 1


class RetryWithOtherKwargs(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if "fixed" not in context.trigger_kwargs:
            raise self.retry(replacement_kwargs={"fixed": {"by": "retry"}})
        return {"kwargs": context.trigger_kwargs}


def test_retry_with_replacement_kwargs(session: Session) -> None:
    session.manager.update_configuration({"t_fix": {"after": ["go"], "run": RetryWithOtherKwargs.name}})
    session.fire("go", {"broken": True})
    session.assertInstanceReplayed("t_fix#0")
    session.assertInstanceFinished("t_fix#1", {"kwargs": {"fixed": {"by": "retry"}}})
    assert session.storage["t_fix#0"].kwargs == {"go": {"broken": True}}


COOLDOWN = 0.2
runs: list[tuple[str, float]] = []
runs_lock = threading.Lock()


class CoolDown(TriggerTask):
    """Retries once after a cooldown, recording when each attempt ran."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with runs_lock:
            runs.append((f"cooldown#{self.request.retries}", time.monotonic()))
        if self.request.retries == 0:
            raise self.retry(cooldown=COOLDOWN)
        return {}


quick_ran = threading.Event()


class Quick(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with runs_lock:
            runs.append(("quick", time.monotonic()))
        quick_ran.set()
        return {}


def test_retry_cooldown_delays_the_replay_without_blocking_other_sessions(make_session, monkeypatch) -> None:
    runs.clear()
    quick_ran.clear()
    cooldowns: list[tuple[float, bool]] = []

    def cool_down(seconds: float) -> None:
        """The replay's cooldown, lasting until the other session's task ran (10 s at most)."""
        cooldowns.append((seconds, quick_ran.wait(10)))

    monkeypatch.setattr(threading_runner, "time", SimpleNamespace(sleep=cool_down))
    slow, other = make_session("slow"), make_session("other")
    slow.manager.update_configuration({"t_cool": {"after": ["go"], "run": CoolDown.name}})
    other.manager.update_configuration({"t_quick": {"after": ["go"], "run": Quick.name}})

    slow.manager.fire("go")
    deadline = time.monotonic() + 5
    while not any(name == "cooldown#0" for name, _ in runs) and time.monotonic() < deadline:
        time.sleep(0.01)
    other.manager.fire("go")
    ThreadingTaskRunner.join_all()

    slow.assertInstanceReplayed("t_cool#0")
    slow.assertInstanceFinished("t_cool#1", {})
    other.assertInstanceFinished("t_quick#0", {})
    when = dict(runs)
    # The replay waited COOLDOWN, and the other session's task ran while it was cooling down.
    assert cooldowns == [(COOLDOWN, True)]
    assert when["quick"] < when["cooldown#1"]
    assert slow.storage["t_cool#1"].cooldown == COOLDOWN


# -- skipping itself, replay depth --------------------------------------------------------------


def test_a_task_skips_itself(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_skipper": {"after": ["integrity"], "run": SelfSkippingTask.name},
            "t_next": {"after": ["t_skipper"], "run": DevNullTask.name},
        }
    )
    session.fire("integrity", {"foo": "bar", "baz": "luhrmann"})
    session.assertInstanceSkipped("t_skipper#0")
    # SelfSkippingTask puts its kwargs into the metadata it skips with.
    assert session.storage["t_skipper#0"].metadata["kwargs"] == {"integrity": {"foo": "bar", "baz": "luhrmann"}}
    session.assertInstanceMissing("t_next#0")  # skipping does not cascade
    session.assertUnresolvedTasks(["t_next"])


class FailsUntilReplayed(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        if self.request.retries < context.trigger_kwargs["go"]["until"]:
            raise RuntimeError(f"attempt {self.request.retries}")
        return {"retries": self.request.retries}


def test_request_retries_is_the_replay_depth(session: Session) -> None:
    session.manager.update_configuration({"t_depth": {"after": ["go"], "run": FailsUntilReplayed.name}})
    session.fire("go", {"until": 2})
    session.assertInstanceFailed("t_depth#0", RuntimeError)
    session.manager.replay_failed_instance("t_depth#0")
    ThreadingTaskRunner.join_all()
    session.assertInstanceFailed("t_depth#1", RuntimeError)
    session.manager.replay_failed_instance("t_depth#1")
    ThreadingTaskRunner.join_all()
    session.assertInstanceFinished("t_depth#2", {"retries": 2})


# -- exception context -----------------------------------------------------------------------


class SpamCheck(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise with_context(
            exc=ValueError("Response data failed spam check."),
            context={"spam_score": 0.25, "threshold": 0.5, "odd": object()},
        )


def test_with_context_attaches_context_to_the_failure(session: Session) -> None:
    session.manager.update_configuration({"t_spam": {"after": ["go"], "run": SpamCheck.name}})
    session.fire("go")
    session.assertInstanceFailed("t_spam#0", ValueError)
    context = session.storage["t_spam#0"].metadata[TaskInstance.META_EXCEPTION_CONTEXT]
    assert context["spam_score"] == 0.25
    assert context["threshold"] == 0.5
    assert "object" in context["odd"]  # what JSON cannot carry is kept as its repr


def test_with_context_merges_and_keeps_a_foreign_context() -> None:
    exc = with_context(KeyError("k"), {"a": 1})
    assert with_context(exc, {"b": 2}) is exc
    assert exc.context == {"a": 1, "b": 2}

    odd = RuntimeError("x")
    odd.context = "not a mapping"
    assert with_context(odd, {"c": 3}).context == {"_original_context": "not a mapping", "c": 3}


# -- the logger context ----------------------------------------------------------------------


class Collect(logging.Handler):
    """Keeps every record it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_log() -> Any:
    logger = logging.getLogger(f"{__name__}.app")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


class Chatty(TriggerTask):
    """Logs at the level its trigger asks for, through the task's logger context."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        level = context.trigger_kwargs["go"]["level"]
        logger = logging.getLogger(f"{__name__}.app")
        with context.get_logger_context(logger, context={"app_version": "1.2"}) as log:
            log.debug("starting")
            if level:
                log.log(level, "something to say", extras={"context": {"page": 3}})
        return {}


def test_the_max_log_level_is_recorded_on_the_instance(session: Session, app_log: Any) -> None:
    session.manager.update_configuration({"t_chatty": {"after": [], "andEvery": "go", "run": Chatty.name}})
    session.fire("go", {"level": logging.WARNING})
    session.fire("go", {"level": logging.ERROR})
    session.fire("go", {"level": 0})

    warned, erred, quiet = (session.storage[f"t_chatty#{n}"] for n in range(3))
    assert warned.metadata[TaskInstance.META_LOG_LEVEL] == logging.WARNING
    assert (warned.log_level, warned.log_level_name) == (logging.WARNING, "WARNING")
    assert (erred.log_level, erred.log_level_name) == (logging.ERROR, "ERROR")
    assert (quiet.log_level, quiet.log_level_name) == (logging.DEBUG, "DEBUG")
    # Only ERROR and above need to be looked at (and marked resolved).
    assert [i.name for i in session.storage.get_instances_with_unresolved_logs()] == ["t_chatty#1"]


def test_log_level_is_notset_before_the_instance_ran(session: Session) -> None:
    session.manager.update_configuration({"t_wait": {"after": ["a", "b"], "run": Chatty.name}})
    session.fire("a")
    waiting = session.storage["t_wait#0"]
    assert waiting.log_level == logging.NOTSET
    assert waiting.log_level_name == "NOTSET"


def test_log_records_carry_context_variables(session: Session, app_log: Any) -> None:
    _, handler = app_log
    session.manager.update_configuration({"t_chatty": {"after": ["go"], "run": Chatty.name}})
    session.fire("go", {"level": logging.WARNING})
    (debug, warning) = handler.records
    assert debug.getMessage() == "starting"
    assert debug.context == {"app_version": "1.2"}
    # Per-message context is merged with the logger's.
    assert warning.levelno == logging.WARNING
    assert warning.context == {"app_version": "1.2", "page": 3}


class QuietLogger(TriggerTask):
    """Logs through a logger of its own that is set to WARNING."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        logger = logging.getLogger(f"{__name__}.quiet")
        logger.setLevel(logging.WARNING)
        with context.get_logger_context(logger) as log:
            log.info("not for this logger")
            if context.trigger_kwargs["go"]["warn"]:
                log.warning("for this logger")
        return {}


def test_a_logger_the_task_passes_decides_which_records_count(session: Session) -> None:
    # The original put its level tracker on that logger: a record it drops is not recorded.
    session.manager.update_configuration({"t_quiet": {"after": [], "andEvery": "go", "run": QuietLogger.name}})
    session.fire("go", {"warn": False})
    session.fire("go", {"warn": True})
    assert session.storage["t_quiet#0"].log_level == logging.NOTSET
    assert session.storage["t_quiet#1"].log_level == logging.WARNING


class PositionalContext(TriggerTask):
    """Passes the context dict positionally, as the logging docs show."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        with context.get_logger_context({"app_version": "2.0"}) as log:
            log.warning("hello")
        return {}


def test_get_logger_context_takes_the_context_dict_positionally(session: Session) -> None:
    handler = Collect()
    default_logger = logging.getLogger("stream_triggers.tasks")  # where task logs go by default
    default_logger.addHandler(handler)
    try:
        session.manager.update_configuration({"t_pos": {"after": ["go"], "run": PositionalContext.name}})
        session.fire("go")
    finally:
        default_logger.removeHandler(handler)
    session.assertInstanceFinished("t_pos#0", {})
    assert session.storage["t_pos#0"].log_level_name == "WARNING"
    (record,) = handler.records
    assert record.context == {"app_version": "2.0"}


class RaisesInside(TriggerTask):
    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        logger = logging.getLogger(f"{__name__}.app")
        with context.get_logger_context(logger) as log:
            log.info("about to fail")
            raise with_context(LookupError("no such subject"), {"subject": 42})


def test_an_exception_in_the_logger_context_is_logged_and_recorded(session: Session, app_log: Any) -> None:
    _, handler = app_log
    session.manager.update_configuration({"t_raise": {"after": ["go"], "run": RaisesInside.name}})
    session.fire("go")
    session.assertInstanceFailed("t_raise#0", LookupError)
    instance = session.storage["t_raise#0"]
    assert instance.log_level == logging.ERROR
    assert instance.metadata[TaskInstance.META_EXCEPTION_CONTEXT] == {"subject": 42}
    logged = [r for r in handler.records if r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert "no such subject" in logged[0].getMessage()
    assert logged[0].exc_info is not None
    assert logged[0].context == {"subject": 42}
    assert [i.name for i in session.storage.get_instances_with_unresolved_logs()] == ["t_raise#0"]


# -- context.manager ---------------------------------------------------------------------------


class FiresMore(TriggerTask):
    """Fires one trigger per item it was given, through its own manager."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        assert isinstance(context.manager, TriggerManager)
        assert context.task_instance.name == context.instance_name
        for item in context.trigger_kwargs["batch"]["items"]:
            context.manager.fire("itemReady", {"item": item})
        return {"fired": len(context.trigger_kwargs["batch"]["items"])}


def test_a_task_fires_more_triggers_through_context_manager(session: Session) -> None:
    session.manager.update_configuration(
        {
            "t_split": {"after": ["batch"], "run": FiresMore.name},
            "t_item": {"after": [], "andEvery": "itemReady", "run": PassThruTask.name},
            "t_summary": {"after": ["t_split", "itemReady"], "run": PassThruTask.name},
        }
    )
    session.fire("batch", {"items": ["a", "b", "c"]})
    session.assertInstanceFinished("t_split#0", {"fired": 3})
    for index, item in enumerate("abc"):
        session.assertInstanceFinished(f"t_item#{index}", {"kwargs": {"itemReady": {"item": item}}})
    session.assertInstanceFinished("t_summary#0", {"kwargs": {"t_split": {"fired": 3}, "itemReady": {"item": "a"}}})
    session.assertUnresolvedTasks([])


class Recorded(TriggerManager):
    """A manager subclass; tasks' context.manager must be one too."""

    seen: list[str] = []

    def _post_fire(self, trigger_name: str, tasks_scheduled: list[TaskInstance]) -> None:
        type(self).seen.append(trigger_name)


def test_context_manager_is_the_same_kind_of_manager(make_storage: StorageFactory) -> None:
    Recorded.seen = []
    manager = Recorded(make_storage("recorded"))
    manager.update_configuration(
        {
            "t_split": {"after": ["batch"], "run": FiresMore.name},
            "t_item": {"after": [], "andEvery": "itemReady", "run": DevNullTask.name},
        }
    )
    manager.fire("batch", {"items": ["x", "y"]})
    ThreadingTaskRunner.join_all()
    assert sorted(Recorded.seen) == sorted(["batch", "itemReady", "itemReady", "t_split", "t_item", "t_item"])
