"""The built-in judges, one small module each; importing this package registers every module in it
(`registry.discover("judge")`).

Adding a judge = one new module here: its settings model (a subclass of `config.JudgeSettings`) and a class
decorated with `@register_judge(name, settings)` whose `judge(prompts, outputs, expected, harmful_prompt)` returns
one of `judge.LABELS` per output. The tests run every registered judge (tests/evaluation)."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
