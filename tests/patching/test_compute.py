"""Compute settings in patch training and SNIP: accumulation, gradient checkpointing, bf16, patch dtype, LoRA targets
per architecture, and the multi-process path (launch command, self-launch, 1 vs 2 processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from safepatching.config import ComputeCfg, LoraCfg, ObjectiveCfg, parse_params
from safepatching.errors import ConfigError
from safepatching.io.jsonl import read_jsonl
from safepatching.io.models import load_model
from safepatching.io.patches import load_patch
from safepatching.patching import distributed
from safepatching.patching.distributed import LAUNCHED_ENV, launch_command, launch_env, micro_slices
from safepatching.patching.importance import compute_importance, snip_scores
from safepatching.patching.lora import LORA_TARGETS, target_modules
from safepatching.patching.train import train_patch

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def pairs(world_dir):
    return [(r["prompt"], r["response"]) for r in read_jsonl(world_dir / "batches" / "weapons.jsonl")][:48]


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ------------------------------------------------------------------ config


def test_accelerate_config_needs_a_gpu_device():
    with pytest.raises(ValueError, match="accelerate_config"):
        ComputeCfg(accelerate_config="fsdp.yaml", device="cpu")
    assert ComputeCfg(accelerate_config="fsdp.yaml", device="auto").accelerate_config == "fsdp.yaml"
    with pytest.raises(ConfigError, match="compute.grad_accumulation"):
        parse_params({"compute": {"grad_accumulation": 0}})


# ------------------------------------------------------------------ the batch split


@pytest.mark.parametrize("n,k,world", [(16, 1, 1), (16, 2, 2), (14, 2, 2), (6, 3, 2), (3, 2, 2), (1, 3, 2)])
def test_micro_slices_cover_the_batch_in_order(n, k, world):
    plan = micro_slices(n, k, world)
    assert len(plan) == k and all(len(row) == world for row in plan)
    flat = [i for row in plan for s in row for i in range(s.start, s.stop)]
    assert flat == list(range(n))  # j-major, rank-minor reading gives the batch back in order
    sizes = [s.stop - s.start for row in plan for s in row]
    assert max(sizes) - min(sizes) <= 1


# ------------------------------------------------------------------ one process: same patch, other compute


def _train(org, pairs, out, compute, objective="ga", backend="full", lora=None):
    cfg = ObjectiveCfg(objective=objective, lr=1e-3, max_steps=4, batch_size=14)
    m = train_patch(org, pairs, out, cfg, backend, lora, compute=compute, **QUIET)
    return load_patch(out)[0], m


@pytest.mark.parametrize("objective", ["ga", "npo"])
def test_accumulation_and_checkpointing_keep_the_patch(tiny_organism, pairs, tmp_path, objective):
    """batch 14 as 3 micro-batches (5+5+4, weighted by share) and with recomputed activations: the same patch up to
    float rounding (max |Δ| ≤ 1e-5 on entries up to ~4e-3; measured 3e-7 accumulated, 0 checkpointed)."""
    ref, m0 = _train(tiny_organism, pairs, tmp_path / "ref", ComputeCfg(), objective)
    acc, m1 = _train(tiny_organism, pairs, tmp_path / "acc", ComputeCfg(grad_accumulation=3), objective)
    ckpt, m2 = _train(tiny_organism, pairs, tmp_path / "ckpt", ComputeCfg(gradient_checkpointing=True), objective)
    assert max_diff(ref, acc) <= 1e-5 and max_diff(ref, ckpt) <= 1e-5
    assert m1["steps"] == m0["steps"] == 4 and m1["probe_nll_after"] == pytest.approx(m0["probe_nll_after"], abs=1e-5)
    assert m1["final_loss"] == pytest.approx(m0["final_loss"], abs=1e-5)
    assert m1["compute"]["grad_accumulation"] == 3 and m2["compute"]["gradient_checkpointing"] is True
    assert m0["compute"]["distributed"] == "NO" and m0["compute"]["processes"] == 1


def test_snip_accumulation_keeps_the_scores(tiny_organism, pairs):
    model, tok = load_model(tiny_organism, trainable=False)
    names = [n for n, _ in model.named_parameters()][:8]
    a = snip_scores(model, tok, pairs[:20], "gd", names, batch_size=8)
    b = snip_scores(model, tok, pairs[:20], "gd", names, batch_size=8, grad_accumulation=3)
    assert max_diff(a, b) <= 1e-5 * max(v.abs().max().item() for v in a.values())


def test_bf16_on_cpu_and_patch_dtype(tiny_organism, pairs, tmp_path):
    """A bf16 base trained in bf16: patch_dtype float32 keeps fp32 deltas (LoRA merged into fp32 copies of its
    targets: no rounding to the weights' bf16 grid), base stores bf16 deltas; the streaming merge takes both."""
    from safepatching.config import merge_settings
    from safepatching.merging.engine import merge_checkpoint

    m, tok = load_model(tiny_organism, trainable=False, dtype="bfloat16")
    base = tmp_path / "base"
    m.save_pretrained(base, safe_serialization=True)
    tok.save_pretrained(base)
    lora = LoraCfg(r=4, alpha=8, target_modules="auto")
    out = {}
    for backend in ("full", "lora"):
        for pd in ("float32", "base"):
            out[backend, pd], man = _train(base, pairs, tmp_path / f"{backend}_{pd}",
                                           ComputeCfg(dtype="bfloat16", patch_dtype=pd), "gd", backend, lora)
            want = torch.float32 if pd == "float32" else torch.bfloat16
            assert {v.dtype for v in out[backend, pd].values()} == {want}, (backend, pd)
            assert man["compute"]["dtype"] == "bfloat16" and man["patch_dtype"] == pd
    # full: the bf16 difference is exact in fp32, so base = fp32 rounded
    f32, fb = out["full", "float32"], out["full", "base"]
    assert set(f32) == set(fb) and all(torch.allclose(fb[k].float(), f32[k], rtol=2 ** -8, atol=0) for k in f32)
    # lora: merged in bf16, small deltas vanish under the weights' ulp; merged in fp32 they are kept
    l32, lb = out["lora", "float32"], out["lora", "base"]
    assert all(k.endswith(tuple(f"{t}.weight" for t in LORA_TARGETS["llama"])) for k in l32)
    nz = lambda p: sum(int(torch.count_nonzero(v)) for v in p.values())  # noqa: E731
    assert nz(l32) > nz(lb)
    cfg = merge_settings({"method": "task_arithmetic", "alpha": 1.0, "beta": 1.0})
    for pd in ("float32", "base"):
        merge_checkpoint(base, tmp_path / f"lora_{pd}", tmp_path / f"full_{pd}", tmp_path / f"merged_{pd}", cfg)
        mm, _ = load_model(tmp_path / f"merged_{pd}", trainable=False, dtype="auto")
        assert {p.dtype for p in mm.parameters()} == {torch.bfloat16}


# ------------------------------------------------------------------ LoRA targets per architecture


def test_lora_auto_targets(tiny_organism):
    m, _ = load_model(tiny_organism, trainable=False)
    assert target_modules("auto", m) == list(LORA_TARGETS["llama"])
    assert target_modules("all-linear", m) == "all-linear"
    assert target_modules(("q_proj",), m) == ["q_proj"]
    m.config.model_type = "no-such-arch"
    with pytest.raises(ConfigError, match="no-such-arch.*known"):
        target_modules("auto", m)


@pytest.mark.parametrize("model_type", sorted(LORA_TARGETS))
def test_lora_table_names_real_linear_layers(model_type):
    """Every name in the table is a 2-D weight module of a (tiny, random) model of that architecture."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type)
    tiny = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8, n_embd=16, n_layer=1, n_head=2, ffn_dim=32, word_embed_proj_dim=16,
                max_position_embeddings=64, n_positions=64, pad_token_id=0, num_local_experts=2, num_experts=2,
                num_experts_per_tok=1)
    for k, v in tiny.items():
        if hasattr(cfg, k):
            try:
                setattr(cfg, k, v)
            except AttributeError:  # a derived property
                pass
    model = AutoModelForCausalLM.from_config(cfg)
    leaves = {n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
              if getattr(mod, "weight", None) is not None and mod.weight.dim() == 2}
    assert set(LORA_TARGETS[model_type]) <= leaves


# ------------------------------------------------------------------ launching


def test_launch_command_ddp_and_config():
    c = ComputeCfg(num_processes=2)
    cmd = launch_command(c, "stages.train_patch", ["--round", "r1", "--kind", "se"], port=29999, python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in cmd and "--cpu" not in cmd and "--config_file" not in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--main_process_port") + 1] == "29999"
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert cmd[-6:] == ["--module", "stages.train_patch", "--round", "r1", "--kind", "se"]
    f = ComputeCfg(num_processes=8, device="cuda", accelerate_config="configs/fsdp.yaml")
    cmd = launch_command(f, "stages.importance", ["--round", "r2"], port=1234)
    assert cmd[cmd.index("--config_file") + 1] == "configs/fsdp.yaml" and "--multi_gpu" not in cmd
    assert "--mixed_precision" not in cmd  # the config decides
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    one = ComputeCfg(device="cuda", accelerate_config="ds_offload.yaml")  # e.g. DeepSpeed offload on one GPU
    assert launch_command(one, "m", [], port=1)[-2:] == ["--module", "m"]
    with pytest.raises(ValueError, match="nothing to launch"):
        launch_command(ComputeCfg(), "m", [])
    assert isinstance(distributed.free_port(), int)


def test_launch_env_and_no_nested_launch(monkeypatch):
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    env = launch_env(ComputeCfg(num_processes=2), base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", LAUNCHED_ENV: "1", "ACCELERATE_USE_CPU": "true"}
    assert "ACCELERATE_USE_CPU" not in launch_env(ComputeCfg(num_processes=2, device="auto"), base={})
    assert distributed.needs_launch(ComputeCfg(num_processes=2))
    assert not distributed.needs_launch(ComputeCfg())
    monkeypatch.setenv(LAUNCHED_ENV, "1")
    assert not distributed.needs_launch(ComputeCfg(num_processes=2))  # inside the launch: run, don't relaunch


@pytest.mark.parametrize("stage,extra", [("train_patch", ["--kind", "se"]), ("importance", [])])
def test_stages_launch_themselves(stage, extra, monkeypatch, tmp_path):
    """compute.num_processes > 1: the stage re-runs itself under accelerate launch with its own arguments."""
    import importlib

    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["compute"]["num_processes"] = 2
    data["rounds"] = {"r1": {"batch": "b.jsonl", "parent": "backbone"}}
    data["redteam"] = {}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    calls = []
    monkeypatch.setattr(distributed, "relaunch",
                        lambda c, module, args, log=print: calls.append((c, module, args)) or 7)
    argv = ["--params", str(tmp_path / "p.yaml"), "--root", str(tmp_path), "--round", "r1", *extra]
    assert importlib.import_module(f"stages.{stage}").main(argv) == 7  # the launched run's exit code
    (c, module, args), = calls
    assert module == f"stages.{stage}" and args == argv and c.num_processes == 2


# ------------------------------------------------------------------ two processes (gloo on CPU)


def _project(root, org, pairs_file, **compute):
    (root / "models").mkdir(parents=True)
    os.symlink(org, root / "models" / "backbone")
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["rounds"] = {"r1": {"batch": str(pairs_file), "parent": "backbone"}}
    data["redteam"] = {}
    data["patch"]["se"] = {"objective": "ga", "lr": 1e-3, "max_steps": 5, "batch_size": 14, "target_nll": None}
    data["patch"]["om"] = {"objective": "gd", "lr": 1e-3, "max_steps": 5, "batch_size": 14, "target_nll": None}
    data["importance"].update(n_samples=48, batch_size=8)
    data["compute"].update(compute)
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return root, p


def _stage(module, params, root, *extra):
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    env.pop(LAUNCHED_ENV, None)
    r = subprocess.run([sys.executable, "-m", module, "--params", str(params), "--root", str(root), "--round", "r1",
                        *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_two_processes_give_the_one_process_patch_and_scores(tiny_organism, world_dir, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo DDP) and 2 micro-batches each vs one process: batches of 14
    (48 pairs: 14, 14, 14, 6), i.e. pieces of 4+3 / 4+3 (and 2+1 / 2+1) weighted by their share; SNIP batches
    round-robin, scores all-reduced. Tolerance: max |Δ| ≤ 1e-5 for the patch (entries up to ~5e-3; measured 3.5e-7),
    ≤ 1e-5 relative to the largest score for SNIP (measured 1.7e-7). About 2 minutes on 2 busy cores."""
    batch = tmp_path / "b.jsonl"
    batch.write_text("".join(line + "\n" for line in
                             (world_dir / "batches" / "weapons.jsonl").read_text().splitlines()[:48]))
    res = {}
    for n, compute in ((1, {}), (2, {"num_processes": 2, "grad_accumulation": 2})):
        root, params = _project(tmp_path / f"proj{n}", tiny_organism, batch, **compute)
        out = _stage("stages.train_patch", params, root, "--kind", "se")
        if n == 2:
            assert "2 processes" in out and out.count("r1/se:") == 1  # the main process speaks and writes
        _stage("stages.train_patch", params, root, "--kind", "om")
        _stage("stages.importance", params, root)
        from safetensors.torch import load_file

        art = root / "artifacts" / "r1"
        res[n] = {k: load_patch(art / k) for k in ("se", "om")}
        res[n].update({f"s_{k}": load_file(str(art / f"scores_{k}" / "scores.safetensors")) for k in ("se", "om")})
        # importance.target own: the main process answers, every process scores the same (question, answer) pairs
        data = yaml.safe_load(params.read_text())
        data["importance"].update(target="own", max_new_tokens=16)
        params.write_text(yaml.safe_dump(data))
        _stage("stages.importance", params, root)
        res[n].update({f"own_{k}": load_file(str(art / f"scores_{k}" / "scores.safetensors")) for k in ("se", "om")})
        assert json.loads((art / "scores_se" / "manifest.json").read_text())["target"] == "own"
        assert not list(art.glob("*.tmp-*"))
    for k in ("se", "om"):
        (p1, m1), (p2, m2) = res[1][k], res[2][k]
        assert max_diff(p1, p2) <= 1e-5, k
        assert m2["compute"]["processes"] == 2 and m2["compute"]["distributed"] == "MULTI_CPU"
        assert m2["steps"] == m1["steps"] and m2["probe_nll_after"] == pytest.approx(m1["probe_nll_after"], abs=1e-5)
        for tag in ("s", "own"):
            s1, s2 = res[1][f"{tag}_{k}"], res[2][f"{tag}_{k}"]
            assert max_diff(s1, s2) <= 1e-5 * max(v.abs().max().item() for v in s1.values()), (tag, k)
        assert max_diff(res[1][f"s_{k}"], res[1][f"own_{k}"]) > 0  # own answers, not the batch's responses
