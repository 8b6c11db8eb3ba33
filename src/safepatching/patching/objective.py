"""The patch-objective extension point: each objective is a tiny class overriding one loss hook (as in
open-unlearning), with its settings model (`settings`: the training knobs every objective has, `config.ObjectiveCfg`,
plus its own defaults and knobs, e.g. NPO's beta). The built-in objectives live one per file in
`patching/objectives/` (a new objective = one new file there).

`loss(nll, ref_nll)` gets the length-normalised NLL of each sequence's response ([B]) under the model
being trained, and under the frozen starting model (only objectives with `needs_ref` get it).
"""

from __future__ import annotations

import torch

from ..config import ObjectiveCfg
from ..registry import Registry, discover


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
    return discover("objective").get(name)(cfg)


def known_objectives() -> list[str]:
    return discover("objective").names()
