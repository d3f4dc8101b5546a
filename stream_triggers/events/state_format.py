"""Compact, versioned binary encoding of a session state (RocksDB values, changelog).

Layout (format 3): one format byte, the 8-byte big-endian **owner epoch** (the
consumer-group generation under which the writing worker owned the partition; 0
outside a worker), then a msgpack array ``[tasks, instances,
latest_kwargs, metadata]`` where ``tasks`` is ``[[name, directives], ...]`` and
``instances`` is ``[[name, task, status, kwargs, metadata, abandon_state,
timestamps], ...]`` in creation order; ``timestamps`` holds the engine's naive-UTC
timestamps as integer microseconds (None if the instance's timestamps are unusual,
which then stay inside ``metadata``).  Format 2 is the same without the epoch;
format 1 also lacked the timestamps column.
Python values JSON lacks (datetime, date, time, timedelta, Decimal, UUID, set,
frozenset, tuple, bytes) travel as msgpack extension types, so instance metadata
such as the timestamps round-trips exactly (naive stays naive, tz-aware keeps its
offset).

Upgrade path: ``FORMAT`` is bumped whenever the layout changes; ``decode_state``
keeps a reader per older format that converts to the current in-memory state, and
``encode_state`` always writes the newest.  Stores therefore upgrade lazily, on the
next save of each session (see docs/state-format.md).
"""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack

from stream_triggers.engine.state import SessionState
from stream_triggers.events.codec import CodecError, decode, encode
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.types import TaskConfig, TaskInstance

__all__ = [
    "FORMAT",
    "ChangelogReader",
    "StateFormatError",
    "decode_state",
    "encode_state",
    "newer",
    "pack",
    "state_epoch",
    "unpack",
]

FORMAT = 3
_EPOCH_BYTES = struct.Struct(">q")
_TIMESTAMPS = TaskInstance.META_TIMESTAMPS

_DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _SET, _FROZENSET, _TUPLE = range(1, 10)
_NAIVE = -(2**31)  # utcoffset marker for naive datetimes / times
_EPOCH = datetime(1970, 1, 1)
_DT = struct.Struct(">qi")  # microseconds since epoch (wall clock), utcoffset seconds


class StateFormatError(StreamTriggersError, ValueError):
    """Bytes that are not a session state this version can read."""


def _default(value: Any) -> msgpack.ExtType:
    if isinstance(value, datetime):
        offset = value.utcoffset()
        wall = value.replace(tzinfo=None) - _EPOCH
        micros = (wall.days * 86400 + wall.seconds) * 1_000_000 + wall.microseconds
        return msgpack.ExtType(_DATETIME, _DT.pack(micros, _NAIVE if offset is None else int(offset.total_seconds())))
    if isinstance(value, date):
        return msgpack.ExtType(_DATE, struct.pack(">i", value.toordinal()))
    if isinstance(value, time):
        offset = value.utcoffset()
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
        return msgpack.ExtType(_TIME, _DT.pack(micros, _NAIVE if offset is None else int(offset.total_seconds())))
    if isinstance(value, timedelta):
        return msgpack.ExtType(_TIMEDELTA, struct.pack(">qii", value.days, value.seconds, value.microseconds))
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, UUID):
        return msgpack.ExtType(_UUID, value.bytes)
    if isinstance(value, (set, frozenset, tuple)):
        code = _TUPLE if isinstance(value, tuple) else _FROZENSET if isinstance(value, frozenset) else _SET
        return msgpack.ExtType(code, pack(list(value)))
    if isinstance(value, (str, int)):
        # str/int subclasses, e.g. StrEnum members such as ``TaskInstance.STATUS_FINISHED``
        # used as a metadata key (strict_types sends them here): stored as plain values.
        return str.__str__(value) if isinstance(value, str) else int(value)
    raise TypeError(f"cannot store a {type(value).__name__} ({value!r}) in session state")


def _tz(offset: int) -> timezone | None:
    if offset == _NAIVE:
        return None
    return UTC if offset == 0 else timezone(timedelta(seconds=offset))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATETIME:
        micros, offset = _DT.unpack(data)
        return (_EPOCH + timedelta(microseconds=micros)).replace(tzinfo=_tz(offset))
    if code == _DATE:
        return date.fromordinal(struct.unpack(">i", data)[0])
    if code == _TIME:
        micros, offset = _DT.unpack(data)
        seconds, micro = divmod(micros, 1_000_000)
        return time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro, tzinfo=_tz(offset))
    if code == _TIMEDELTA:
        days, seconds, micros = struct.unpack(">qii", data)
        return timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _UUID:
        return UUID(bytes=data)
    if code in (_SET, _FROZENSET, _TUPLE):
        items = unpack(data)
        return {_SET: set, _FROZENSET: frozenset, _TUPLE: tuple}[code](items)
    return msgpack.ExtType(code, data)


