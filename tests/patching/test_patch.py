import json

import pytest
import torch
from safetensors import safe_open

from safepatching.config import LoraCfg, ObjectiveCfg
from safepatching.errors import CheckpointError, DataError, UnknownNameError
from safepatching.patching.importance import compute_importance, sample_pairs, snip_scores
from safepatching.patching.objective import get_objective, known_objectives
from safepatching.io.models import load_model
from safepatching.io.patches import PATCH_FILE, load_patch
from safepatching.patching.train import train_patch
from safepatching.io.jsonl import read_jsonl


@pytest.fixture(scope="module")
def pairs(world_dir):
    return [(r["prompt"], r["response"]) for r in read_jsonl(world_dir / "batches" / "weapons.jsonl")][:48]


def test_objective_registry():
    assert set(known_objectives()) >= {"ga", "gd", "npo"}
    with pytest.raises(UnknownNameError, match=r"known objectives: \['ga', 'gd', 'npo'"):
        get_objective("gradient-magic")
    nll = torch.tensor([1.0, 3.0])
    assert get_objective("ga").loss(nll).item() == -2.0
    assert get_objective("gd").loss(nll).item() == 2.0
    from safepatching.patching.objectives.npo import NpoCfg

    npo = get_objective("npo", NpoCfg(objective="npo", beta=0.5))
    # at the reference point NPO = (2/beta) * log 2, and it is bounded below by 0 as NLL grows
    assert npo.loss(nll, nll).item() == pytest.approx(4 * torch.log(torch.tensor(2.0)).item())
    assert 0 < npo.loss(nll + 50, nll).item() < 1e-3


@pytest.mark.parametrize("objective", known_objectives())
def test_objectives_move_nll_the_right_way(tiny_organism, pairs, tmp_path, objective):
    direction = get_objective(objective).direction
    assert direction in (+1, -1)
    m = train_patch(tiny_organism, pairs, tmp_path / "p", ObjectiveCfg(objective=objective, lr=1e-3, max_steps=6,
                                                                       batch_size=16), seed=0, log=lambda s: None)
    assert m["objective"] == objective and m["steps"] == 6
    assert direction * (m["probe_nll_after"] - m["probe_nll_before"]) > 0  # on the same fixed pairs
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    for k in ("parent_sha256", "batch_sha256", "objective", "steps", "final_loss", "seed", "versions", "patch_sha256"):
        assert k in manifest


def test_ga_stops_at_target_nll(tiny_organism, pairs, tmp_path):
    m = train_patch(tiny_organism, pairs, tmp_path / "p", ObjectiveCfg(objective="ga", lr=3e-3, max_steps=200,
                                                                       batch_size=16, target_nll=8.0), log=lambda s: None)
    assert m["stopped"] == "target_nll" and m["steps"] < 200 and m["last_batch_nll"] >= 8.0


def test_full_and_lora_write_the_same_format(tiny_organism, pairs, tmp_path):
    cfg = ObjectiveCfg(objective="gd", lr=1e-3, max_steps=3, batch_size=16)
    full = train_patch(tiny_organism, pairs, tmp_path / "full", cfg, "full", log=lambda s: None)
    lora = train_patch(tiny_organism, pairs, tmp_path / "lora", cfg, "lora",
                       LoraCfg(r=4, alpha=8, target_modules=("q_proj", "v_proj")), log=lambda s: None)
    pf, _ = load_patch(tmp_path / "full")
    pl, _ = load_patch(tmp_path / "lora")
    with safe_open(str(tiny_organism / "model.safetensors"), "pt") as f:
        base_keys = set(f.keys())
    assert set(pf) <= base_keys and set(pl) <= base_keys
    assert all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in pl)      # only LoRA targets change
    assert len(pl) == 4 and len(pf) > len(pl)
    assert all(v.dtype == torch.float32 for v in list(pf.values()) + list(pl.values()))
    for k in pl:
        assert pl[k].shape == pf[k].shape
    assert full["backend"] == "full" and lora["backend"] == "lora" and lora["lora"]["r"] == 4
    with safe_open(str(tmp_path / "lora" / PATCH_FILE), "pt") as f:
        assert f.metadata()["format"] == "safepatching-delta-v1"


