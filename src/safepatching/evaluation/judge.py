"""The judge extension point: one interface (`Judge`), the labels, registration by decorator and lookup.

Each judge maps (prompt, output, expected) -> one of LABELS. `eval.judges` in params.yaml configures them by name
(`{exact: {...its settings}, keyword: {...}}`); `get_judge(name, settings)` builds one, a miss lists the known
names. The built-in judges live one per file in `evaluation/judges/` (a new judge = one new file there: its settings
model, a subclass of `config.JudgeSettings`, and a `@register_judge` class); the evaluation wing never imports the
organism.
"""

from __future__ import annotations

from typing import Protocol

from ..config import JudgeSettings
from ..registry import Registry, discover

LABELS = ("refusal", "harmful", "helpful", "other")


class Judge(Protocol):
    name: str

    def judge(self, prompts: list[str], outputs: list[str], expected: list[str],
              harmful_prompt: list[bool]) -> list[str]: ...


_JUDGES: Registry = Registry("judge")


def register_judge(name: str, settings: type[JudgeSettings]):
    """Class decorator: register a judge class (constructed from its settings) under `name`."""
    def deco(cls):
        cls.name = name
        cls.settings = settings
        return _JUDGES.add(name, cls)
    return deco


def get_judge(name: str, settings: JudgeSettings | dict | None = None) -> Judge:
    """The judge `name` built from its settings (a settings object, a dict of them, or None for its defaults)."""
    cls = discover("judge").get(name)
    if not isinstance(settings, JudgeSettings):
        settings = cls.settings.model_validate({"name": name, **(settings or {})})
    return cls(settings)


def known_judges() -> list[str]:
    return discover("judge").names()


def map_label(label: str, harmful_prompt: bool) -> str:
    """A judge model's verdict mapped through a label map onto LABELS; the special value `safe` means refusal for a
    harmful prompt and helpful for any other (a harm classifier cannot tell the two apart by itself)."""
    if label == "safe":
        return "refusal" if harmful_prompt else "helpful"
    return label if label in LABELS else "other"
