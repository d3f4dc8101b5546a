"""A session stored in parts (format 4): one header plus one record per instance.

A whole-session record grows with the session, and a worker rewrote it after every
batch (quadratic changelog volume, and a 1 MB record limit any large session hit).
The worker now writes, per batch, only the parts the batch touched: the changed or
new instances, then the **header** (configurations, latest kwargs, metadata, the
applied input offset, the instance count), all stamped with the same owner epoch and
applied offset; an instance that left the session gets a tombstone.

Keys (changelog record keys, and RocksDB keys after a prefix) keep every part of a
session next to the session's UID and split unambiguously, because ``0xFF`` never
occurs in UTF-8::

    header:    utf8(uid) 0xFF "h"
    instance:  utf8(uid) 0xFF "i" utf8(instance name)
    whole (formats 1-3 and 4/S): utf8(uid)

The byte layout of each value is in docs/state-format.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import compress, count, islice
from operator import is_not
from typing import Any, NamedTuple

import msgpack

from stream_triggers.engine.state import SessionState
from stream_triggers.events.state_format import (
    KIND_HEADER,
    KIND_INSTANCE,
    PREFIX_BYTES,
    StateFormatError,
    pack,
    pack_instance,
    pack_tasks,
    packed,
    prefix,
    read_instance,
    read_tasks,
    state_epoch,
    state_kind,
    unpack,
)
from stream_triggers.types import TaskInstance

__all__ = [
    "SEPARATOR",
    "Header",
    "PartKey",
    "assemble",
    "changed_instances",
    "changelog_keys",
    "encode_header",
    "encode_instance",
    "header_key",
    "instance_key",
    "instance_prefix",
    "part_version",
    "read_header",
    "session_prefix",
    "split_key",
]

SEPARATOR = b"\xff"
_HEADER, _INSTANCE = b"h", b"i"


class PartKey(NamedTuple):
    """A changelog key split: the session, and which part (``name`` for an instance)."""

    uid: str
    part: str
    """``"header"``, ``"instance"`` or ``"whole"`` (a whole-session record, formats 1-3 or 4/S)."""
    name: str | None = None


class Header(NamedTuple):
    """A decoded header part, its instances still to be read."""

    epoch: int
    applied_offset: int
    instance_count: int
    body: list[Any]


def session_prefix(uid: str) -> bytes:
    """The bytes every part key of ``uid`` starts with (and no other session's does)."""
    return uid.encode() + SEPARATOR


def instance_prefix(uid: str) -> bytes:
    """The bytes every instance key of ``uid`` starts with."""
    return uid.encode() + SEPARATOR + _INSTANCE


def header_key(uid: str) -> bytes:
    return uid.encode() + SEPARATOR + _HEADER


def instance_key(uid: str, name: str) -> bytes:
    return uid.encode() + SEPARATOR + _INSTANCE + name.encode()


def split_key(key: bytes) -> PartKey:
    """Which session and part a changelog key names (``StateFormatError`` if it names none)."""
    uid_bytes, separator, part = key.partition(SEPARATOR)
    try:
        uid = uid_bytes.decode()
        if not separator:
            return PartKey(uid, "whole")
        if part == _HEADER:
            return PartKey(uid, "header")
        if part[:1] == _INSTANCE:
            return PartKey(uid, "instance", part[1:].decode())
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"changelog key {key!r} is not UTF-8: {exc}") from exc
    raise StateFormatError(f"changelog key {key!r} names no part of a session")


def changelog_keys(uid: str, instance_names: Iterable[str]) -> list[bytes]:
    """Every changelog key a session may have: its whole-session key (formats 1-3), header, instances.

    What must be tombstoned to remove a session from the compacted changelog.
    """
    return [uid.encode(), header_key(uid), *(instance_key(uid, name) for name in instance_names)]


# -- writing ---------------------------------------------------------------------------------


def encode_header(state: SessionState, applied_offset: int, epoch: int) -> bytes:
    """``prefix(H)`` then ``[applied_offset, instance_count, tasks, latest_kwargs, metadata]``."""
    return b"".join(
        (
            prefix(epoch, KIND_HEADER),
            b"\x95",
            pack(applied_offset),
            pack(len(_stored(state))),
            packed(state.tasks, pack_tasks),
            pack(dict(state.latest_kwargs)),
            pack(dict(state.metadata)),
        )
    )


def encode_instance(instance: TaskInstance, seq: int, applied_offset: int, epoch: int) -> bytes:
    """``prefix(I)`` then ``[applied_offset, seq, name, task, status, kwargs, metadata, abandon, timestamps]``."""
    row = packed(instance, pack_instance)  # a 7-element array: replace its header by a 9-element one
    return b"".join((prefix(epoch, KIND_INSTANCE), b"\x99", pack(applied_offset), pack(seq), row[1:]))


def _stored(state: SessionState) -> Mapping[str, TaskInstance]:
    stored = getattr(state, "stored", None)
    return state.instances if stored is None else stored


_NO_FRESH: Mapping[str, Any] = {}


