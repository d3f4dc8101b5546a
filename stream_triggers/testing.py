"""Testing toolbox: assertions on instance status and a few ready-made tasks.

Use ``TriggerManagerTestCaseMixin`` with ``unittest.TestCase`` (it is a mixin, not a
TestCase itself); set ``self.manager`` in ``setUp`` after calling ``super().setUp()``,
which empties the shared memory store.  Tasks run in threads (the ``threading``
runner is the in-process default), so call ``ThreadingTaskRunner.join_all()`` before
asserting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pprint import pformat
from typing import Any, TypeVar

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.memory import DEFAULT_STORE
from stream_triggers.task import TaskContext, TriggerTask, task_registry
from stream_triggers.types import Status, TaskInstance

__all__ = [
    "DevNullTask",
    "FailingTask",
    "PassThruTask",
    "SelfRetryingTask",
    "SelfSkippingTask",
    "TriggerManagerTestCaseMixin",
    "name_matches_classpath",
]

T = TypeVar("T", bound=type[TriggerTask])


def name_matches_classpath(cls: T) -> T:
    """Decorator: name (and register) a task ``module.ClassName``, whatever it set.

    Tasks are named so by default; this undoes a custom ``name`` (the original's helper).
    """
    cls.name = f"{cls.__module__}.{cls.__name__}"
    task_registry[cls.name] = cls
    return cls


class PassThruTask(TriggerTask):
    """Returns ``{'kwargs': <the kwargs it received>}`` so tests can check them."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"kwargs": context.trigger_kwargs}


class DevNullTask(TriggerTask):
    """Returns an empty result."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {}


class FailingTask(TriggerTask):
    """Always raises ``RuntimeError``."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise RuntimeError("You weren't supposed to see that.")


class SelfSkippingTask(TriggerTask):
    """Marks itself skipped, keeping its kwargs in the metadata."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        raise self.skip({"kwargs": context.trigger_kwargs})


class SelfRetryingTask(TriggerTask):
    """Retries itself until it has been replayed ``kwargs['retries']['max']`` times."""

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        wanted = (context.trigger_kwargs.get("retries") or {}).get("max", self.max_retries)
        if self.request.retries < wanted:
            raise self.retry()
        return {"count": self.request.retries}


class TriggerManagerTestCaseMixin:
    """Assertions about a session's instances; expects ``self.manager`` to be set.

    ``setUp`` waits for task threads left by the previous test, then empties the
    ``memory`` storage's shared store (sessions with the same uid would otherwise
    carry over from test to test); set ``reset_memory_store = False`` to keep it.
    """

    manager: TriggerManager
    reset_memory_store: bool = True

    def setUp(self) -> None:
        ThreadingTaskRunner.join_all()
        if self.reset_memory_store:
            DEFAULT_STORE.clear()
        parent = getattr(super(), "setUp", None)
        if parent is not None:
            parent()

    def _fresh_instance(self, instance_name: str) -> TaskInstance | None:
        # Read the stored state, not a cached copy: tasks ran in other threads.
        storage = self.manager.storage
        storage.invalidate_cache()
        return storage.instances.get(instance_name)

    def assertInstanceStatus(self, instance_name: str, expected_status: str) -> None:  # noqa: N802
        instance = self._fresh_instance(instance_name)
        if instance is None:
            self.fail(f'Expected "{instance_name}" instance to be {expected_status}, but it has not been created yet.')
        if instance.status != expected_status:
            self.fail(_describe(instance, expected_status))

    def assertInstanceAbandoned(self, instance_name: str) -> None:  # noqa: N802
        self.assertInstanceStatus(instance_name, Status.ABANDONED)

    def assertInstanceFailed(self, instance_name: str, exc_type: type[BaseException]) -> None:  # noqa: N802
        self.assertInstanceStatus(instance_name, Status.FAILED)
        actual = self.manager.storage[instance_name].metadata.get(TaskInstance.META_EXCEPTION_TYPE)
        self.assertEqual(actual, f"{exc_type.__module__}.{exc_type.__name__}")

    def assertInstanceFinished(  # noqa: N802
        self, instance_name: str, expected_result: Mapping[str, Any] | None = None
    ) -> None:
        self.assertInstanceStatus(instance_name, Status.FINISHED)
        if expected_result is not None:
            self.assertEqual(
                self.manager.storage[instance_name].metadata.get(TaskInstance.META_RESULT),
                expected_result,
            )

    def assertInstanceMissing(self, instance_name: str) -> None:  # noqa: N802
        instance = self._fresh_instance(instance_name)
        if instance is not None:
            self.fail(
                f'Expected "{instance_name}" instance not to exist, but it was created with status "{instance.status}".'
            )

    def assertInstanceReplayed(self, instance_name: str) -> None:  # noqa: N802
        self.assertInstanceStatus(instance_name, Status.REPLAYED)

    def assertInstanceSkipped(self, instance_name: str) -> None:  # noqa: N802
        self.assertInstanceStatus(instance_name, Status.SKIPPED)

    def assertInstanceUnstarted(self, instance_name: str) -> None:  # noqa: N802
        self.assertInstanceStatus(instance_name, Status.UNSTARTED)

    def assertUnresolvedTasks(self, task_names: list[str]) -> None:  # noqa: N802
        """``task_names`` (sorted) are exactly the unresolved tasks."""
        self.manager.storage.invalidate_cache()
        actual = sorted(t.name for t in self.manager.storage.get_unresolved_tasks())
        self.assertListEqual(actual, list(task_names))

    def assertUnresolvedInstances(self, instance_names: list[str]) -> None:  # noqa: N802
        """``instance_names`` (sorted) are exactly the unresolved instances."""
        self.manager.storage.invalidate_cache()
        actual = sorted(i.name for i in self.manager.storage.get_unresolved_instances())
        self.assertListEqual(actual, list(instance_names))


def _describe(instance: TaskInstance, expected: str) -> str:
    """A failure message with what went wrong: status, exception and traceback."""
    lines = [f"{instance.name} has incorrect status (expected: {expected}, actual: {instance.status})"]
    metadata = instance.metadata
    if metadata.get(TaskInstance.META_EXCEPTION_TYPE):
        lines.append(f"exception: {metadata[TaskInstance.META_EXCEPTION_TYPE]}")
    if metadata.get(TaskInstance.META_EXCEPTION_INFO):
        lines.append(f"traceback:\n{metadata[TaskInstance.META_EXCEPTION_INFO]}")
    lines.append(f"metadata:\n{pformat(metadata)}")
    return "\n\n".join(lines)
