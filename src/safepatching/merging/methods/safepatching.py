"""SafePatching's controllable patching (Zhao et al. 2024, arXiv 2405.13820) and its intersection ablation.

  R_X = random retention, Bernoulli(p); T_X = top-a% (SE) / top-b% (OM) by SNIP score
  sequential: T ranks only R-retained entries; M_SE = R_SE & (T_SE & ~T_OM), M_OM = R_OM & (T_OM & ~T_SE)
  union:      M_SE = (R_SE | T_SE) & ~T_OM, M_OM = (R_OM | T_OM) & ~T_SE
  difference=False drops the "& ~T_other" (plain top-a / top-b masks).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..method import (Merged, RankedSettings, TensorInputs, important, keep_and, keep_not, keep_or, masked_merge,
                      ranking_prepass, register_merge, retention)


class SafePatchingSettings(RankedSettings):
    alpha: float = Field(2.0, description="scale of the safety-enhancement (SE) patch")
    compose: Literal["sequential", "union"] = Field(
        "sequential", description="random mask then difference set (sequential), or either mask (union)")
    difference: bool = Field(True, description="apply difference sets; false = plain top-a/top-b masks")


def _sequential(cfg: SafePatchingSettings) -> bool:
    return cfg.compose == "sequential"


def _sp_label(cfg: SafePatchingSettings) -> str:
    return (f"sp p={cfg.p:g} a={cfg.a:g} b={cfg.b:g} α={cfg.alpha:g} β={cfg.beta:g} {cfg.ranking}"
            + (" rescale" if cfg.rescale else "") + ("" if cfg.difference else " no-diff")
            + ("" if cfg.compose == "sequential" else " union"))


@register_merge("safepatching", SafePatchingSettings, needs_scores=True, prepass=ranking_prepass(_sequential),
                label=_sp_label,
                sweep={"p": [0.5], "a": [20.0, 40.0], "b": [5.0, 20.0], "alpha": [1.0, 2.0], "beta": [1.0]})
def safepatching(t: TensorInputs, cfg: SafePatchingSettings) -> Merged:
    r_se, r_om = retention(t, cfg, "se"), retention(t, cfg, "om")
    seq = cfg.compose == "sequential"
    t_se = important(t, cfg, "se", retained_only=seq)
    t_om = important(t, cfg, "om", retained_only=seq)
    if seq:
        if cfg.difference:
            t_se, t_om = keep_and(t_se, keep_not(t_om)), keep_and(t_om, keep_not(t_se))
        m_se, m_om = keep_and(r_se, t_se), keep_and(r_om, t_om)
        return masked_merge(t, cfg, m_se, m_om)  # M ⊆ R: every kept entry is rescaled
    m_se, m_om = keep_or(r_se, t_se), keep_or(r_om, t_om)
    if cfg.difference:
        m_se, m_om = keep_and(m_se, keep_not(t_om)), keep_and(m_om, keep_not(t_se))
    return masked_merge(t, cfg, m_se, m_om, r_se, r_om)


class IntersectionSettings(RankedSettings):
    """The ablation keeps the entries important to both patches (top-a of SE and top-b of OM)."""


def _int_label(cfg: IntersectionSettings) -> str:
    return f"intersection p={cfg.p:g} a={cfg.a:g} b={cfg.b:g} {cfg.ranking}"


@register_merge("intersection", IntersectionSettings, needs_scores=True, prepass=ranking_prepass(lambda cfg: True),
                label=_int_label, sweep={"a": [20.0], "b": [5.0, 20.0]})
def intersection(t: TensorInputs, cfg: IntersectionSettings) -> Merged:
    """M = T_SE & T_OM for both patches (T ranked among R-retained entries, as sequential safepatching)."""
    m = keep_and(important(t, cfg, "se", True), important(t, cfg, "om", True))
    return masked_merge(t, cfg, m, m)  # M ⊆ R_SE & R_OM
