"""Entry-point registries that also accept classes registered at runtime.

ClassRegistry's ``EntryPointClassRegistry`` only knows installed entry points; the
original framework's users also call ``registry.register(key)(cls)`` and
``registry.unregister(key)`` (e.g. in tests), so this registry supports both.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from class_registry.entry_points import EntryPointClassRegistry

from stream_triggers.exceptions import RegistryKeyError

__all__ = ["PluginRegistry", "RegistryKeyError", "REGISTRY_KEY_ATTR"]

T = TypeVar("T")

REGISTRY_KEY_ATTR = "triggers__registry_key"
"""Attribute branded on each class with its key (the original framework's name)."""


class PluginRegistry(EntryPointClassRegistry[T]):
    """Classes from an entry-point group, plus runtime ``register``/``unregister``."""

    def __init__(self, group: str, kind: str) -> None:
        self.kind = kind
        self._runtime: dict[Hashable, type[T]] = {}
        self._removed: set[Hashable] = set()
        # Brand lazily: warming the cache here would import the plugins while the
        # module defining this registry is still half-imported.
        super().__init__(group=group, attr_name=None)
        self.attr_name = REGISTRY_KEY_ATTR

    def register(self, key: Hashable) -> Callable[[type[T]], type[T]]:
        """Decorator: ``@registry.register('custom') class Custom(...)``."""

        def decorate(cls: type[T]) -> type[T]:
            setattr(cls, REGISTRY_KEY_ATTR, key)
            self._runtime[key] = cls
            self._removed.discard(key)
            return cls

        return decorate

    def unregister(self, key: Hashable) -> type[T]:
        cls = self.get_class(key)
        self._runtime.pop(key, None)
        self._removed.add(key)
        return cls

    def _get_cache(self) -> dict[Hashable, type[T]]:
        if self._cache is None:
            # Load plugin by plugin: one broken plugin must not hide the others.
            self._cache, self._broken = {}, {}
            for entry_point in entry_points(group=self.group):
                try:
                    cls = entry_point.load()
                except Exception as exc:
                    self._broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
                    continue
                if isinstance(cls, type):
                    setattr(cls, REGISTRY_KEY_ATTR, entry_point.name)
                self._cache[entry_point.name] = cls
        cache = self._cache
        if self._runtime or self._removed:
            cache = {k: v for k, v in cache.items() if k not in self._removed}
            cache.update(self._runtime)
        return cache

    def refresh(self) -> None:
        super().refresh()
        self._runtime.clear()
        self._removed.clear()

    def __missing__(self, key: Hashable) -> Any:
        broken = getattr(self, "_broken", {}).get(key)
        if broken is not None:
            raise RegistryKeyError(f"The {self.kind} {key!r} is installed but failed to load: {broken}")
        known = ", ".join(sorted(map(str, self.keys()))) or "none"
        raise RegistryKeyError(f"Unknown {self.kind} {key!r}; registered {self.kind}s: {known}.")
