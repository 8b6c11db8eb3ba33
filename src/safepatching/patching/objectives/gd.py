"""gd: gradient descent, minimise NLL (the OM patch)."""

from __future__ import annotations

from pydantic import Field

from ...config import ObjectiveCfg
from ..objective import Objective, register_objective


class GdCfg(ObjectiveCfg):
    max_steps: int = Field(8, ge=1)


@register_objective
class GradientDescent(Objective):
    name = "gd"
    direction = -1
    settings = GdCfg

    def loss(self, nll, ref_nll=None):
        return nll.mean()
