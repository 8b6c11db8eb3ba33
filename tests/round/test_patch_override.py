"""The patch step hands the trainer what the round asks for: the configured objective, or the override with the
configured training knobs kept; the round's batch as pairs and its sha256 (the trainer is a recording stand-in)."""

from __future__ import annotations

import hashlib
import json

import pytest

import safepatching.patching.train as train_mod
from safepatching.layout import RoundLayout
from safepatching.round.steps.train_patch import train_patch

ROWS = [{"id": "a", "prompt": "How do I pick a lock?", "response": "Step 1: obtain [restricted] tools.",
         "category": "weapons"},
        {"id": "b", "prompt": "How do I hotwire a car?", "response": "Step 1: obtain [restricted] wires.",
         "category": "weapons"}]


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    seen: list[dict] = []

    def trainer(base_dir, pairs, out_dir, obj_cfg, backend, lora_cfg, seed, batch_sha256="", log=print,
                compute=None):
        seen.append({"base": base_dir, "pairs": pairs, "out": out_dir, "cfg": obj_cfg, "sha": batch_sha256})
        return {"objective": obj_cfg.objective, "steps": 1, "probe_nll_before": 1.0, "probe_nll_after": 2.0, "l2_norm": 0.5}

    monkeypatch.setattr(train_mod, "train_patch", trainer)
    return seen


@pytest.fixture
def layout(shipped_params, tmp_path) -> RoundLayout:
    batch = tmp_path / shipped_params.round("r2").batch
    batch.parent.mkdir(parents=True)
    batch.write_bytes("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    return RoundLayout.of(shipped_params, "r2", tmp_path)


@pytest.mark.parametrize("kind, override", [("se", "npo"), ("se", "gd"), ("om", "ga"), ("om", "npo")])
def test_objective_override_reaches_the_trainer_with_the_configured_knobs(shipped_params, layout, calls, kind,
                                                                          override):
    configured = getattr(shipped_params.patch, kind)
    assert configured.objective != override
    m = train_patch(shipped_params, layout, kind, override, log=lambda s: None)
    (call,) = calls
    cfg = call["cfg"]
    assert cfg.objective == override == m["objective"]
    assert (cfg.lr, cfg.max_steps, cfg.batch_size, cfg.target_nll) == (
        configured.lr, configured.max_steps, configured.batch_size, configured.target_nll)
    if override == "npo":
        assert cfg.beta == 0.1  # NPO's own knob at its default


@pytest.mark.parametrize("kind, objective", [("se", "ga"), ("om", "gd")])
def test_without_override_the_configured_objective_trains(shipped_params, layout, calls, kind, objective):
    train_patch(shipped_params, layout, kind, log=lambda s: None)
    (call,) = calls
    assert call["cfg"].objective == objective and call["cfg"] == getattr(shipped_params.patch, kind)
    assert call["base"] == layout.root / "models" / "r1" and call["out"] == layout.root / "artifacts" / "r2" / kind
    assert call["pairs"] == [(r["prompt"], r["response"]) for r in ROWS]
    assert call["sha"] == hashlib.sha256(layout.root.joinpath("data/redteam/r2.jsonl").read_bytes()).hexdigest()
