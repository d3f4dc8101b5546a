"""Reading the changelog: the newest state of each session, assembled from its parts, never a stale one.

Re-exported by :mod:`stream_triggers.events.state_format` (``ChangelogReader``,
``newer``), where every reader imports it from.  The rules are docs/fencing.md's.
"""

from __future__ import annotations

from typing import Any

from stream_triggers.engine.state import SessionState
from stream_triggers.events.codec import CodecError, decode, encode
from stream_triggers.events.state_format import (
    KIND_HEADER,
    KIND_WHOLE,
    StateFormatError,
    decode_state,
    encode_state,
    state_epoch,
    state_kind,
    unpack,
)
from stream_triggers.events.state_parts import SEPARATOR, assemble, part_version, split_key
from stream_triggers.events.tombstones import tombstone_ends, tombstone_marks

__all__ = ["ChangelogReader", "newer"]

Version = tuple[int, int]
"""``(owner epoch, applied input offset)`` of a record: compared as a tuple."""

_NONE: Version = (-1, -1)


def newer(epoch: int, applied_offset: int, than_epoch: int, than_applied_offset: int) -> bool:
    """Whether a state ``(epoch, applied_offset)`` supersedes another one.

    Owners of a partition follow each other with growing epochs, and each one applies a
    session's inputs in ``events`` order: a higher epoch is a later owner (who restored
    everything before it), the same epoch with a higher applied offset a later state.
    """
    return (epoch, applied_offset) > (than_epoch, than_applied_offset)


class _Session:
    """What the reader holds of one session: a whole record and/or a header with its parts."""

    __slots__ = ("whole", "header", "header_version", "parts", "pending", "assembled")

    def __init__(self) -> None:
        self.whole: dict[str, Any] | None = None
        """The newest whole-session snapshot (formats 1-3, 4/S)."""
        self.header: dict[str, Any] | None = None
        """The newest header snapshot (its ``state`` is the header part)."""
        self.header_version = _NONE
        self.parts: dict[str, bytes] = {}
        """Instance name -> committed instance part (its batch's header was read)."""
        self.pending: dict[str, tuple[Version, bytes]] = {}
        """Instance parts whose header has not been read yet (the rest of their batch, or an unfinished one)."""
        self.assembled: dict[str, Any] | None = None

    def whole_version(self) -> Version:
        whole = self.whole
        return _NONE if whole is None else (state_epoch(whole["state"]), whole["applied_offset"])

    def version(self) -> Version:
        return max(self.whole_version(), self.header_version)

    def in_parts(self) -> bool:
        return self.header is not None and self.header_version > self.whole_version()


