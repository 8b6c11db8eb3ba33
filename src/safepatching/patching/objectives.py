"""Patch objectives: each a tiny class overriding one loss hook (as in open-unlearning), with its settings model
(`settings`: the training knobs every objective has, `config.ObjectiveCfg`, plus its own, e.g. NPO's beta).

`loss(nll, ref_nll)` gets the length-normalised NLL of each sequence's response ([B]) under the model
being trained, and under the frozen starting model (only objectives with `needs_ref` get it).

- ga  gradient ascent on the harmful responses: minimise mean log p(y|x) = -NLL (the SE patch)
- gd  gradient descent: minimise NLL (the OM patch)
- npo Negative Preference Optimisation (Zhang et al. 2024), a bounded ascent:
      (2/beta) * softplus(beta * (log p - log p_ref)), which saturates instead of collapsing the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pydantic import Field

from ..config import ObjectiveCfg
from ..registry import Registry


class Objective:
    name = "base"
    direction = +1  # +1: the objective pushes NLL up (ascent); -1: down (descent)
    needs_ref = False
    settings: type[ObjectiveCfg] = ObjectiveCfg

    def __init__(self, cfg: ObjectiveCfg | None = None):
        self.cfg = cfg

    def loss(self, nll: torch.Tensor, ref_nll: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def reached(self, mean_nll: float, target: float | None) -> bool:
        """Early stop: the batch's mean NLL per token crossed the target in this objective's direction."""
        if target is None:
            return False
        return mean_nll >= target if self.direction > 0 else mean_nll <= target


_OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(cls: type[Objective]) -> type[Objective]:
    return _OBJECTIVES.add(cls.name, cls)


def get_objective(name: str, cfg: ObjectiveCfg | None = None) -> Objective:
    """The objective `name`, configured by `cfg` (its settings model; None: a bare objective for its loss shape)."""
    return _OBJECTIVES.get(name)(cfg)


def known_objectives() -> list[str]:
    return _OBJECTIVES.names()


class GaCfg(ObjectiveCfg):
    target_nll: float | None = Field(2.0, description="stop once the batch's mean per-token NLL rises above this "
                                                      "(a bounded ascent); null: never")


@register_objective
class GradientAscent(Objective):
    name = "ga"
    direction = +1
    settings = GaCfg

    def loss(self, nll, ref_nll=None):
        return -nll.mean()


class GdCfg(ObjectiveCfg):
    max_steps: int = Field(8, ge=1)


@register_objective
class GradientDescent(Objective):
    name = "gd"
    direction = -1
    settings = GdCfg

    def loss(self, nll, ref_nll=None):
        return nll.mean()


class NpoCfg(ObjectiveCfg):
    beta: float = Field(0.1, gt=0, description="NPO's inverse temperature: small = close to gradient ascent")


@register_objective
class NPO(Objective):
    name = "npo"
    direction = +1
    needs_ref = True
    settings = NpoCfg

    @property
    def beta(self) -> float:
        return self.cfg.beta if isinstance(self.cfg, NpoCfg) else NpoCfg.model_fields["beta"].default

    def loss(self, nll, ref_nll=None):
        if ref_nll is None:
            raise ValueError("npo needs the reference NLL")
        log_ratio = (-nll) - (-ref_nll)
        return (2.0 / self.beta) * F.softplus(self.beta * log_ratio).mean()
