"""The built-in patch objectives, one small module each; importing this package registers every module in it
(`registry.discover("objective")`).

Adding an objective = one new module here: an `Objective` subclass with its `name`, `direction` (+1 ascent, -1
descent), `loss` and, when it has defaults or knobs of its own, a settings model subclassing `config.ObjectiveCfg`,
decorated with `@register_objective`. The tests run every registered objective (tests/patching)."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
