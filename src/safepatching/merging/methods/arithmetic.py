"""Plain patch arithmetic: one patch alone (the SE-only / OM-only ablations) or both (task arithmetic)."""

from __future__ import annotations

from ...config import MergeSettings
from ..method import Merged, TensorInputs, combine, given, register_merge


@register_merge("se_only")
def se_only(t: TensorInputs, cfg: MergeSettings) -> Merged:
    return Merged(combine(t.base, [(cfg.alpha, given(t.p_se))]), t.p_se is not None, False)


@register_merge("om_only")
def om_only(t: TensorInputs, cfg: MergeSettings) -> Merged:
    return Merged(combine(t.base, [(cfg.beta, given(t.p_om))]), False, t.p_om is not None)


@register_merge("task_arithmetic")
def task_arithmetic(t: TensorInputs, cfg: MergeSettings) -> Merged:
    return Merged(combine(t.base, [(cfg.alpha, given(t.p_se)), (cfg.beta, given(t.p_om))]), t.p_se is not None,
                  t.p_om is not None)
