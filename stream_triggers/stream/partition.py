"""What the worker keeps per owned ``events`` partition: its store, cached sessions, offsets."""

from __future__ import annotations

from collections import OrderedDict

from stream_triggers.engine import EMPTY, SessionState
from stream_triggers.events.state_format import decode_state
from stream_triggers.stream.store import PartitionStore

__all__ = ["Partition", "SessionEntry"]


class SessionEntry:
    """A session's current state and the offset of the last input applied to it.

    Plain data: nothing here points back at a manager or a storage, so an evicted entry
    is freed by reference counting at once.
    """

    __slots__ = ("state", "applied_offset", "encoded", "size_bound")

    def __init__(self, state: SessionState = EMPTY, applied_offset: int = -1) -> None:
        self.state = state
        self.applied_offset = applied_offset
        self.encoded: bytes | None = None
        """``state`` encoded with its partition's epoch, once its size was checked (None: not yet)."""
        self.size_bound = 0
        """An upper bound of the encoded state's size (see ``InputApplier._check_sizes``)."""


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
        """The cached session, loaded from the store (or new) on first use."""
        entry = self.sessions.get(uid)
        if entry is None:
            stored = self.store.get(uid)
            entry = SessionEntry() if stored is None else SessionEntry(decode_state(stored[1]), stored[0])
            entry.size_bound = 0 if stored is None else len(stored[1])
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
        """Keep at most ``limit`` cached sessions (the oldest loaded go first)."""
        sessions = self.sessions
        while len(sessions) > limit:
            sessions.popitem(last=False)
