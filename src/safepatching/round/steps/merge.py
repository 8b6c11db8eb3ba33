"""Round step: stream the chosen merge into the round's model."""

from __future__ import annotations

import json

from ...config import Params
from ...layout import RoundLayout


def chosen_merge(params: Params, layout: RoundLayout):
    """The merge settings the round applies: the selected point, or the parent unchanged (α = β = 0) when selection
    kept the parent; `merge:` (or the round's override) when selection is off."""
    from ...config import merge_settings

    cfg = params.merge_for(layout.name)
    if params.select.enabled and layout.selected.exists():
        chosen = json.loads(layout.selected.read_text())
        return merge_settings(chosen["merge"]) if chosen.get("merge") else cfg.model_copy(
            update=dict(alpha=0.0, beta=0.0))
    return cfg


def merge(params: Params, layout: RoundLayout, log=print) -> dict:
    """Stream the round's chosen merge of both patches into its model folder; returns the merge manifest."""
    from ...merging.engine import merge_checkpoint

    cfg = chosen_merge(params, layout)
    m = merge_checkpoint(layout.parent_model, layout.patch("se"), layout.patch("om"), layout.model, cfg,
                         se_scores=layout.scores("se"), om_scores=layout.scores("om"), overwrite=True)
    log(f"{layout.name}: merged with {cfg.method} -> {layout.model}")
    return m
