"""The built-in merge methods, one small module each; importing this package registers every module in it.

Adding a method = one new module here (its settings model + `@register_merge` function); the tests parametrise over
every registered method (tests/merging/test_methods.py), so no test changes."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
