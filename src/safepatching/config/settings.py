"""The extension settings machinery: the strict base model, `Settings` (an extension's own settings model), resolving
`{<name key>: name, ...its settings}` against the registered extension's model, and the base settings of each kind
of extension (merge methods, judges, objectives), which the extensions subclass."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(Strict):
    """Base of an extension's own settings (a merge method's, an objective's, a judge's): each registered extension
    names a subclass, and config validates its section against it (`registry.settings_model`)."""


def error_lines(e: ValidationError) -> list[str]:
    """One `location: message` line per error of a strict model (an unknown key named as such)."""
    return [f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: "
            f"{'unknown key (not allowed)' if err['type'] == 'extra_forbidden' else err['msg']}" for err in e.errors()]


def resolve_settings(kind: str, name_key: str, value: Any, name: str | None = None) -> Settings:
    """A dict (or settings object) -> the registered extension's own settings model, validated strictly.

    `name_key` is the field that names the extension (e.g. `method`); `name` overrides it (judges are keyed by
    name in a mapping). Raises ValueError naming the unknown extension (with the known names) or the bad key."""
    from ..registry import settings_model

    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with {name_key!r}, got {type(value).__name__}")
    value = dict(value)
    if name is not None:
        value.setdefault(name_key, name)
    if name_key not in value:
        raise ValueError(f"missing {name_key!r} (which {kind} to use)")
    try:
        model = settings_model(kind, str(value[name_key]))
    except KeyError as e:  # UnknownNameError lists the known names
        raise ValueError(str(e)) from None
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise ValueError(f"{kind} {value[name_key]!r}: {'; '.join(error_lines(e))}") from None


class MergeSettings(Settings):
    """Settings every merge method has: θ' = θ + α·(masked P_SE) + β·(masked P_OM). Methods subclass it."""

    method: str = Field(..., description="a registered merge method (see safepatching.merging.methods)")
    alpha: float = Field(1.0, description="scale of the safety-enhancement (SE) patch")
    beta: float = Field(1.0, description="scale of the over-safety-mitigation (OM) patch")


def merge_settings(value: Any) -> MergeSettings:
    """`{method: name, ...its settings}` -> that method's settings (strict)."""
    return resolve_settings("merge method", "method", value)  # type: ignore[return-value]


class JudgeSettings(Settings):
    """Settings every judge has (judges subclass it)."""

    name: str = Field(..., description="a registered judge (see safepatching.evaluation.judges)")


class ObjectiveCfg(Settings):
    """Training settings every patch objective has (objectives with knobs of their own subclass it)."""

    objective: str = Field(..., description="a registered objective: ga | gd | npo (see patching.objectives)")
    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    target_nll: float | None = Field(None, description="stop once the batch's mean per-token NLL crosses this (GA: rises above; GD: falls below); null: never")


def objective_settings(value: Any) -> ObjectiveCfg:
    return resolve_settings("objective", "objective", value)  # type: ignore[return-value]
