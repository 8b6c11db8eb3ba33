"""ga: gradient ascent on the harmful responses, minimise mean log p(y|x) = -NLL (the SE patch); by default a
bounded ascent that stops once the batch's NLL per token reaches 2."""

from __future__ import annotations

from pydantic import Field

from ...config import ObjectiveCfg
from ..objective import Objective, register_objective


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
