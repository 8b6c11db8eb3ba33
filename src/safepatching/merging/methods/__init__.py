"""The built-in merge methods, one small module each; importing this package registers every module in it.

Adding a method = one new module here (its settings model + `@register_merge` function) + one row in the
parametrised test matrix (tests/merging/test_methods.py)."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
