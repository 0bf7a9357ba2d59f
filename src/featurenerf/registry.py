"""A small name → class registry shared by teachers and tasks.

A registry is a decorator plus ``get`` / ``list`` / ``create``. Duplicate names are an error; an unknown
name lists the known ones. Third-party packages add entries through an entry-point group that is loaded
lazily (on the first lookup); a plugin that fails to import is reported in one line and skipped, so a
broken plugin never breaks the command line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Generic, TypeVar

from featurenerf.errors import UnknownNameError  # importable from here too, as before

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """Maps names to classes of one kind.

    Args:
        kind: what the entries are, for messages ("teacher", "task").
        entry_point_group: the ``importlib.metadata`` group third-party distributions register under.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, type[T]] = {}
        self._plugins_loaded = False
        self.plugin_errors: dict[str, str] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@registry.register("name")``. Sets ``cls.registry_name``."""

        def decorate(cls: type[T]) -> type[T]:
            existing = self._entries.get(name)
            if existing is not None and existing is not cls:
                # Re-importing the very same class (module reloaded) is harmless; a different class is not.
                same = (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
                if not same:
                    raise ValueError(
                        f"{self.kind} name {name!r} is already registered by "
                        f"{existing.__module__}.{existing.__qualname__}; choose another name"
                    )
            cls.registry_name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorate

    def load_plugins(self) -> None:
        """Import every entry point of the group once; report (not raise) the ones that fail."""
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            try:
                ep.load()
            except (Exception, SystemExit) as exc:  # a broken third-party plugin must not break us
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.plugin_errors[ep.name] = message
                print(
                    f"featurenerf: skipped {self.kind} plugin {ep.name!r} ({ep.value}): {message}",
                    file=sys.stderr,
                )

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; :class:`UnknownNameError` lists the known names."""
        self.load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def list(self) -> list[str]:
        """Registered names, sorted."""
        self.load_plugins()
        return sorted(self._entries)

    def create(self, name: str, **kwargs: object) -> T:
        """Instantiate the class registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        self.load_plugins()
        return name in self._entries
