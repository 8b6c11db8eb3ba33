"""One strict registry type for every extension point (objectives, judges, merge methods)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> item. Registering a name twice is an error; a miss lists the known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)
