"""Event records and their encodings: the Avro codec (``codec``), the JSON helper for the
``*_json`` fields (``jsonx``) and record builders (``envelope``).  No Kafka clients here."""

from stream_triggers.events import jsonx
from stream_triggers.events.codec import SCHEMA_NAMES, decode, encode
from stream_triggers.events.envelope import event_record, new_event_id, now_us, output_record
from stream_triggers.events.errors import CodecError

__all__ = [
    "SCHEMA_NAMES",
    "CodecError",
    "decode",
    "encode",
    "event_record",
    "jsonx",
    "new_event_id",
    "now_us",
    "output_record",
]
