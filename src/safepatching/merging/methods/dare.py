"""DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each patch entry at random and rescale the kept
ones by 1/p, then add both patches: θ' = θ + α·(R_SE ⊙ P_SE)/p + β·(R_OM ⊙ P_OM)/p. mergekit's `dare_linear`."""

from __future__ import annotations

from pydantic import Field

from ..method import Merged, RetentionSettings, TensorInputs, masked_merge, register_merge, retention


class DareSettings(RetentionSettings):
    p: float = Field(0.9, gt=0, le=1, description="retention probability of each patch entry")
    rescale: bool = Field(True, description="rescale kept entries by 1/p (DARE); false = plain random drop")


@register_merge("dare", DareSettings, label=lambda cfg: f"dare p={cfg.p:g} α={cfg.alpha:g} β={cfg.beta:g}")
def dare(t: TensorInputs, cfg: DareSettings) -> Merged:
    r_se, r_om = retention(t, cfg, "se"), retention(t, cfg, "om")
    return masked_merge(t, cfg, r_se, r_om, r_se, r_om)