def pack(value: Any) -> bytes:
    """msgpack with the extension types above (tuples kept as tuples)."""
    return msgpack.packb(value, default=_default, strict_types=True, datetime=False)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode_state(state: SessionState, epoch: int = 0) -> bytes:
    """The state's bytes, stamped with the writer's owner ``epoch`` (see :func:`newer`)."""
    # msgpack values concatenate: the array is written as a header plus its elements,
    # and the task list and each instance come from a cache keyed by the (immutable)
    # object, so a session's unchanged parts are packed once, not at every save.
    instances = state.instances
    parts = [
        _FORMAT_BYTE,
        _EPOCH_BYTES.pack(epoch),
        _BODY_HEADER,
        _packed(state.tasks, _pack_tasks),
        _array_header(len(instances)),
    ]
    parts.extend(_packed(instance, _pack_instance) for instance in instances.values())
    parts.append(pack(dict(state.latest_kwargs)))
    parts.append(pack(dict(state.metadata)))
    return b"".join(parts)


_FORMAT_BYTE = bytes((FORMAT,))
_BODY_HEADER = b"\x94"  # a 4-element msgpack array
_PACKED_LIMIT = 10_000  # bounded: each entry keeps its object (and superseded ones) alive
_packed_cache: dict[int, tuple[Any, bytes]] = {}


def _packed(obj: Any, packer: Any) -> bytes:
    """``packer(obj)``, remembered for as long as ``obj`` is (ids are checked by identity)."""
    hit = _packed_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    data = packer(obj)
    if len(_packed_cache) >= _PACKED_LIMIT:
        _packed_cache.clear()
    _packed_cache[id(obj)] = (obj, data)
    return data


def _pack_tasks(tasks: Any) -> bytes:
    return pack([[name, config.serialize()] for name, config in tasks.items()])


def _pack_instance(instance: TaskInstance) -> bytes:
    return pack(_instance_row(instance.name, instance))


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 0x10000:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _instance_row(name: str, instance: TaskInstance) -> list[Any]:
    """``[name, task, status, kwargs, metadata, abandon_state, timestamps]``.

    The engine's timestamps (naive UTC datetimes, several per instance) travel as plain
    integers (microseconds since the epoch) in their own column: far cheaper to encode
    and decode than one extension type each.  Anything unusual stays in the metadata.
    """
    metadata = instance.metadata
    timestamps = metadata.get(_TIMESTAMPS)
    stamps = None
    if type(timestamps) is dict and all(type(v) is datetime and v.tzinfo is None for v in timestamps.values()):
        stamps = {key: _micros(value) for key, value in timestamps.items()}
        metadata = {key: value for key, value in metadata.items() if key != _TIMESTAMPS}
    return [
        name,
        instance.config.name,
        str(instance.status),
        instance.kwargs,
        metadata,
        sorted(instance.abandon_state),
        stamps,
    ]


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def decode_state(data: bytes) -> SessionState:
    if not data:
        raise StateFormatError("empty session state")
    reader = _READERS.get(data[0])
    if reader is None:
        raise StateFormatError(
            f"session state format {data[0]} is newer than this stream-triggers "
            f"understands (it reads formats {sorted(_READERS)}); upgrade the package"
        )
    try:
        body = data[1 + _EPOCH_BYTES.size :] if data[0] >= 3 else data[1:]
        return reader(unpack(body))
    except StateFormatError:
        raise
    except Exception as exc:
        raise StateFormatError(f"corrupt session state: {exc}") from exc


def _read_v1(body: list[Any]) -> SessionState:
    raw_tasks, raw_instances, latest_kwargs, metadata = body
    tasks = {name: TaskConfig(name=name, **directives) for name, directives in raw_tasks}
    instances = {}
    for name, task, status, kwargs, meta, abandon in raw_instances:
        instances[name] = TaskInstance(
            name=name, config=tasks[task], status=status, metadata=meta, kwargs=kwargs, abandonState=abandon
        )
    return SessionState.build(tasks, instances, latest_kwargs, metadata)


def _read_v2(body: list[Any]) -> SessionState:
    raw_tasks, raw_instances, latest_kwargs, metadata = body
    tasks = {name: TaskConfig(name=name, **directives) for name, directives in raw_tasks}
    instances = {}
    for name, task, status, kwargs, meta, abandon, stamps in raw_instances:
        if stamps is not None:
            meta[_TIMESTAMPS] = {key: _EPOCH + timedelta(microseconds=us) for key, us in stamps.items()}
        instances[name] = TaskInstance(
            name=name, config=tasks[task], status=status, metadata=meta, kwargs=kwargs, abandonState=abandon
        )
    return SessionState.build(tasks, instances, latest_kwargs, metadata)


def state_epoch(data: bytes) -> int:
    """The owner epoch stamped on encoded state (0 for formats 1 and 2, written before epochs)."""
    if not data:
        raise StateFormatError("empty session state")
    if data[0] < 3:
        return 0
    if len(data) < 1 + _EPOCH_BYTES.size:
        raise StateFormatError("corrupt session state: truncated owner epoch")
    return _EPOCH_BYTES.unpack_from(data, 1)[0]


