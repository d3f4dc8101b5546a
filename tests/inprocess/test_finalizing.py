"""FinalizingTriggerManager finalizes however the last instance got resolved.

A session whose last task skips itself, or whose last failed instance is skipped
without a cascade, fires nothing afterwards: the check must not hang on ``_post_fire``
alone.  The stream worker runs the same manager over its batch storage, so the same
inputs through that storage must finalize too.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from stream_triggers.engine import ConfigurationUpdated, SkipRequested, StatusReported, TriggerFired
from stream_triggers.kafka.topics import Topics
from stream_triggers.manager import FinalizingTriggerManager
from stream_triggers.stream.outputs import OutputSink
from stream_triggers.stream.partition import SessionEntry
from stream_triggers.stream.session import WorkerRunners, WorkerSessionStorage
from stream_triggers.testing import DevNullTask, FailingTask, SelfSkippingTask
from stream_triggers.types import Status
from tests.support import Session, SessionFactory

FINALIZED = FinalizingTriggerManager.TRIGGER_SESSION_FINALIZED
AT = datetime(2026, 1, 1)


@pytest.fixture
def finalizing(make_session: SessionFactory) -> Session:
    return make_session(manager_cls=FinalizingTriggerManager)


def test_a_task_that_skips_itself_last_finalizes_the_session(finalizing: Session) -> None:
    finalizing.manager.update_configuration(
        {
            "t_first": {"after": ["start"], "run": DevNullTask.name},
            "t_last": {"after": ["t_first"], "run": SelfSkippingTask.name},
        }
    )
    finalizing.fire("start")
    finalizing.assertInstanceSkipped("t_last#0")
    assert FINALIZED in finalizing.storage.latest_kwargs


def test_skipping_the_last_failed_instance_without_cascade_finalizes(finalizing: Session) -> None:
    finalizing.manager.update_configuration({"t_fails": {"after": ["start"], "run": FailingTask.name}})
    finalizing.fire("start")
    finalizing.assertInstanceFailed("t_fails#0", RuntimeError)
    assert FINALIZED not in finalizing.storage.latest_kwargs

    finalizing.manager.skip_failed_instance("t_fails#0")
    assert FINALIZED in finalizing.storage.latest_kwargs


def test_a_resolution_that_leaves_work_pending_does_not_finalize(finalizing: Session) -> None:
    finalizing.manager.update_configuration(
        {
            "t_skips": {"after": ["start"], "run": SelfSkippingTask.name},
            "t_waits": {"after": ["later"], "run": DevNullTask.name},
        }
    )
    finalizing.fire("start")
    finalizing.assertInstanceSkipped("t_skips#0")
    assert FINALIZED not in finalizing.storage.latest_kwargs


def _worker_manager() -> tuple[FinalizingTriggerManager, SessionEntry]:
    """The configured manager as the stream worker builds it for one session."""
    entry = SessionEntry()
    sink = OutputSink(Topics())
    sink.begin("s", b"s", "cause", 0, "0:0", 0)
    storage = WorkerSessionStorage("s", entry)
    manager = FinalizingTriggerManager(storage, runners=WorkerRunners(sink), clock=lambda: AT, observer=sink.effects)
    return manager, entry


def test_in_the_worker_a_self_skipped_last_instance_finalizes() -> None:
    manager, entry = _worker_manager()
    manager.submit(ConfigurationUpdated({"t": {"after": ["start"], "run": SelfSkippingTask.name}}, AT))
    manager.submit(TriggerFired("start", {}, AT))
    assert entry.state.instances["t#0"].status == Status.SCHEDULED

    manager.submit(StatusReported("t#0", Status.SKIPPED, {}, AT))  # what the executor reports
    assert FINALIZED in entry.state.latest_kwargs


def test_in_the_worker_skipping_without_cascade_finalizes() -> None:
    manager, entry = _worker_manager()
    manager.submit(ConfigurationUpdated({"t": {"after": ["start"], "run": FailingTask.name}}, AT))
    manager.submit(TriggerFired("start", {}, AT))
    manager.submit(StatusReported("t#0", Status.FAILED, {}, AT))
    assert FINALIZED not in entry.state.latest_kwargs

    manager.submit(SkipRequested("t#0", False, {}, AT))
    assert FINALIZED in entry.state.latest_kwargs
