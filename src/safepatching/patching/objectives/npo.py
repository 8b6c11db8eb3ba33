"""npo: Negative Preference Optimisation (Zhang et al. 2024), a bounded ascent:
(2/beta) * softplus(beta * (log p - log p_ref)), which saturates instead of collapsing the model."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ...config import ObjectiveCfg
from ..objective import Objective, register_objective


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
