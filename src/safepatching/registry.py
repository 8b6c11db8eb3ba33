"""One strict registry type for every extension point (objectives, judges, merge methods), and the discovery
of the built-in extensions.

An extension is one registered object with a `name` and a `settings` model (a pydantic class, subclass of
`config.Settings`): config validation looks the settings model up by name right after loading params.yaml, so a
misspelled name or setting fails before any stage does work. The wings register their built-ins when imported;
`discover()` imports the modules that hold them (by name: the ground floor never imports a wing statically).
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")

# kind -> the module(s) whose import registers the built-in extensions of that kind
BUILTIN_MODULES = {
    "merge method": ("safepatching.merging.methods",),
    "objective": ("safepatching.patching.objectives",),
    "judge": ("safepatching.evaluation.judges",),
}
_REGISTRIES: dict[str, "Registry"] = {}


class Registry(Generic[T]):
    """name -> item. Registering a name twice is an error; a miss lists the known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        _REGISTRIES.setdefault(kind, self)

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


def discover(kind: str) -> Registry:
    """The registry of `kind` with its built-in extensions registered (imports their modules once)."""
    if kind not in BUILTIN_MODULES:
        raise UnknownNameError(f"unknown extension kind {kind!r}; known: {sorted(BUILTIN_MODULES)}")
    for mod in BUILTIN_MODULES[kind]:
        importlib.import_module(mod)
    return _REGISTRIES[kind]


def settings_model(kind: str, name: str):
    """The settings model of the extension `name` of `kind` (UnknownNameError lists the known names)."""
    return discover(kind).get(name).settings
