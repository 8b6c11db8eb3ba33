"""Diagnosis of a round's two patches under the merge's own masks (safepatching.round.diagnosis)."""

import json

import pytest
import torch

from safepatching.config import merge_settings
from safepatching.merging.masks import layer_of
from safepatching.round.diagnosis import diagnose, format_diagnosis, importance_by_layer, plot_importance_layers


def test_diagnosis_on_opposite_and_equal_patches():
    torch.manual_seed(0)
    p = {"model.layers.0.mlp.up_proj.weight": torch.randn(8, 8), "lm_head.weight": torch.randn(4, 8)}
    s = {k: torch.rand_like(v) for k, v in p.items()}
    neg = {k: -v for k, v in p.items()}
    d = diagnose(p, neg, s, s, merge_settings({"method": "safepatching", "a": 25, "b": 25, "p": 1.0}))  # (p < 1: each side ranks its own retained entries)
    assert d["total"]["cos"] == pytest.approx(-1.0, abs=1e-4)
    assert d["total"]["overlap"] == pytest.approx(1.0) and d["total"]["kept_se"] == 0.0  # same scores: empty sets
    s2 = {k: torch.rand_like(v) for k, v in p.items()}
    d2 = diagnose(p, p, s, s2, merge_settings({"method": "safepatching", "a": 25, "b": 25}))
    assert d2["total"]["cos"] == pytest.approx(1.0, abs=1e-4) and 0 < d2["total"]["kept_se"] < 0.5
    assert layer_of("model.layers.3.self_attn.q_proj.weight") == "L03" and "total" in format_diagnosis(d2)
    json.dumps(d2)


def test_importance_by_layer_ranks_across_the_model(tmp_path):
    torch.manual_seed(0)
    big, small = torch.rand(10, 10) * 10, torch.rand(10, 10)
    s_se = {"model.layers.0.mlp.up_proj.weight": small, "model.layers.1.mlp.up_proj.weight": big}
    s_om = {"model.layers.0.mlp.up_proj.weight": big, "model.layers.1.mlp.up_proj.weight": small}
    d = importance_by_layer(s_se, s_om, pct=20)
    # global ranking puts each patch's top set where its scores are large (per-tensor ranking would give 50/50)
    assert d["share"]["se"]["L01"] > 0.9 and d["share"]["om"]["L00"] > 0.9
    assert sum(d["share"]["se"].values()) == pytest.approx(1.0)
    plot_importance_layers(d, tmp_path / "l.png")
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
