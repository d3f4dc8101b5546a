"""The testing toolbox, used as documented: unittest.TestCase + TriggerManagerTestCaseMixin.

The same cases run against a fresh MemoryStore and a fresh RocksDB directory.
"""

from __future__ import annotations

import tempfile
import unittest

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.storages.memory import MemoryStorage, MemoryStore
from stream_triggers.storages.rocksdb import RocksDBStorage, close_all
from stream_triggers.task import MaxRetriesExceeded
from stream_triggers.testing import (
    DevNullTask,
    FailingTask,
    PassThruTask,
    SelfRetryingTask,
    SelfSkippingTask,
    TriggerManagerTestCaseMixin,
)


class ToolboxCases(TriggerManagerTestCaseMixin, unittest.TestCase):
    """Runs only through the backend subclasses below."""

    __test__ = False

    def make_storage(self) -> BaseTriggerStorage:
        raise NotImplementedError

    def setUp(self) -> None:
        super().setUp()
        self.manager = TriggerManager(self.make_storage())
        self.manager.update_configuration(
            {
                "t_devnull": {"after": ["go"], "run": DevNullTask.name},
                "t_passthru": {"after": ["go"], "run": PassThruTask.name, "withParams": {"cfg": {"k": "v"}}},
                "t_failing": {"after": ["go"], "run": FailingTask.name},
                "t_skipping": {"after": ["go"], "run": SelfSkippingTask.name},
                "t_retrying": {"after": ["go"], "run": SelfRetryingTask.name},
                "t_waiting": {"after": ["go", "later"], "run": DevNullTask.name},
                "t_abandoned": {"after": ["later"], "unless": ["go"], "run": DevNullTask.name},
                "t_never": {"after": ["never"], "run": DevNullTask.name},
            }
        )
        self.manager.fire("go", {"n": 1})
        ThreadingTaskRunner.join_all()

    # -- the ready-made tasks -------------------------------------------------------------

    def test_dev_null_task_returns_an_empty_result(self) -> None:
        self.assertInstanceFinished("t_devnull#0", {})

    def test_pass_thru_task_returns_the_kwargs_it_received(self) -> None:
        self.assertInstanceFinished("t_passthru#0", {"kwargs": {"go": {"n": 1}, "cfg": {"k": "v"}}})

    def test_failing_task_fails_with_runtime_error(self) -> None:
        self.assertInstanceFailed("t_failing#0", RuntimeError)

    def test_self_skipping_task_skips_with_its_kwargs_as_metadata(self) -> None:
        self.assertInstanceSkipped("t_skipping#0")
        self.assertEqual(self.manager.storage["t_skipping#0"].metadata["kwargs"], {"go": {"n": 1}})

    def test_self_retrying_task_retries_up_to_max_retries_by_default(self) -> None:
        self.assertEqual(SelfRetryingTask.max_retries, 3)
        for n in range(3):
            self.assertInstanceReplayed(f"t_retrying#{n}")
        self.assertInstanceFinished("t_retrying#3", {"count": 3})
        self.assertInstanceMissing("t_retrying#4")

    # -- the assertions, passing ------------------------------------------------------------

    def test_status_assertions_pass_on_the_right_status(self) -> None:
        self.assertInstanceUnstarted("t_waiting#0")
        self.assertInstanceAbandoned("t_abandoned#0")
        self.assertInstanceMissing("t_never#0")
        self.assertInstanceStatus("t_devnull#0", "finished")
        self.assertInstanceFinished("t_devnull#0")  # the result is optional

    def test_unresolved_assertions(self) -> None:
        self.assertUnresolvedTasks(["t_failing", "t_never", "t_waiting"])
        self.assertUnresolvedInstances(["t_failing#0", "t_waiting#0"])

    # -- the assertions, failing --------------------------------------------------------------

    def test_a_wrong_status_message_shows_status_exception_and_traceback(self) -> None:
        with self.assertRaises(AssertionError) as caught:
            self.assertInstanceFinished("t_failing#0")
        message = str(caught.exception)
        self.assertIn("t_failing#0", message)
        self.assertIn("expected: finished", message)
        self.assertIn("actual: failed", message)
        self.assertIn("builtins.RuntimeError", message)
        self.assertIn("Traceback (most recent call last)", message)
        self.assertIn("You weren't supposed to see that.", message)

    def test_each_status_assertion_fails_on_another_status(self) -> None:
        checks = [
            lambda: self.assertInstanceAbandoned("t_devnull#0"),
            lambda: self.assertInstanceFailed("t_devnull#0", RuntimeError),
            lambda: self.assertInstanceFinished("t_waiting#0"),
            lambda: self.assertInstanceReplayed("t_devnull#0"),
            lambda: self.assertInstanceSkipped("t_failing#0"),
            lambda: self.assertInstanceUnstarted("t_devnull#0"),
            lambda: self.assertInstanceStatus("t_devnull#0", "running"),
        ]
        for check in checks:
            with self.subTest(check=check), self.assertRaises(AssertionError):
                check()

    def test_failed_with_another_exception_type_fails(self) -> None:
        with self.assertRaises(AssertionError) as caught:
            self.assertInstanceFailed("t_failing#0", ValueError)
        self.assertIn("builtins.RuntimeError", str(caught.exception))
        with self.assertRaises(AssertionError):
            self.assertInstanceFailed("t_failing#0", MaxRetriesExceeded)

    def test_finished_with_another_result_fails(self) -> None:
        with self.assertRaises(AssertionError):
            self.assertInstanceFinished("t_passthru#0", {"kwargs": {"go": {"n": 2}}})

    def test_an_instance_not_created_yet_fails_status_assertions(self) -> None:
        with self.assertRaises(AssertionError) as caught:
            self.assertInstanceUnstarted("t_never#0")
        self.assertIn("has not been created yet", str(caught.exception))

    def test_missing_fails_for_an_existing_instance(self) -> None:
        with self.assertRaises(AssertionError) as caught:
            self.assertInstanceMissing("t_devnull#0")
        self.assertIn("finished", str(caught.exception))

    def test_unresolved_assertions_fail_on_a_different_list(self) -> None:
        with self.assertRaises(AssertionError):
            self.assertUnresolvedTasks(["t_failing"])
        with self.assertRaises(AssertionError):
            self.assertUnresolvedInstances([])

    def test_assertions_read_what_task_threads_stored(self) -> None:
        # Warm the manager's cache, then let a task change the session behind it.
        self.assertInstanceUnstarted("t_waiting#0")
        self.manager.fire("later")
        ThreadingTaskRunner.join_all()
        self.assertInstanceFinished("t_waiting#0", {})


class MemoryToolboxTest(ToolboxCases):
    __test__ = True

    def make_storage(self) -> BaseTriggerStorage:
        return MemoryStorage(self._testMethodName, MemoryStore())


class RocksDBToolboxTest(ToolboxCases):
    __test__ = True

    def make_storage(self) -> BaseTriggerStorage:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.addCleanup(close_all)
        self.addCleanup(ThreadingTaskRunner.join_all)
        return RocksDBStorage(self._testMethodName, directory.name)