class ChangelogReader:
    """Assembles the newest state of each session from changelog records read in offset order.

    The one reader API every consumer of the changelog uses (worker restore follows the
    same rules, ``kafka`` storage, ``inspect``).  Rules (docs/fencing.md):

    * per changelog partition, the highest owner epoch seen so far; a record stamped
      with a lower epoch was written by a worker that had already lost the partition
      (it woke up after a freeze) and is **stale**: it is ignored;
    * per session, a whole record or a header replaces what is kept only if it is
      :func:`newer`; an instance part counts once a header at least as new as it was
      read (a batch writes its instance parts, then its header), and later parts of the
      same instance replace earlier ones;
    * a tombstone removes its part (a header's or whole record's: the whole session);
      a purge's tombstone (marked with the purging owner's epoch and the applied offset it
      ends: :mod:`~stream_triggers.events.tombstones`) removes the whole session on any of
      its keys, unless it is stale by epoch or the session kept is newer than what it ended.

    ``uid`` restricts it to one session (the others are not decoded).
    """

    def __init__(self, uid: str | None = None) -> None:
        self.uid = uid
        self._key = None if uid is None else uid.encode()
        self._sessions: dict[str, _Session] = {}
        self.max_epoch: dict[int, int] = {}
        """changelog partition -> highest owner epoch seen."""
        self.stale = 0
        """Records ignored because a later owner had already written to their partition."""
        self.unreadable = 0
        """Records that are no session record (not decodable); see the worker's strict restore."""

    def _mine(self, key: bytes | None) -> bool:
        mine = self._key
        return mine is None or key == mine or (key is not None and key.startswith(mine + SEPARATOR))

    def add(
        self, key: bytes | None, value: bytes | None, partition: int = 0, headers: Any = None
    ) -> dict[str, Any] | None:
        """Take one changelog record (with its ``headers``: a purge's tombstone is marked); return its
        snapshot if it is now kept."""
        if not self._mine(key):
            if value is not None:  # another session: only its epoch matters (it fences stale writers)
                self._see_epoch(partition, _peek_epoch(value))
            elif (marks := tombstone_marks(headers)) is not None:
                self._see_epoch(partition, marks[0])  # another session's purge fences like its states
            return None
        if value is None:
            if key is not None:
                self._tombstone(key, partition, tombstone_marks(headers))
            return None
        try:
            _, snapshot = decode(value)
        except CodecError:
            self.unreadable += 1
            return None  # not a session record (the caller may log it); it says nothing of epochs
        return self.offer(snapshot, partition, key)

    def _tombstone(self, key: bytes, partition: int, marks: tuple[int, int] | None) -> None:
        try:
            part = split_key(key)
        except StateFormatError:
            self.unreadable += 1
            return
        if marks is not None:
            if marks[0] < self.max_epoch.get(partition, 0):
                self.stale += 1
                return
            self._see_epoch(partition, marks[0])
        session = self._sessions.get(part.uid)
        if session is None:
            return
        if marks is not None:  # a purge: the whole session, unless a newer state of it was read
            if tombstone_ends(marks, session.version()):
                del self._sessions[part.uid]
            else:
                self.stale += 1
            return
        if part.part == "instance":
            session.parts.pop(part.name, None)
            session.pending.pop(part.name, None)
            session.assembled = None
        else:
            del self._sessions[part.uid]

    def offer(self, snapshot: dict[str, Any], partition: int = 0, key: bytes | None = None) -> dict[str, Any] | None:
        """Take one decoded ``SessionSnapshot``; return it if it is now kept."""
        data = snapshot["state"]
        epoch = state_epoch(data)
        if epoch < self.max_epoch.get(partition, 0):
            self.stale += 1
            return None
        self._see_epoch(partition, epoch)
        uid = snapshot["session_uid"]
        version = (epoch, snapshot["applied_offset"])
        session = self._sessions.get(uid)
        if session is None:
            session = self._sessions[uid] = _Session()
        kind = state_kind(data)
        if kind == KIND_WHOLE:
            if version <= session.version():
                return None
            session.whole = snapshot
        elif kind == KIND_HEADER:
            if version <= session.version():
                return None
            session.header, session.header_version = snapshot, version
            for name, (part_at, part) in list(session.pending.items()):
                if part_at <= version:
                    session.parts[name] = part
                    del session.pending[name]
        else:
            name = split_key(key).name if key is not None else _instance_name(data)
            if name is None:
                raise StateFormatError(f"an instance part under the key {key!r}")
            version = part_version(data)
            if session.header is not None and version <= session.header_version:
                session.parts[name] = data
                session.pending.pop(name, None)
            else:
                session.pending[name] = (version, data)
        session.assembled = None
        return snapshot

    def _see_epoch(self, partition: int, epoch: int) -> None:
        if epoch > self.max_epoch.get(partition, 0):
            self.max_epoch[partition] = epoch

    def snapshot(self, uid: str | None = None) -> dict[str, Any] | None:
        """The session's newest ``SessionSnapshot`` (default: the reader's session), or None.

        A session stored in parts comes back assembled, its ``state`` a whole-session value
        (format 4, kind ``S``) that :func:`decode_state` reads.  Raises ``StateFormatError``
        when its parts do not add up (docs/state-format.md).
        """
        session = self._sessions.get(self.uid if uid is None else uid)
        if session is None:
            return None
        if not session.in_parts():
            return session.whole
        if session.assembled is None:
            header = session.header
            assert header is not None
            state = self._assemble(session)
            session.assembled = {**header, "state": encode_state(state, session.header_version[0])}
        return session.assembled

    @staticmethod
    def _assemble(session: _Session) -> SessionState:
        assert session.header is not None
        return assemble(session.header["state"], session.parts.values())

    @property
    def snapshots(self) -> dict[str, dict[str, Any]]:
        """uid -> the newest snapshot of every session read (assembled, see :meth:`snapshot`)."""
        found = {uid: self.snapshot(uid) for uid in self._sessions}
        return {uid: snapshot for uid, snapshot in found.items() if snapshot is not None}

    def state(self, uid: str | None = None) -> tuple[SessionState, int] | None:
        """The kept state of ``uid`` and the offset of the last input it reflects, or None."""
        session = self._sessions.get(self.uid if uid is None else uid)
        if session is None:
            return None
        if session.in_parts():
            assert session.header is not None
            return self._assemble(session), session.header["applied_offset"]
        if session.whole is None:
            return None
        return decode_state(session.whole["state"]), session.whole["applied_offset"]


def _instance_name(data: bytes) -> str | None:
    try:
        name = unpack(data[10:])[2]
    except Exception as exc:
        raise StateFormatError(f"corrupt instance part: {exc}") from exc
    return name if isinstance(name, str) else None


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
            return state_epoch(value[at : at + min(length, 9)])
        return state_epoch(decode(value)[1]["state"])
    except (CodecError, StateFormatError, IndexError, KeyError, TypeError):
        return 0


def _snapshot_header() -> bytes:
    record = {"session_uid": "", "produced_at": 0, "state": b"", "input_partition": 0, "applied_offset": 0}
    return encode("SessionSnapshot", record)[:10]


_SNAPSHOT_HEADER = _snapshot_header()
