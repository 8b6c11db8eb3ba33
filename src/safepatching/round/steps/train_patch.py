"""Round step: train the SE or OM patch."""

from __future__ import annotations

from ...config import Params
from ...layout import KINDS, RoundLayout
from ._pairs import pairs as _pairs


def train_patch(params: Params, layout: RoundLayout, kind: str, objective: str | None = None, log=print) -> dict:
    """Derive the round's SE (kind='se') or OM (kind='om') patch from its batch on the parent model; `objective`
    overrides the configured one (its settings keep the configured values). Returns the patch manifest."""
    from ...config import objective_settings
    from ...io.checkpoints import sha256_file
    from ...patching.train import train_patch as train

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    obj = params.patch.se if kind == "se" else params.patch.om
    if objective:
        obj = objective_settings({**obj.model_dump(), "objective": objective})
    batch = layout.root / params.round(layout.name).batch
    m = train(layout.parent_model, _pairs(params, layout), layout.patch(kind), obj, params.patch.backend,
              params.patch.lora, params.patch.seed, batch_sha256=sha256_file(batch), log=log, compute=params.compute)
    log(f"{layout.name}/{kind}: {m['objective']} {m['steps']} steps, probe NLL {m['probe_nll_before']:.3f} -> "
        f"{m['probe_nll_after']:.3f}, |P|={m['l2_norm']:.3f}")
    return m