def changed_instances(old: SessionState | None, new: SessionState) -> tuple[list[tuple[int, str]], list[str]]:
    """``([(seq, name)] of instances to write, [names to tombstone])`` going from ``old`` to ``new``.

    ``seq`` is the instance's position in creation order.  States are immutable and a
    transition keeps the objects it does not change, so identity finds what changed
    (``stored`` instances and their ``fresh`` kwargs).  ``old`` None (nothing stored in
    parts yet: a new session, or one stored in a whole-session record) writes everything;
    so does a removal, which moves the positions of the instances after it.
    """
    new_stored = _stored(new)
    if old is None:
        return list(enumerate(new_stored)), []
    old_stored = _stored(old)
    old_fresh, new_fresh = getattr(old, "fresh", _NO_FRESH), getattr(new, "fresh", _NO_FRESH)
    if old_stored is new_stored and old_fresh is new_fresh:
        return [], []
    old_count = len(old_stored)
    if len(new_stored) >= old_count and list(islice(new_stored, old_count)) == list(old_stored):
        return _appended(old_stored, new_stored, old_fresh, new_fresh), []
    changed = []
    kept = 0
    old_get, old_fresh_get, new_fresh_get = old_stored.get, old_fresh.get, new_fresh.get
    for seq, (name, instance) in enumerate(new_stored.items()):
        previous = old_get(name)
        if previous is None:
            changed.append((seq, name))
            continue
        kept += 1
        if previous is not instance or old_fresh_get(name) is not new_fresh_get(name):
            changed.append((seq, name))
    if kept < len(old_stored):
        removed = [name for name in old_stored if name not in new_stored]
        return list(enumerate(new_stored)), removed
    return changed, []


def _appended(
    old_stored: Mapping[str, TaskInstance],
    new_stored: Mapping[str, TaskInstance],
    old_fresh: Mapping[str, Any],
    new_fresh: Mapping[str, Any],
) -> list[tuple[int, str]]:
    """The common case, where ``new`` kept ``old``'s instances in place and may have added some.

    Compared with C-level loops (``map``, ``compress``): a session of thousands of
    instances pays microseconds, not a Python loop over all of them, per batch.
    """
    names = list(new_stored)
    seqs = set(compress(count(), map(is_not, old_stored.values(), new_stored.values())))
    seqs.update(range(len(old_stored), len(names)))
    if old_fresh is not new_fresh:
        touched = {name for name, kwargs in new_fresh.items() if old_fresh.get(name) is not kwargs}
        touched.update(name for name in old_fresh if name not in new_fresh)
        if touched:
            seqs.update(seq for seq, name in enumerate(names) if name in touched)
    return [(seq, names[seq]) for seq in sorted(seqs)]


# -- reading ---------------------------------------------------------------------------------


def read_header(data: bytes) -> Header:
    """Decode a header part (``StateFormatError`` if it is not one)."""
    if state_kind(data) != KIND_HEADER:
        raise StateFormatError("not a session header part")
    try:
        body = unpack(data[PREFIX_BYTES:])
        applied, count = body[0], body[1]
        if len(body) != 5 or type(applied) is not int or type(count) is not int:
            raise ValueError(f"a header is a 5-element array, not {body!r:.80}")
    except StateFormatError:
        raise
    except Exception as exc:
        raise StateFormatError(f"corrupt session header: {exc}") from exc
    return Header(state_epoch(data), applied, count, body)


def part_version(data: bytes) -> tuple[int, int]:
    """``(epoch, applied_offset)`` of a header or instance part, from its first body element."""
    if state_kind(data) not in (KIND_HEADER, KIND_INSTANCE) or len(data) <= PREFIX_BYTES:
        raise StateFormatError("not a session part")
    marker = data[PREFIX_BYTES]
    if not 0x90 <= marker <= 0x9F:
        raise StateFormatError("corrupt session part: not a short array")
    try:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data[PREFIX_BYTES + 1 : PREFIX_BYTES + 10])  # an int takes at most 9 bytes
        applied = unpacker.unpack()
    except Exception as exc:
        raise StateFormatError(f"corrupt session part: {exc}") from exc
    if type(applied) is not int:
        raise StateFormatError("corrupt session part: applied offset is not an integer")
    return state_epoch(data), applied


def assemble(header: bytes, instances: Iterable[bytes]) -> SessionState:
    """The session a header part and its instance parts describe.

    Instances come back in creation order (their ``seq``).  A count that differs from
    the header's means parts are missing or left over: ``StateFormatError``, never a
    quietly smaller session.
    """
    head = read_header(header)
    try:
        _applied, _count, raw_tasks, latest_kwargs, metadata = head.body
        tasks = read_tasks(raw_tasks)
        rows = []
        for data in instances:
            if state_kind(data) != KIND_INSTANCE:
                raise StateFormatError("not an instance part")
            row = unpack(data[PREFIX_BYTES:])
            if len(row) != 9:
                raise ValueError(f"an instance part is a 9-element array, not {len(row)}")
            rows.append(row)
        rows.sort(key=lambda row: row[1])
        built = {row[2]: read_instance(row[2:], tasks) for row in rows}
    except StateFormatError:
        raise
    except Exception as exc:
        raise StateFormatError(f"corrupt session part: {exc}") from exc
    if len(built) != head.instance_count:
        raise StateFormatError(
            f"incomplete session: its header counts {head.instance_count} instances, {len(built)} parts were found"
        )
    return SessionState.build(tasks, built, latest_kwargs, metadata)
