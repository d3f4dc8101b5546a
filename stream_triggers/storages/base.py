"""What every storage backend offers: the session's state, its queries, and a lock.

A backend only says how to load and save one session's :class:`SessionState` (with a
version number, so a save that raced another writer is refused) and which lock
guards a session; this base turns that into the original framework's storage API.

Instances read through the storage are private copies: code written against the
original framework may mutate them inside ``acquire_lock()`` and call ``save()``,
and only then do the edits reach the stored state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from threading import get_ident
from types import MappingProxyType
from typing import Any

from stream_triggers.engine import (
    EMPTY,
    ConfigurationUpdated,
    Draft,
    Effect,
    Input,
    SessionState,
    UnknownInstance,
    build_task_configs,
    checked_instance,
    new_instance,
    step,
)
from stream_triggers.exceptions import StreamTriggersError
from stream_triggers.registry import PluginRegistry
from stream_triggers.storages.locking import LockAcquisitionFailed, SessionLocks
from stream_triggers.types import Status, TaskConfig, TaskInstance

__all__ = [
    "BaseTriggerStorage",
    "ConcurrentModification",
    "LockAcquisitionFailed",
    "storage_backends",
    "utc_now",
]


def _naive_utc_now() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, now.hour, now.minute, now.second, now.microsecond)


# Naive UTC, like the original framework's timestamps.  Every manager input is stamped
# with it: ``datetime.utcnow`` is ten times faster than going through an aware
# datetime, but Python 3.12 deprecated it, so newer versions take the long way.
utc_now: Callable[[], datetime] = datetime.utcnow if sys.version_info < (3, 12) else _naive_utc_now


_compat_locks = SessionLocks()
_NO_ERROR = (None, None, None)


class ConcurrentModification(StreamTriggersError, RuntimeError):
    """The stored session changed since it was loaded; the save was refused."""


class BaseTriggerStorage:
    """Loads, caches, queries and saves one session's state."""

    name: str | None = None
    """Registry key of the backend (set by ``storage_backends``)."""

    default_task_runner_name = "threading"
    """Runner for tasks without ``using``, unless the manager overrides it."""

    def __init__(self, uid: str) -> None:
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"A session UID must be a non-empty string, not {uid!r}.")
        self.uid = uid
        self._state: SessionState | None = None
        self._version: int = 0
        self._views: dict[str, TaskInstance] = {}
        self._lock_owner: int | None = None

    # -- what a backend implements ----------------------------------------------------
    #
    # Either the three methods below (how the bundled backends work: whole immutable
    # states, a version check), or - as backends written for the original framework
    # do - ``_load_from_backend()`` returning ``(task configs, instances, metadata)``
    # as plain dicts and ``_save()`` persisting ``self._configs``, ``self._instances``
    # and ``self._metas`` (serialise them with ``self._serialize``).

    def _load_state(self) -> tuple[SessionState | None, int]:
        """The stored state (None if the session is new) and its version."""
        raw_configs, raw_instances, raw_metas = self._load_from_backend()
        if not raw_configs and not raw_instances and not raw_metas:
            return None, 0
        tasks = {name: TaskConfig(name=name, **dict(raw)) for name, raw in (raw_configs or {}).items()}
        instances = {}
        for name, raw in (raw_instances or {}).items():
            raw = dict(raw)
            instances[name] = TaskInstance(name=name, config=tasks[raw.pop("task")], **raw)
        metadata = dict(raw_metas or {})
        latest_kwargs = metadata.pop("latest_kwargs", None) or {}
        return SessionState.build(tasks, instances, latest_kwargs, metadata), 0

    def _save_state(self, state: SessionState, expected_version: int) -> int:
        """Store ``state`` if the stored version is still ``expected_version``.

        Returns the new version; raises :class:`ConcurrentModification` otherwise.
        """
        self._configs = dict(state.tasks)
        self._instances = dict(state.instances)
        self._metas = {**state.metadata, "latest_kwargs": dict(state.latest_kwargs)}
        self._save()
        return expected_version + 1

    def _session_lock(self) -> AbstractContextManager[Any]:
        """The lock that serialises writers of this session (default: this process's threads).

        Asked afresh for every operation, so it may return a single-use context manager.
        The default lock is the one named :meth:`get_lock_name`.
        """
        return _compat_locks(self.get_lock_name())

    def get_lock_name(self) -> str:
        """The name of this session's lock: storages that return the same name share it."""
        return f"triggers:{self.uid}:lock"

    def _load_from_backend(self) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
        """Original-framework backends: (task configs, task instances, session metadata)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _load_state/_save_state "
            f"(or the original framework's _load_from_backend/_save)."
        )

    def _save(self) -> None:
        """Original-framework backends: persist ``self._configs``, ``_instances``, ``_metas``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _save_state (or _save).")

    def _load_default_configuration(self) -> Mapping[str, Mapping[str, Any]] | None:
        """The configuration a session starts with when none is stored (as for
        ``update_configuration``); None: start with none.  Loaded, not saved: ``save()``
        stores it with the session's first change, as the original did."""
        return None

    @staticmethod
    def _serialize(objects: Mapping[str, Any], optimize_for_backend: bool = True) -> dict[str, Any]:
        """``{name: obj.serialize()}`` for task configs or instances (for ``_save``)."""
        return {name: obj.serialize() for name, obj in objects.items()}

    def fresh(self) -> BaseTriggerStorage:
        """A new storage object for the same session and backend (for task threads)."""
        return type(self)(self.uid)

    def close(self) -> None:
        """Release backend resources (nothing by default)."""

    # -- loading ----------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        if self._state is None:
            loaded, self._version = self._load_state()
            state = EMPTY if loaded is None else loaded
            if not state.tasks and (default := self._load_default_configuration()):
                tasks = build_task_configs(default)  # validated as update_configuration's
                state = SessionState.build(tasks, state.instances, state.latest_kwargs, state.metadata)
            self._state = state
        return self._state

    def invalidate_cache(self) -> None:
        """Forget the loaded state so the next read comes from the backend."""
        self._state = None
        if self._views:
            self._views = {}

    # -- the original framework's read API ---------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskConfig]:
        return MappingProxyType(self.state.tasks)

    @property
    def instances(self) -> Mapping[str, TaskInstance]:
        return _InstancesView(self)

    @property
    def latest_kwargs(self) -> Mapping[str, Mapping[str, Any]]:
        """The kwargs each trigger fired with most recently."""
        return MappingProxyType(self.state.latest_kwargs)

    @property
    def metadata(self) -> Mapping[str, Any]:
        state = self.state
        return MappingProxyType({**state.metadata, "latest_kwargs": state.latest_kwargs})

    def __getitem__(self, instance_name: str) -> TaskInstance:
        return self.instances[instance_name]

    def __iter__(self) -> Iterator[TaskInstance]:
        return iter(list(self.instances.values()))

    def iter_instances(self) -> Iterator[TaskInstance]:
        return iter(self)

    def _view(self, name: str) -> TaskInstance:
        view = self._views.get(name)
        if view is None:
            instance = self.state.instances.get(name)
            if instance is None:
                raise UnknownInstance(name)
            view = self._views[name] = instance.copy()
        return view

    def instances_of_task(self, task_config: TaskConfig | str) -> dict[str, TaskInstance]:
        task = task_config.name if isinstance(task_config, TaskConfig) else task_config
        return {name: self._view(name) for name in self.state.by_task.get(task, ())}

    def get_unresolved_tasks(self) -> list[TaskConfig]:
        """Tasks with no instance yet, or with an instance that is not resolved."""
        return self.state.unresolved_tasks()

    def get_unresolved_instances(self) -> list[TaskInstance]:
        return [self._view(i.name) for i in self.state.unresolved_instances()]

    def get_instances_with_unresolved_logs(self) -> list[TaskInstance]:
        return [self._view(n) for n, i in self.state.instances.items() if not i.logs_resolved]

    def debug_repr(self) -> dict[str, Any]:
        state = self.state
        return {
            "tasks": {name: config.serialize() for name, config in state.tasks.items()},
            "instances": {name: self._view(name).serialize() for name in state.instances},
            "metas": dict(self.metadata),
        }

    # -- changing the state --------------------------------------------------------------

    @property
    def has_lock(self) -> bool:
        return self._lock_owner == get_ident()

    def acquire_lock(self, ttl: Any = True, block: bool = True) -> AbstractContextManager[BaseTriggerStorage]:
        """Lock the session, reload it, and yield this storage for writing.

        Re-entrant: a storage that already holds the lock just yields itself.  With
        ``block=False``, a lock held by another thread raises
        :class:`LockAcquisitionFailed` at once instead of waiting.  (``ttl`` is
        accepted for compatibility: these locks live as long as their holder.)
        """
        return _Locked(self, block)

    def _lock_and_reload(self, block: bool = True) -> AbstractContextManager[Any] | None:
        """Take the session lock for this thread and forget the cached state.

        Returns the lock for :meth:`_unlock`, or None if this thread holds it already
        (re-entered: the outer holder reloaded and will release).  ``acquire_lock()``
        is built on these two; the manager calls them directly on its hot path.
        """
        me = get_ident()
        if self._lock_owner == me:
            return None
        lock = self._session_lock()
        if block:
            lock.__enter__()
        else:
            try_acquire = getattr(lock, "acquire", None)
            if try_acquire is None:  # a lock that cannot be tried: take it the usual way
                lock.__enter__()
            elif not try_acquire(blocking=False):
                raise LockAcquisitionFailed(f"The lock on session {self.uid!r} is held elsewhere (block=False).")
        self.invalidate_cache()
        self._lock_owner = me
        return lock

    def _unlock(self, lock: AbstractContextManager[Any] | None, exc_info: tuple[Any, Any, Any] = _NO_ERROR) -> None:
        """Release what :meth:`_lock_and_reload` took (``exc_info`` as ``__exit__`` gets it)."""
        if lock is not None:
            self._lock_owner = None
            lock.__exit__(*exc_info)

    def apply(self, event: Input) -> list[Effect]:
        """Run one engine transition on the loaded state (save() persists it)."""
        self._state, effects = step(self.state, event)
        if self._views:
            self._views = {}
        return effects

    def save(self) -> None:
        """Persist the loaded state, including edits made to instances read from here."""
        if not self.has_lock:
            raise RuntimeError("You must ``acquire_lock`` before saving!")
        if self._state is None:
            return
        if self._views:
            self._write_back_views()
        self._version = self._save_state(self._state, self._version)

    def _write_back_views(self) -> None:
        state = self._state
        dirty = [
            view
            for name, view in self._views.items()
            if (stored := state.instances.get(name)) is None or not view.same_as(stored)
        ]
        if dirty:
            draft = Draft(state)
            for view in dirty:
                view.status = Status(view.status)
                draft.put(checked_instance(view.copy()))  # (the payload rules inputs meet)
            self._state = draft.finish()

    def update_configuration(self, configuration: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or replace task configurations (persisted by ``save()``)."""
        self.apply(ConfigurationUpdated(configuration, utc_now()))

    def create_instance(self, task_config: TaskConfig | str, **kwargs: Any) -> TaskInstance:
        """Add a new unstarted instance of ``task_config``; extra kwargs go to TaskInstance."""
        state = self.state
        config = state.tasks[task_config] if isinstance(task_config, str) else task_config
        draft = Draft(state)
        instance = new_instance(draft, config, utc_now())
        if kwargs:
            metadata = {**instance.metadata, **(kwargs.pop("metadata", None) or {})}
            instance = TaskInstance(name=instance.name, config=config, metadata=metadata, **kwargs)
        draft.put(checked_instance(instance))
        self._state = draft.finish()
        return self._view(instance.name)

    def clone_instance(self, task_instance: TaskInstance | str) -> TaskInstance:
        """Add a copy of an instance (as a replay would: depth + 1, parent set)."""
        if not isinstance(task_instance, TaskInstance):
            task_instance = self.instances[task_instance]
        return self.create_instance(
            task_instance.config,
            kwargs=dict(task_instance.kwargs),
            abandonState=set(task_instance.abandon_state),
            metadata={
                TaskInstance.META_DEPTH: task_instance.depth + 1,
                TaskInstance.META_PARENT: task_instance.name,
            },
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} uid={self.uid!r}>"


class _Locked:
    """``acquire_lock()``'s context manager."""

    __slots__ = ("_storage", "_lock", "_block")

    def __init__(self, storage: BaseTriggerStorage, block: bool = True) -> None:
        self._storage = storage
        self._block = block
        self._lock: AbstractContextManager[Any] | None = None

    def __enter__(self) -> BaseTriggerStorage:
        self._lock = self._storage._lock_and_reload(self._block)
        return self._storage

    def __exit__(self, *exc_info: Any) -> None:
        self._storage._unlock(self._lock, exc_info)


class _InstancesView(Mapping[str, TaskInstance]):
    """``storage.instances``: a mapping whose values are the storage's private copies."""

    __slots__ = ("_storage",)

    def __init__(self, storage: BaseTriggerStorage) -> None:
        self._storage = storage

    def __getitem__(self, name: str) -> TaskInstance:
        if name not in self._storage.state.instances:
            raise KeyError(name)
        return self._storage._view(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._storage.state.instances))

    def __len__(self) -> int:
        return len(self._storage.state.instances)

    def __contains__(self, name: object) -> bool:
        return name in self._storage.state.instances

    def __repr__(self) -> str:
        return f"{{{', '.join(repr(n) for n in self)}}}"


storage_backends: PluginRegistry[BaseTriggerStorage] = PluginRegistry(
    group="stream_triggers.storages", kind="storage backend"
)
"""Storage backends by name (entry-point group ``stream_triggers.storages``)."""
