"""A patch that trained 0 steps (gradient ascent already past `target_nll` at step 0) is a zero patch: no tensor
changed, so it has no tensors; its importance is an empty score file (logged as such, no backward run), and every
merge of the default grid goes through with it: the zero side moves nothing."""

from __future__ import annotations

import json

import torch

from safepatching.config import SelectCfg, merge_settings
from safepatching.io.models import load_model
from safepatching.merging.in_memory import merge_in_memory
from safepatching.round.diagnosis import diagnose, importance_by_layer
from safepatching.round.selection import load_inputs

from .real_round import build_patches, build_stand_in


def test_zero_patch_scores_empty_and_merges(tmp_path, monkeypatch):
    import safepatching.patching.importance as imp

    lines: list[str] = []
    real = imp.compute_importance
    monkeypatch.setattr(imp, "compute_importance", lambda *a, **k: real(*a, **{**k, "log": lines.append}))
    model = build_stand_in(tmp_path)
    patches, scores = build_patches(model, tmp_path, se_target_nll=0.0)  # ascent: any NLL >= 0 stops at once
    se_manifest = json.loads((patches[0] / "manifest.json").read_text())
    assert (se_manifest["steps"], se_manifest["stopped"], se_manifest["tensors"]) == (0, "target_nll", 0)
    assert json.loads((scores[0] / "manifest.json").read_text())["tensors"] == 0
    assert any("zero patch" in s and "0 training steps" in s and "target_nll" in s for s in lines)
    p_se, p_om, s_se, s_om = inputs = load_inputs(patches, scores)
    assert p_se == {} and s_se == {} and len(p_om) == len(s_om) > 0

    m, _ = load_model(model, trainable=False)
    base = {k: v.clone() for k, v in m.state_dict().items()}
    for cfg in SelectCfg().points():  # the shipped grid, every method
        merged = merge_in_memory(base, *inputs[:2], cfg, *inputs[2:])
        diagnose(*inputs, cfg)
        if cfg.method == "se_only":
            assert all(torch.equal(merged[k], base[k]) for k in base)  # the zero patch moves nothing
        if cfg.method == "om_only":
            assert any(not torch.equal(merged[k], base[k]) for k in base)
    ta = merge_settings({"method": "task_arithmetic", "alpha": 1.0, "beta": 1.0})
    om = merge_settings({"method": "om_only", "alpha": 1.0, "beta": 1.0})
    a, b = merge_in_memory(base, *inputs[:2], ta, *inputs[2:]), merge_in_memory(base, *inputs[:2], om, *inputs[2:])
    assert all(torch.equal(a[k], b[k]) for k in base)  # SE side zero: arithmetic is the OM side alone
    importance_by_layer(s_se, s_om)
