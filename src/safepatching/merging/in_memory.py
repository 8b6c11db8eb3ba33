"""The merge of whole state dicts in memory (tests, benchmarks, sweeps): the same per-tensor functions as the
streaming merge (`merging/engine.py`) on whole tensors, so both give bit-identical tensors (the methods are
elementwise given the whole-tensor masks) and stats (summed over the same row blocks)."""

from __future__ import annotations

import torch

from ..config import MergeSettings
from .method import SIDES, TensorInputs, get_merge
from .prepass import check_names, check_scores, run_prepass
from .stats import MergeStats


def merge_in_memory(base_state_dict: dict[str, torch.Tensor], p_se: dict[str, torch.Tensor] | None,
                    p_om: dict[str, torch.Tensor] | None, cfg: MergeSettings,
                    s_se: dict[str, torch.Tensor] | None = None, s_om: dict[str, torch.Tensor] | None = None,
                    stats: MergeStats | None = None) -> dict[str, torch.Tensor]:
    """The merged state dict (unpatched tensors are the base's own tensor objects). Same per-tensor functions as
    merge_checkpoint, so the results are bit-identical. Pass a MergeStats to collect stats."""
    method = get_merge(cfg.method)
    patches = {"se": p_se or {}, "om": p_om or {}}
    scores = {"se": s_se, "om": s_om}
    base_shape = {n: tuple(t.shape) for n, t in base_state_dict.items()}
    for side in SIDES:
        check_names(f"{side} patch", patches[side], lambda n, d=patches[side]: d[n].shape, base_shape, "state dict")
        if scores[side] is not None:
            check_names(f"{side} scores", scores[side], lambda n, d=scores[side]: d[n].shape, base_shape,
                         "state dict")
        if patches[side]:
            check_scores(method, side, patches[side], None if scores[side] is None else set(scores[side]),
                          f"{side} scores")
    names = {side: sorted(patches[side]) for side in SIDES}
    get = {side: (scores[side].__getitem__ if scores[side] is not None else None) for side in SIDES}
    numel = {side: (lambda n, d=scores[side]: d[n].numel()) if scores[side] is not None else None for side in SIDES}
    thr = run_prepass(method, cfg, names, get, numel)
    out: dict[str, torch.Tensor] = {}
    for n, base in base_state_dict.items():
        t = TensorInputs(n, base, patches["se"].get(n), patches["om"].get(n),
                         (s_se or {}).get(n) if method.needs_scores else None,
                         (s_om or {}).get(n) if method.needs_scores else None, thr.of("se", n),
                         thr.of("om", n))
        m = method.apply(t, cfg)
        if stats is not None:
            stats.update(t, m)
        out[n] = m.tensor
    return out
