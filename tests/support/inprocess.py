"""Helpers of the in-process suite: the testing toolbox bound to one manager."""

from __future__ import annotations

import unittest
from collections.abc import Callable

from stream_triggers.manager import TriggerManager
from stream_triggers.runners import ThreadingTaskRunner
from stream_triggers.storages.base import BaseTriggerStorage
from stream_triggers.testing import TriggerManagerTestCaseMixin

BACKENDS = ("memory", "rocksdb")
"""The storages every in-process scenario runs on."""


class Session(TriggerManagerTestCaseMixin, unittest.TestCase):
    """The testing toolbox's assertions bound to one manager, for pytest-style tests."""

    __test__ = False  # a helper, not a test case

    def __init__(self, manager: TriggerManager) -> None:
        super().__init__()  # TestCase's default method name needs no such method
        self.manager = manager
        self.maxDiff = None

    @property
    def storage(self) -> BaseTriggerStorage:
        """The manager's storage, re-read from the backend (tasks wrote from other threads)."""
        self.manager.storage.invalidate_cache()
        return self.manager.storage

    def fire(self, trigger: str, kwargs: dict | None = None) -> None:
        """Fire, then wait for every task (and cascade) it caused."""
        self.manager.fire(trigger, kwargs)
        ThreadingTaskRunner.join_all()


StorageFactory = Callable[[str], BaseTriggerStorage]
SessionFactory = Callable[..., Session]
