"""The one error the events package raises, so callers never see a raw fastavro or json exception."""

from __future__ import annotations

from stream_triggers.exceptions import StreamTriggersError

__all__ = ["CodecError"]


class CodecError(StreamTriggersError, ValueError):
    """A record or payload could not be encoded or decoded.

    ``reason`` is the short code a dead-letter record carries: ``undecodable`` (not a
    single-object-encoded record, or a corrupt body), ``unknown_schema`` (fingerprint or
    type name this version does not know) or ``invalid_payload`` (a value the schema or
    the JSON helper cannot carry).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[CodecError], tuple[str, str]]:
        # Keeps the reason across pickling (multiprocessing, logging handlers).
        return type(self), (self.reason, str(self))
