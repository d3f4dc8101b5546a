"""Every project error derives from ``StreamTriggersError`` and keeps its standard base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from class_registry import RegistryKeyError as ClassRegistryKeyError
from confluent_kafka import KafkaException

import stream_triggers
from stream_triggers.engine.errors import (
    EngineError,
    InvalidConfiguration,
    InvalidPayload,
    OperationNotAllowed,
    UnknownInstance,
)
from stream_triggers.engine.native import NativeUnavailable
from stream_triggers.events.errors import CodecError
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.exceptions import RegistryKeyError, StreamTriggersError
from stream_triggers.executor.reports import OutcomeNotPublishable, OutcomeTooLarge
from stream_triggers.kafka.clients import ReadTimeout
from stream_triggers.kafka.owners import OwnersFormatError
from stream_triggers.kafka.topics import TopicsError
from stream_triggers.ops.broker import BrokerError
from stream_triggers.ops.queries import NotOwner, OwnerUnavailable, Restoring
from stream_triggers.registry import RegistryKeyError as RegistryModuleKeyError
from stream_triggers.storages.base import ConcurrentModification
from stream_triggers.storages.kafka import (
    BrokerTimeout,
    RecordTooLarge,
    SessionNotFound,
    SessionUnreadable,
    UnsupportedEdit,
)
from stream_triggers.storages.locking import LockAcquisitionFailed
from stream_triggers.stream.checkpoint import DeliveryFailed, PartitionsLost
from stream_triggers.stream.inputs import Rejected
from stream_triggers.stream.restore import CorruptChangelog
from stream_triggers.task import MaxRetriesExceeded, Retry, StatusChange, UnknownTask

# Each project error and the standard base its callers rely on.
PROJECT_ERRORS: dict[type[BaseException], type[BaseException]] = {
    EngineError: Exception,
    InvalidConfiguration: ValueError,
    InvalidPayload: ValueError,
    OperationNotAllowed: ValueError,
    UnknownInstance: KeyError,
    CodecError: ValueError,
    StateFormatError: ValueError,
    TopicsError: RuntimeError,
    ConcurrentModification: RuntimeError,
    LockAcquisitionFailed: RuntimeError,
    BrokerTimeout: KafkaException,
    RecordTooLarge: ValueError,
    UnsupportedEdit: RuntimeError,
    OutcomeNotPublishable: ValueError,
    OutcomeTooLarge: ValueError,
    DeliveryFailed: KafkaException,
    PartitionsLost: Exception,
    CorruptChangelog: Exception,
    Rejected: Exception,
    NativeUnavailable: RuntimeError,
    BrokerError: RuntimeError,
    SessionNotFound: LookupError,
    SessionUnreadable: BrokerTimeout,  # a read that timed out, saying what each path answered
    OwnersFormatError: ValueError,
    NotOwner: LookupError,
    Restoring: LookupError,
    OwnerUnavailable: RuntimeError,
    UnknownTask: LookupError,
    MaxRetriesExceeded: Exception,
    ReadTimeout: KafkaException,
    RegistryKeyError: ClassRegistryKeyError,
}

# Raised by a task on purpose to choose its outcome: signals, not errors (see exceptions.py).
CONTROL_FLOW = {StatusChange, Retry}


@pytest.mark.parametrize("error", PROJECT_ERRORS, ids=lambda error: error.__name__)
def test_every_project_error_derives_from_the_root_and_keeps_its_standard_base(error: type[BaseException]) -> None:
    assert issubclass(error, StreamTriggersError)
    assert issubclass(error, PROJECT_ERRORS[error])


def test_engine_errors_share_the_engine_root() -> None:
    for error in (InvalidConfiguration, InvalidPayload, OperationNotAllowed, UnknownInstance):
        assert issubclass(error, EngineError)


def test_the_registry_raises_the_project_key_error_which_is_also_the_class_registry_one() -> None:
    assert RegistryModuleKeyError is RegistryKeyError
    from stream_triggers.storages.base import storage_backends

    with pytest.raises(StreamTriggersError) as raised:
        storage_backends.get_class("no-such-storage")
    assert isinstance(raised.value, ClassRegistryKeyError)


def test_control_flow_exceptions_stay_outside_the_root() -> None:
    for signal in CONTROL_FLOW:
        assert not issubclass(signal, StreamTriggersError)


def _public_exception_classes() -> set[type[BaseException]]:
    found = set()
    for module_info in pkgutil.walk_packages(stream_triggers.__path__, "stream_triggers."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("stream_triggers")
                and not name.startswith("_")
            ):
                found.add(value)
    return found


def test_no_public_exception_class_of_the_package_is_missing_from_this_list() -> None:
    """A new error class must derive from the root (and be listed above with its base)."""
    assert _public_exception_classes() - {StreamTriggersError} == set(PROJECT_ERRORS) | CONTROL_FLOW
