"""The functional core: session state + input -> new state + effects.  No I/O in here."""

from stream_triggers.engine.draft import Draft
from stream_triggers.engine.effects import (
    Cascade,
    Effect,
    Fired,
    Ignored,
    InstanceChanged,
    Replayed,
    RunInstance,
    Skipped,
)
from stream_triggers.engine.errors import (
    EngineError,
    InvalidConfiguration,
    InvalidPayload,
    OperationNotAllowed,
    UnknownInstance,
)
from stream_triggers.engine.inputs import (
    ConfigurationUpdated,
    Input,
    LogsResolved,
    MetadataUpdated,
    ReplayRequested,
    RetryRequested,
    SkipRequested,
    StatusReported,
    StatusUpdated,
    TriggerFired,
)
from stream_triggers.engine.payloads import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, checked_payload
from stream_triggers.engine.state import EMPTY, SessionState
from stream_triggers.engine.transition import new_instance, step
from stream_triggers.engine.validation import build_task_configs, checked_input, checked_instance, json_mapping

__all__ = [
    "EMPTY",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "Cascade",
    "ConfigurationUpdated",
    "Draft",
    "Effect",
    "EngineError",
    "Fired",
    "Ignored",
    "Input",
    "InstanceChanged",
    "InvalidConfiguration",
    "InvalidPayload",
    "LogsResolved",
    "MetadataUpdated",
    "OperationNotAllowed",
    "ReplayRequested",
    "Replayed",
    "RetryRequested",
    "RunInstance",
    "SessionState",
    "SkipRequested",
    "Skipped",
    "StatusReported",
    "StatusUpdated",
    "TriggerFired",
    "UnknownInstance",
    "build_task_configs",
    "checked_input",
    "checked_instance",
    "checked_payload",
    "json_mapping",
    "new_instance",
    "step",
]
