"""Storage backends: ``storage_backends.get('memory' | 'rocksdb' | 'kafka', uid, ...)``."""

from stream_triggers.storages.base import BaseTriggerStorage, ConcurrentModification, storage_backends

__all__ = ["BaseTriggerStorage", "ConcurrentModification", "storage_backends"]
