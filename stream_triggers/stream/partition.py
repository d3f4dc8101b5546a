"""What the worker keeps per owned ``events`` partition: its store, cached sessions, offsets."""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice

from stream_triggers.engine import EMPTY, SessionState
from stream_triggers.events.state_format import StateFormatError
from stream_triggers.events.state_parts import (
    changed_instances,
    encode_header,
    encode_instance,
    header_key,
    instance_key,
)
from stream_triggers.stream.store import PartitionStore

__all__ = ["ChangelogRows", "Partition", "SessionEntry", "changelog_rows", "instance_rows"]

ChangelogRows = list[tuple[bytes, bytes | None]]
"""``(changelog key, part value or None for a tombstone)``, in the order they are produced."""
NativeRows = tuple[list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes]], bool]
"""(RocksDB rows, changelog records (key, SessionSnapshot bytes), whether the session is finalized)."""
"""``(RocksDB rows, changelog records)``: store keys with values (None: delete), and changelog
keys with their ``SessionSnapshot`` values, in the order they are written."""


class SessionEntry:
    """A session's current state and the offset of the last input applied to it.

    Plain data: nothing here points back at a manager or a storage, so an evicted entry
    is freed by reference counting at once.
    """

    __slots__ = (
        "state",
        "applied_offset",
        "committed",
        "encoded",
        "size_bound",
        "whole",
        "finalized_at",
        "native_rows",
    )

    def __init__(
        self, state: SessionState = EMPTY, applied_offset: int = -1, committed: SessionState | None = None
    ) -> None:
        self.state = state
        self.applied_offset = applied_offset
        self.committed = committed
        """The state as stored in parts (None: not in parts yet, so the next write writes every part)."""
        self.encoded: tuple[SessionState, int, ChangelogRows] | None = None
        """``(state, applied offset, its instance rows)`` once its sizes were checked (None: not yet)."""
        self.size_bound = 0
        """An upper bound of the encoded state's size (see ``InputApplier._check_sizes``)."""
        self.whole = False
        """Written as one whole-session record by the batch in hand (small, never in parts)."""
        self.finalized_at: int | None = None
        """When the session was finalized (µs; 0: not yet; None: not looked up in the store yet)."""
        self.native_rows: NativeRows | None = None
        """The batch's state records as the native core encoded them (None: encode ``state`` here)."""


def instance_rows(uid: str, entry: SessionEntry, epoch: int) -> ChangelogRows:
    """The instance parts (and tombstones) that bring the stored session to ``entry.state``."""
    cached = entry.encoded
    if cached is not None and cached[0] is entry.state and cached[1] == entry.applied_offset:
        return cached[2]
    changed, removed = changed_instances(entry.committed, entry.state)
    instances, applied = entry.state.instances, entry.applied_offset
    rows: ChangelogRows = [
        (instance_key(uid, name), encode_instance(instances[name], seq, applied, epoch)) for seq, name in changed
    ]
    rows.extend((instance_key(uid, name), None) for name in removed)
    return rows


def changelog_rows(uid: str, entry: SessionEntry, epoch: int) -> ChangelogRows:
    """What one batch writes for a changed session: its changed parts, tombstones, and the header last.

    The header comes last so that a reader knows the batch's parts are all there once it
    reads it (docs/state-format.md, "Reading parts").
    """
    rows = instance_rows(uid, entry, epoch)
    return [*rows, (header_key(uid), encode_header(entry.state, entry.applied_offset, epoch))]


class Partition:
    """One owned partition: its RocksDB store, a bounded cache of sessions, the batch's offsets."""

    __slots__ = (
        "number",
        "store",
        "epoch",
        "sessions",
        "dirty",
        "next_offset",
        "commit_offset",
        "committed",
        "skip_rest",
        "restored",
    )

    def __init__(self, number: int, store: PartitionStore, epoch: int = 0) -> None:
        self.number = number
        self.store = store
        self.epoch = epoch
        """Owner epoch (the group generation of this assignment), stamped on every state written."""
        self.sessions: OrderedDict[str, SessionEntry] = OrderedDict()
        """Cached sessions, least recently loaded first (trimmed after each batch)."""
        self.dirty: dict[str, SessionEntry] = {}
        """Sessions the batch in hand changed (written by the checkpoint)."""
        self.next_offset: int | None = None
        """The ``events`` offset expected next (None: whatever the consumer starts from)."""
        self.commit_offset: int | None = None
        """The ``events`` offset to commit at the end of the batch."""
        self.committed: int | None = None
        """The ``events`` offset last committed (what a membership probe commits again)."""
        self.skip_rest = False
        """True after an offset gap: the rest of the batch is re-fetched from the gap."""
        self.restored = False
        """Set once the store caught up with the changelog: only then are inputs applied."""

    def session(self, uid: str) -> SessionEntry:
        """The cached session, loaded from the store (or new) on first use.

        Raises ``StateFormatError`` for a session that cannot be read or is quarantined
        (its input goes to the dead letters with reason ``corrupt_state``).
        """
        entry = self.sessions.get(uid)
        if entry is None:
            quarantined = self.store.quarantined(uid)
            if quarantined is not None:
                raise StateFormatError(f"session {uid!r} is quarantined: {quarantined}")
            stored = self.store.read_session(uid)
            if stored is None:
                entry = SessionEntry()
            else:
                committed = stored.state if stored.in_parts else None
                entry = SessionEntry(stored.state, stored.applied_offset, committed)
                entry.size_bound = stored.size
            self.sessions[uid] = entry
        return entry

    def drop_batch(self) -> None:
        """Forget the batch in hand (never made durable): cached sessions and offsets go back."""
        self.sessions.clear()
        self.dirty.clear()
        self.next_offset = self.commit_offset = self.committed
        self.skip_rest = False

    def forget(self, uid: str) -> None:
        """Drop a cached session (the store now holds a newer one)."""
        self.sessions.pop(uid, None)

    def trim(self, limit: int) -> None:
        """Keep at most ``limit`` cached sessions (the oldest loaded go first), and every
        session the batches in hand changed (their state is not in the store yet)."""
        sessions, dirty = self.sessions, self.dirty
        excess = len(sessions) - limit
        if excess <= 0:
            return
        if not dirty:
            for _ in range(excess):
                sessions.popitem(last=False)
            return
        for uid in [uid for uid in islice(sessions, excess + len(dirty)) if uid not in dirty][:excess]:
            del sessions[uid]
