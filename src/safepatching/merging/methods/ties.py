"""TIES-merging (Yadav et al. 2023) of the two patches: trim, elect sign, disjoint mean."""

from __future__ import annotations

import torch
from pydantic import Field

from ...config import MergeSettings
from ..masks import topk_mask, where0
from ..method import Keep, Merged, TensorInputs, combine, given, register_merge


class TiesSettings(MergeSettings):
    density: float = Field(0.2, gt=0, le=1, description="share of each (scaled) patch kept by magnitude, per tensor")


@register_merge("ties", TiesSettings, )
def ties(t: TensorInputs, cfg: TiesSettings) -> Merged:
    """TIES-merging (Yadav et al. 2023) of α·P_SE and β·P_OM: trim each to its top `density` share by magnitude
    (per tensor), elect each entry's sign as the sign of the trimmed sum, average the entries agreeing with it."""
    trimmed: list[torch.Tensor | None] = []
    for side, coef, p in (("se", cfg.alpha, t.p_se), ("om", cfg.beta, t.p_om)):
        if p is None:
            trimmed.append(None)
            continue
        top = t.whole.mask(("ties", side, cfg), lambda side=side, coef=coef: topk_mask(
            (t.whole.load(f"p_{side}").float() * coef).abs(), cfg.density * 100, "per_tensor"))
        x = p.float() * coef
        trimmed.append(where0(t.cut(top), x))
    present = [x for x in trimmed if x is not None]
    elected = torch.sign(present[0] + present[1]) if len(present) == 2 else torch.sign(present[0])
    total = torch.zeros_like(elected)
    count = torch.zeros_like(elected)
    keeps: list[Keep] = []
    for x in trimmed:
        if x is None:
            keeps.append(False)
            continue
        agree = (torch.sign(x) == elected) & (elected != 0)
        total += where0(agree, x)
        count += agree
        keeps.append(agree)
    merged = total / count.clamp(min=1)
    return Merged(combine(t.base, [(1.0, given(merged))]), keeps[0], keeps[1])