_READERS = {1: _read_v1, 2: _read_v2, 3: _read_v2}


# -- reading the changelog: the newest state of each session, never a stale one -----------


def newer(epoch: int, applied_offset: int, than_epoch: int, than_applied_offset: int) -> bool:
    """Whether a state ``(epoch, applied_offset)`` supersedes another one.

    Owners of a partition follow each other with growing epochs, and each one applies a
    session's inputs in ``events`` order: a higher epoch is a later owner (who restored
    everything before it), the same epoch with a higher applied offset a later state.
    """
    return (epoch, applied_offset) > (than_epoch, than_applied_offset)


class ChangelogReader:
    """Assembles the newest state of each session from changelog records read in offset order.

    The one reader API every consumer of the changelog uses (worker restore, the
    ``kafka`` storage, ``inspect``).  Rules (docs/fencing.md):

    * per changelog partition, the highest owner epoch seen so far; a record stamped
      with a lower epoch was written by a worker that had already lost the partition
      (it woke up after a freeze) and is **stale**: it is ignored;
    * per session, a record replaces the one kept only if it is :func:`newer`.

    ``uid`` restricts it to one session (the others are not decoded).
    """

    def __init__(self, uid: str | None = None) -> None:
        self.uid = uid
        self._key = None if uid is None else uid.encode()
        self.snapshots: dict[str, dict[str, Any]] = {}
        """uid -> the ``SessionSnapshot`` record kept (its ``state`` still encoded)."""
        self.max_epoch: dict[int, int] = {}
        """changelog partition -> highest owner epoch seen."""
        self.stale = 0
        """Records ignored because a later owner had already written to their partition."""

    def add(self, key: bytes | None, value: bytes | None, partition: int = 0) -> dict[str, Any] | None:
        """Take one changelog record; return its snapshot if it is now the one kept."""
        if value is None:
            return None
        if self._key is not None and key != self._key:
            # Another session: only its epoch matters (it fences this session's stale writers).
            self._see_epoch(partition, _peek_epoch(value))
            return None
        try:
            _, snapshot = decode(value)
        except CodecError:
            return None  # not a session record (the caller may log it); it says nothing of epochs
        return self.offer(snapshot, partition)

    def offer(self, snapshot: dict[str, Any], partition: int = 0) -> dict[str, Any] | None:
        """Take one decoded ``SessionSnapshot``; return it if it is now the one kept."""
        epoch = state_epoch(snapshot["state"])
        if epoch < self.max_epoch.get(partition, 0):
            self.stale += 1
            return None
        self._see_epoch(partition, epoch)
        uid = snapshot["session_uid"]
        kept = self.snapshots.get(uid)
        if kept is not None and not newer(
            epoch, snapshot["applied_offset"], state_epoch(kept["state"]), kept["applied_offset"]
        ):
            return None
        self.snapshots[uid] = snapshot
        return snapshot

    def _see_epoch(self, partition: int, epoch: int) -> None:
        if epoch > self.max_epoch.get(partition, 0):
            self.max_epoch[partition] = epoch

    def snapshot(self, uid: str | None = None) -> dict[str, Any] | None:
        """The kept snapshot of ``uid`` (default: the reader's session), or None."""
        return self.snapshots.get(self.uid if uid is None else uid)

    def state(self, uid: str | None = None) -> tuple[SessionState, int] | None:
        """The kept state of ``uid`` and the offset of the last input it reflects, or None."""
        snapshot = self.snapshot(uid)
        if snapshot is None:
            return None
        return decode_state(snapshot["state"]), snapshot["applied_offset"]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An Avro (zigzag) varint at ``at``: (value, position after it)."""
    shift = result = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7


def _peek_epoch(value: bytes) -> int:
    """The owner epoch of an encoded ``SessionSnapshot``, read without decoding the record.

    Its fields start ``session_uid`` (string), ``produced_at`` (long), ``state`` (bytes),
    so the state's first nine bytes sit right after two varint-sized fields.  Anything
    unexpected falls back to a full decode (0 if even that fails).
    """
    try:
        if value[:10] == _SNAPSHOT_HEADER:
            length, at = _varint(value, 10)
            _, at = _varint(value, at + length)
            length, at = _varint(value, at)
            return state_epoch(value[at : at + min(length, 1 + _EPOCH_BYTES.size)])
        return state_epoch(decode(value)[1]["state"])
    except (CodecError, StateFormatError, IndexError, KeyError, TypeError):
        return 0


def _snapshot_header() -> bytes:
    record = {"session_uid": "", "produced_at": 0, "state": b"", "input_partition": 0, "applied_offset": 0}
    return encode("SessionSnapshot", record)[:10]


_SNAPSHOT_HEADER = _snapshot_header()