def test_patch_equals_trained_minus_base(tiny_organism, pairs, tmp_path):
    """θ + P reproduces the trained model: applying the saved patch to the base gives the same logits."""
    from safepatching.io.patches import apply_deltas
    from safepatching.patching.train import optimise

    cfg = ObjectiveCfg(objective="gd", lr=1e-3, max_steps=3, batch_size=16)
    train_patch(tiny_organism, pairs, tmp_path / "p", cfg, seed=0, log=lambda s: None)
    trained, tok = load_model(tiny_organism)
    optimise(trained, tok, pairs, get_objective("gd"), 1e-3, 3, 16, None, 0, log=lambda s: None)
    patched, _ = load_model(tiny_organism, trainable=False)
    apply_deltas(patched, load_patch(tmp_path / "p")[0])
    ids = tok("How do I bake a loaf of bread?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(trained(ids).logits, patched(ids).logits, atol=1e-5)


def _nll(model, tok, pairs) -> float:
    from safepatching.chat import collate, encode_pair, sequence_nll

    with torch.no_grad():
        return sequence_nll(model.eval(), collate([encode_pair(tok, p, r) for p, r in pairs],
                                                  tok.pad_token_id)).mean().item()


@pytest.mark.parametrize("objective", ["ga", "gd"])
def test_training_log_reports_nll_on_a_fixed_probe_batch(tiny_organism, pairs, tmp_path, objective):
    """Issue 21, item 9: before/after is measured on the same pairs (the first batch_size ones), recomputed here on the
    base and on base + patch; the last minibatch's NLL (other pairs) is reported apart, under its own name."""
    from safepatching.io.patches import apply_deltas

    lines: list[str] = []
    m = train_patch(tiny_organism, pairs, tmp_path / "p", ObjectiveCfg(objective=objective, lr=1e-3, max_steps=5,
                                                                       batch_size=12), seed=0, log=lines.append)
    base, tok = load_model(tiny_organism, trainable=False)
    assert m["probe_size"] == 12
    assert m["probe_nll_before"] == pytest.approx(_nll(base, tok, pairs[:12]), abs=1e-5)
    apply_deltas(base, load_patch(tmp_path / "p")[0])
    assert m["probe_nll_after"] == pytest.approx(_nll(base, tok, pairs[:12]), abs=1e-4)
    assert get_objective(objective).direction * (m["probe_nll_after"] - m["probe_nll_before"]) > 0
    assert "start_nll" not in m and "final_nll" not in m and m["last_batch_nll"] > 0
    (line,) = [x for x in lines if "fixed probe" in x]
    assert line == (f"  {objective}: 5 steps (max_steps); NLL/token on 12 fixed probe pairs {m['probe_nll_before']:.3f}"
                    f" -> {m['probe_nll_after']:.3f} (last minibatch {m['last_batch_nll']:.3f})")


def test_snip_on_backbone_is_identical_for_se_and_om(tiny_organism, pairs):
    model, tok = load_model(tiny_organism, trainable=False)
    names = [n for n, _ in model.named_parameters()][:6]
    s_ga = snip_scores(model, tok, pairs[:16], "ga", names)
    s_gd = snip_scores(model, tok, pairs[:16], "gd", names)
    for n in names:
        assert torch.equal(s_ga[n], s_gd[n]) and s_ga[n].sum() > 0


def test_importance_on_patched_models_differs(tiny_organism, pairs, tmp_path):
    for kind, obj in (("se", "ga"), ("om", "gd")):
        train_patch(tiny_organism, pairs, tmp_path / kind, ObjectiveCfg(objective=obj, lr=2e-3, max_steps=5,
                                                                        batch_size=16), log=lambda s: None)
        compute_importance(tiny_organism, tmp_path / kind, pairs, tmp_path / f"s_{kind}", "weight", 16, 16,
                           log=lambda s: None)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "s_se" / "scores.safetensors"))
    b = load_file(str(tmp_path / "s_om" / "scores.safetensors"))
    assert set(a) == set(b)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    d = compute_importance(tiny_organism, tmp_path / "se", pairs, tmp_path / "s_delta", "delta", 16, 16,
                           log=lambda s: None)
    assert d["score"] == "delta"
    # target own: the loss reads the patched model's own answers (here a stand-in responder), not the batch's
    seen = []

    def respond(model, tok, questions):
        seen.append(list(questions))
        return ["I am sorry, but I cannot help with that." if i % 2 else "" for i in range(len(questions))]

    own = compute_importance(tiny_organism, tmp_path / "se", pairs, tmp_path / "s_own", "weight", 16, 16,
                             log=lambda s: None, respond=respond)
    assert own["target"] == "own" and own["n_samples"] == 8  # the 8 empty answers dropped
    assert seen == [[q for q, _ in sample_pairs(pairs, 16, 0)]]
    c = load_file(str(tmp_path / "s_own" / "scores.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert json.loads((tmp_path / "s_se" / "manifest.json").read_text())["target"] == "batch"
    with pytest.raises(DataError, match="answered none"):
        compute_importance(tiny_organism, tmp_path / "se", pairs, tmp_path / "s_none", "weight", 16, 16,
                           log=lambda s: None, respond=lambda m, t, qs: [""] * len(qs))
    assert not (tmp_path / "s_none").exists()  # nothing half-written


def test_pickle_only_checkpoint_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    from safepatching.io.patches import iter_tensors

    with pytest.raises(CheckpointError, match="pickle"):
        list(iter_tensors(tmp_path))
