"""Compact, versioned binary encoding of a session state (RocksDB values, changelog).

Layout (format 4, docs/state-format.md has it byte by byte): one format byte, the
8-byte big-endian **owner epoch** (the consumer-group generation under which the
writing worker owned the partition; 0 outside a worker), one **kind** byte - ``S`` a
whole session, ``H`` a session header, ``I`` one instance (the parts the worker writes,
:mod:`stream_triggers.events.state_parts`) - then msgpack.  A whole session is a msgpack array ``[tasks, instances,
latest_kwargs, metadata]`` where ``tasks`` is ``[[name, directives], ...]`` and
``instances`` is ``[[name, task, status, kwargs, metadata, abandon_state,
timestamps], ...]`` in creation order; ``timestamps`` holds the engine's naive-UTC
timestamps as integer microseconds (None if the instance's timestamps are unusual,
which then stay inside ``metadata``).  Format 2 is the same without the epoch;
format 1 also lacked the timestamps column; format 3 is format 4's whole session
without the kind byte.
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
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.types import TaskConfig, TaskInstance

__all__ = [
    "FORMAT",
    "KIND_HEADER",
    "KIND_INSTANCE",
    "KIND_WHOLE",
    "StateFormatError",
    "decode_state",
    "encode_state",
    "pack",
    "state_epoch",
    "state_kind",
    "unpack",
]

FORMAT = 4
KIND_WHOLE, KIND_HEADER, KIND_INSTANCE = b"S"[0], b"H"[0], b"I"[0]
_EPOCH_BYTES = struct.Struct(">q")
PREFIX_BYTES = 10
"""Format 4: format byte, owner epoch, kind byte; the msgpack body follows."""
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
        prefix(epoch, KIND_WHOLE),
        _BODY_HEADER,
        packed(state.tasks, pack_tasks),
        array_header(len(instances)),
    ]
    parts.extend(packed(instance, pack_instance) for instance in instances.values())
    parts.append(pack(dict(state.latest_kwargs)))
    parts.append(pack(dict(state.metadata)))
    return b"".join(parts)


def prefix(epoch: int, kind: int) -> bytes:
    """The first ten bytes of a format-4 value: format, owner epoch, kind."""
    return _FORMAT_BYTE + _EPOCH_BYTES.pack(epoch) + bytes((kind,))


_FORMAT_BYTE = bytes((FORMAT,))
_BODY_HEADER = b"\x94"  # a 4-element msgpack array
_PACKED_LIMIT = 10_000  # bounded: each entry keeps its object (and superseded ones) alive
_packed_cache: dict[int, tuple[Any, bytes]] = {}


def packed(obj: Any, packer: Any) -> bytes:
    """``packer(obj)``, remembered for as long as ``obj`` is (ids are checked by identity)."""
    hit = _packed_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    data = packer(obj)
    if len(_packed_cache) >= _PACKED_LIMIT:
        _packed_cache.clear()
    _packed_cache[id(obj)] = (obj, data)
    return data


def pack_tasks(tasks: Any) -> bytes:
    return pack([[name, config.serialize()] for name, config in tasks.items()])


def pack_instance(instance: TaskInstance) -> bytes:
    return pack(_instance_row(instance.name, instance))


def array_header(length: int) -> bytes:
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
    if data[0] == 4 and data[PREFIX_BYTES - 1 : PREFIX_BYTES] != b"S":
        kind = data[PREFIX_BYTES - 1 : PREFIX_BYTES]
        raise StateFormatError(
            f"not a whole session state (kind {kind!r}): one part of a session, "
            "read it with ChangelogReader or PartitionStore.read_session"
            if kind in (b"H", b"I")
            else f"corrupt session state: unknown kind {kind!r}"
        )
    try:
        body = data[_BODY_AT[data[0]] :]
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
    tasks = read_tasks(raw_tasks)
    instances = {}
    for row in raw_instances:
        instances[row[0]] = read_instance(row, tasks)
    return SessionState.build(tasks, instances, latest_kwargs, metadata)


def read_tasks(raw_tasks: list[Any]) -> dict[str, TaskConfig]:
    return {name: TaskConfig(name=name, **directives) for name, directives in raw_tasks}


def read_instance(row: list[Any], tasks: dict[str, TaskConfig]) -> TaskInstance:
    """An instance from its row ``[name, task, status, kwargs, metadata, abandon_state, timestamps]``."""
    name, task, status, kwargs, meta, abandon, stamps = row
    if stamps is not None:
        meta[_TIMESTAMPS] = {key: _EPOCH + timedelta(microseconds=us) for key, us in stamps.items()}
    config = tasks.get(task)
    if config is None:
        raise StateFormatError(f"corrupt session state: instance {name!r} of unknown task {task!r}")
    return TaskInstance(name=name, config=config, status=status, metadata=meta, kwargs=kwargs, abandonState=abandon)


def state_epoch(data: bytes) -> int:
    """The owner epoch stamped on encoded state (0 for formats 1 and 2, written before epochs)."""
    if not data:
        raise StateFormatError("empty session state")
    if data[0] < 3:
        return 0
    if len(data) < 1 + _EPOCH_BYTES.size:
        raise StateFormatError("corrupt session state: truncated owner epoch")
    return _EPOCH_BYTES.unpack_from(data, 1)[0]


def state_kind(data: bytes) -> int:
    """``KIND_WHOLE``, ``KIND_HEADER`` or ``KIND_INSTANCE`` (formats 1-3 are whole sessions)."""
    if not data:
        raise StateFormatError("empty session state")
    if data[0] < 4:
        return KIND_WHOLE
    if len(data) < PREFIX_BYTES:
        raise StateFormatError("corrupt session state: truncated prefix")
    return data[PREFIX_BYTES - 1]


_READERS = {1: _read_v1, 2: _read_v2, 3: _read_v2, 4: _read_v2}
_BODY_AT = {1: 1, 2: 1, 3: 1 + _EPOCH_BYTES.size, 4: PREFIX_BYTES}
