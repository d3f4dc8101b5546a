"""One RocksDB store per owned ``events`` partition: a cache of the changelog.

Each session's value is its encoded state prefixed by the offset of the last input
applied to it, and every batch write also records the changelog offset the store
now reflects (the checkpoint).  Both land in one atomic write batch, so after any
crash the store is a consistent, possibly older, point of the changelog; restore
replays the changelog from the checkpoint.  That is also why the write-ahead log is
off: losing unflushed writes only means a longer restore.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterable

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

__all__ = ["PartitionStore", "SessionRecord"]

_OFFSET = struct.Struct(">q")
_SESSION = b"s:"
_CHECKPOINT = b"m:changelog-offset"
_MAX_EPOCH = b"m:max-epoch"
_MEMTABLE_BYTES = 4 * 1024 * 1024

SessionRecord = tuple[int, bytes]
"""(applied input offset, encoded session state)."""


class PartitionStore:
    """Sessions of one input partition, in ``<state_dir>/<topic>-<partition>``."""

    def __init__(self, state_dir: str, topic: str, partition: int) -> None:
        self.partition = partition
        self.path = os.path.join(state_dir, f"{topic}-{partition}")
        os.makedirs(self.path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Small memtables: a worker opens one store per partition, and without a WAL a
        # memtable only protects restore time, which the changelog bounds anyway.
        options.set_write_buffer_size(_MEMTABLE_BYTES)
        options.set_max_write_buffer_number(2)
        self._db = Rdict(self.path, options)
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True

    def get(self, uid: str) -> SessionRecord | None:
        value = self._db.get(_SESSION + uid.encode())
        if value is None:
            return None
        return _OFFSET.unpack_from(value)[0], value[_OFFSET.size :]

    @property
    def changelog_checkpoint(self) -> int:
        """Offset of the last changelog record reflected here (-1: none)."""
        value = self._db.get(_CHECKPOINT)
        return -1 if value is None else _OFFSET.unpack(value)[0]

    @property
    def max_epoch(self) -> int:
        """Highest owner epoch seen in the changelog up to the checkpoint (0: none)."""
        value = self._db.get(_MAX_EPOCH)
        return 0 if value is None else _OFFSET.unpack(value)[0]

    def write(
        self,
        sessions: Iterable[tuple[str, int, bytes]],
        changelog_checkpoint: int | None,
        max_epoch: int | None = None,
    ) -> None:
        """Atomically store ``(uid, applied_offset, state)`` rows, the checkpoint and the max epoch."""
        batch = WriteBatch(raw_mode=True)
        for uid, applied_offset, state in sessions:
            batch.put(_SESSION + uid.encode(), _OFFSET.pack(applied_offset) + state)
        if changelog_checkpoint is not None:
            batch.put(_CHECKPOINT, _OFFSET.pack(changelog_checkpoint))
        if max_epoch is not None:
            batch.put(_MAX_EPOCH, _OFFSET.pack(max_epoch))
        if not batch.is_empty():
            self._db.write(batch, self._write_options)

    def close(self) -> None:
        self._db.flush()
        self._db.close()

    @staticmethod
    def wipe(state_dir: str, topic: str, partition: int) -> None:
        """Delete a partition's store (it is rebuilt from the changelog)."""
        shutil.rmtree(os.path.join(state_dir, f"{topic}-{partition}"), ignore_errors=True)
