"""Merge engine, merge methods, masks and checkpoint IO on a tiny sharded Llama built in tmp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import safepatching.merging.masks as masks_mod
import safepatching.merging.stats as stats_mod
from safepatching.io.atomic import atomic_dir
from safepatching.io.checkpoints import INDEX_NAME, LazyReader, list_shards, load_state_dict, sha256_dir
from safepatching.io.shard_writer import ShardWriter, copy_aux_files, save_sharded
from safepatching.config import MergeSettings, merge_settings
from safepatching.errors import CheckpointError, NonFiniteError, UnknownNameError
from safepatching.merging.masks import (MASK_VERSION, layer_of, bernoulli_threshold, difference_sets, global_threshold, hash32,
                                        keep_count, random_mask, stream_keys, topk_mask, where0)
from safepatching.merging.engine import merge_checkpoint
from safepatching.merging.in_memory import merge_in_memory
from safepatching.merging.stats import MergeStats, row_blocks
from safepatching.merging.method import TensorInputs, get_merge, known_merges, register_merge

SE_NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.v_proj.weight",
            "model.layers.1.mlp.gate_proj.weight", "lm_head.weight"]
OM_NAMES = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
            "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.gate_proj.weight",
            "model.layers.1.mlp.down_proj.weight", "lm_head.weight"]
def settings(**kw) -> MergeSettings:
    """A merge method's settings (default method: safepatching), validated by its registered model."""
    return merge_settings({"method": "safepatching", **kw})


def for_method(method: str, **upd) -> MergeSettings:
    """CFG's values for the settings `method` has, with `upd` on top."""
    fields = get_merge(method).settings.model_fields
    return settings(**{**{k: v for k, v in CFG.model_dump().items() if k in fields}, **upd, "method": method})


CFG = settings(method="safepatching", alpha=0.8, beta=1.3, p=0.7, a=30, b=20, seed=3, ranking="per_tensor")


def _write_patch(folder: Path, tensors: dict[str, torch.Tensor], fname: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / fname))
    if fname == "patch.safetensors":
        (folder / "manifest.json").write_text(json.dumps({"objective": folder.name}))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("merge")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    base = root / "base"
    model.save_pretrained(base, max_shard_size="40KB")
    (base / "chat_template.jinja").write_text("{{ messages }}")
    sd = load_state_dict(base)
    g = torch.Generator().manual_seed(1)
    p_se = {n: torch.randn(sd[n].shape, generator=g) * 0.05 for n in SE_NAMES}
    p_om = {n: torch.randn(sd[n].shape, generator=g) * 0.05 for n in OM_NAMES}
    s_se = {n: torch.rand(sd[n].shape, generator=g) for n in SE_NAMES}
    s_om = {n: torch.rand(sd[n].shape, generator=g) for n in OM_NAMES}
    return {
        "root": root, "base": base, "sd": sd, "config": cfg, "p_se": p_se, "p_om": p_om, "s_se": s_se, "s_om": s_om,
        "se": _write_patch(root / "se", p_se, "patch.safetensors"),
        "om": _write_patch(root / "om", p_om, "patch.safetensors"),
        "sse": _write_patch(root / "se_scores", s_se, "scores.safetensors"),
        "som": _write_patch(root / "om_scores", s_om, "scores.safetensors"),
    }


def _stream(w, out: Path, cfg: MergeSettings, **kw) -> dict:
    return merge_checkpoint(w["base"], w["se"], w["om"], out, cfg, w["sse"], w["som"], **kw)


def _mem(w, cfg: MergeSettings, **kw) -> dict[str, torch.Tensor]:
    return merge_in_memory(w["sd"], w["p_se"], w["p_om"], cfg, w["s_se"], w["s_om"], **kw)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_base_is_sharded(world):
    assert len(list_shards(world["base"])) >= 2


@pytest.mark.parametrize("method", known_merges())
def test_alpha_beta_zero_is_backbone(world, method):
    assert _same(_mem(world, for_method(method, alpha=0.0, beta=0.0)), world["sd"])


def test_bf16_base_stays_bf16(world):
    sd16 = {n: t.to(torch.bfloat16) for n, t in world["sd"].items()}
    zero = merge_in_memory(sd16, world["p_se"], world["p_om"], CFG.model_copy(update={"alpha": 0.0, "beta": 0.0}),
                           world["s_se"], world["s_om"])
    assert _same(zero, sd16)
    out = merge_in_memory(sd16, world["p_se"], world["p_om"], CFG, world["s_se"], world["s_om"])
    assert all(t.dtype == torch.bfloat16 for t in out.values()) and not _same(out, sd16)


@pytest.mark.parametrize("ranking", ["global", "per_layer", "per_tensor"])
def test_kept_counts_match_ranking(world, ranking):
    cfg = CFG.model_copy(update={"p": 1.0, "difference": False, "ranking": ranking})
    stats = MergeStats()
    _mem(world, cfg, stats=stats)
    sizes = [world["p_se"][n].numel() for n in SE_NAMES]
    layers: dict[str, int] = {}
    for n in SE_NAMES:
        layers[layer_of(n)] = layers.get(layer_of(n), 0) + world["p_se"][n].numel()
    want = {"global": keep_count(cfg.a, sum(sizes)), "per_layer": sum(keep_count(cfg.a, k) for k in layers.values()),
            "per_tensor": sum(keep_count(cfg.a, k) for k in sizes)}[ranking]
    assert stats.se.kept == want and stats.se.entries == sum(sizes)
    assert 0 < stats.se.as_dict()["l2_share"] < 1


def test_alpha_beta_zero_streaming_bit_exact(world, tmp_path):
    _stream(world, tmp_path / "out", CFG.model_copy(update={"alpha": 0.0, "beta": 0.0}))
    assert _same(load_state_dict(tmp_path / "out"), world["sd"])


@pytest.mark.parametrize("compose", ["sequential", "union"])
def test_full_masks_equal_task_arithmetic(world, compose):
    cfg = CFG.model_copy(update={"p": 1.0, "a": 100.0, "b": 100.0, "difference": False, "compose": compose})
    ta = _mem(world, for_method("task_arithmetic", alpha=cfg.alpha, beta=cfg.beta))
    assert _same(_mem(world, cfg), ta)
    assert not torch.equal(ta[SE_NAMES[1]], world["sd"][SE_NAMES[1]])


def test_difference_sets_disjoint(world):
    a, b = torch.rand(50, 40) < 0.4, torch.rand(50, 40) < 0.5
    d_se, d_om = difference_sets(a, b)
    assert not (d_se & d_om).any() and torch.equal(d_se | d_om, a ^ b)
    n = SE_NAMES[1]  # sequential masks are disjoint; union keeps R_SE & R_OM entries in both (documented)
    t = TensorInputs(n, world["sd"][n], world["p_se"][n], world["p_om"][n], world["s_se"][n], world["s_om"][n])
    m = get_merge("safepatching").apply(t, CFG)
    assert not (m.keep_se & m.keep_om).any() and m.keep_se.any() and m.keep_om.any()


@pytest.mark.parametrize("pct", [0.0, 7.0, 33.3, 50.0, 100.0])
def test_mask_densities(pct):
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (37, 53), generator=g).float()  # many ties
    m = topk_mask(s, pct, "per_tensor")
    assert m.sum() == keep_count(pct, s.numel())
    r = topk_mask(s, pct, "per_row")
    assert (r.sum(1) == keep_count(pct, s.shape[1])).all()
    big = torch.rand(600_000, generator=g)  # the sampled-bracket path of kth_largest
    assert topk_mask(big, pct, "per_tensor").sum() == keep_count(pct, big.numel())
    thr = global_threshold([("x", big[:300_000]), ("y", big[300_000:])], pct)
    assert topk_mask(big, pct, "global", thr).sum() == keep_count(pct, big.numel())


def test_topk_heavy_ties_exact_and_lowest_index_first():
    s = torch.zeros(3_000_000)
    s[::10] = torch.rand(300_000, generator=torch.Generator().manual_seed(0)) + 1  # 90% tied zeros
    m = topk_mask(s, 15.0, "per_tensor")
    assert m.sum() == keep_count(15.0, s.numel()) and m[::10].all()
    extra = m.clone()
    extra[::10] = False
    assert extra[:2_000_000].any() and not extra[-1_000_000:].any()  # tied zeros kept from the front


def test_random_mask():
    a = random_mask((100, 100), 0.3, 0, "w")
    assert torch.equal(a, random_mask((100, 100), 0.3, 0, "w"))
    assert not torch.equal(a, random_mask((100, 100), 0.3, 0, "v"))
    assert not torch.equal(a, random_mask((100, 100), 0.3, 1, "w"))
    assert abs(a.float().mean().item() - 0.3) < 0.03
    assert random_mask((4, 5), 1.0, 0, "w").all()


VARIANTS = [{"method": m} for m in known_merges()] + [
    {"ranking": "global"}, {"ranking": "per_layer"}, {"ranking": "per_row"}, {"compose": "union", "rescale": True},
    {"ranking": "global", "compose": "union"}, {"method": "intersection", "ranking": "global"}]


@pytest.mark.parametrize("block", [1 << 18, 100], ids=["whole", "rowblocks"])
@pytest.mark.parametrize("upd", VARIANTS, ids=lambda u: "-".join(str(v) for v in u.values()))
def test_streaming_equals_in_memory(world, tmp_path, upd, block, monkeypatch):
    monkeypatch.setattr(stats_mod, "BLOCK_ELEMS", block)  # 100: 1-3 rows per block, uneven last block
    upd = dict(upd)
    cfg = for_method(upd.pop("method", "safepatching"), **upd)
    stats = MergeStats()
    mem = _mem(world, cfg, stats=stats)
    man = _stream(world, tmp_path / "out", cfg)
    out = load_state_dict(tmp_path / "out")
    assert _same(out, mem)
    assert man["stats"] == stats.as_dict()
    assert [p.name for p in list_shards(tmp_path / "out")] == [p.name for p in list_shards(world["base"])]
    patched = set(SE_NAMES) | set(OM_NAMES)
    changed = {n for n, t in out.items() if not torch.equal(t, world["sd"][n])}
    assert changed and changed <= patched
    assert all(torch.isfinite(t).all() for t in out.values())


@pytest.mark.parametrize("method", known_merges())
def test_reload_gives_same_logits(world, tmp_path, method):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    cfg = for_method(method)
    man = _stream(world, tmp_path / "out", cfg)
    assert man["mask_version"] == MASK_VERSION
    assert json.loads((tmp_path / "out" / "merge_manifest.json").read_text())["mask_version"] == MASK_VERSION
    assert man["parents"]["base"]["sha256"] == sha256_dir(world["base"])
    assert man["parents"]["se_patch"]["manifest"] == {"objective": "se"}
    assert (tmp_path / "out" / INDEX_NAME).exists() and (tmp_path / "out" / "chat_template.jinja").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ref = LlamaForCausalLM(world["config"]).eval()
    ref.load_state_dict(_mem(world, cfg), strict=True)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, ref(ids).logits)


def test_nan_patch_refused_and_nothing_written(world, tmp_path):
    bad = dict(world["p_se"])
    name = "model.layers.1.mlp.gate_proj.weight"
    bad[name] = bad[name].clone()
    bad[name][3, 4] = float("nan")
    se_bad = _write_patch(tmp_path / "se_bad", bad, "patch.safetensors")
    out = tmp_path / "out"
    with pytest.raises(NonFiniteError, match=name.replace(".", r"\.")):
        merge_checkpoint(world["base"], se_bad, world["om"], out, CFG, world["sse"], world["som"])
    assert not out.exists() and not list(tmp_path.glob("out*"))
    with pytest.raises(NonFiniteError, match="produced NaN"):
        merge_in_memory(world["sd"], {name: torch.full_like(bad[name], 1e30)}, None,
                        settings(method="se_only", alpha=1e10))


def test_existing_out_not_overwritten(world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists"):
        _stream(world, out, CFG)
    assert (out / "keep.txt").read_text() == "mine"
    _stream(world, out, CFG, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "merge_manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unknown_method_lists_known(world, tmp_path):
    with pytest.raises(UnknownNameError) as e:
        get_merge("nope")
    assert "safepatching" in str(e.value) and "ties" in str(e.value)
    with pytest.raises(UnknownNameError, match="task_arithmetic"):
        _stream(world, tmp_path / "out", CFG.model_copy(update={"method": "nope"}))
    with pytest.raises(ValueError, match="already registered"):
        register_merge("ties")(lambda t, cfg: None)


def _unit(cfg: MergeSettings, shape=(40, 30), seed=0) -> tuple[TensorInputs, torch.Tensor, torch.Tensor]:
    """Inputs with base 0 and all-ones patches: the merged tensor is α·M_SE + β·M_OM (times 1/p if rescaled)."""
    g = torch.Generator().manual_seed(seed)
    s_se, s_om = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    t = TensorInputs("w", torch.zeros(shape), torch.ones(shape), torch.ones(shape), s_se, s_om)
    return t, s_se, s_om


def test_rescale_multiplies_kept_entries(world):
    for compose in ("sequential", "union"):
        cfg = settings(alpha=1.0, beta=0.0, p=0.5, a=20, b=20, compose=compose, ranking="per_tensor")
        t, _, _ = _unit(cfg)
        off = get_merge("safepatching")(t, cfg)
        on = get_merge("safepatching")(t, cfg.model_copy(update={"rescale": True}))
        r = random_mask(t.base.shape, 0.5, cfg.seed, "w/se")
        assert torch.equal(on, torch.where(r, off * 2.0, off))
        assert set(on.unique().tolist()) <= {0.0, 1.0, 2.0} and (on == 2.0).any()
        if compose == "sequential":
            assert torch.equal(on, off * 2.0)
    n = SE_NAMES[1]  # also on real patches: kept entries of the delta scale by exactly 1/p
    cfg = CFG.model_copy(update={"beta": 0.0})
    t = TensorInputs(n, torch.zeros_like(world["sd"][n]), world["p_se"][n], world["p_om"][n], world["s_se"][n],
                     world["s_om"][n])
    off, on = get_merge("safepatching")(t, cfg), get_merge("safepatching")(t, cfg.model_copy(update={"rescale": True}))
    assert torch.allclose(on, off / cfg.p, rtol=1e-6, atol=0) and (off != 0).any()


def test_union_vs_sequential_as_documented():
    p = 0.6
    base_cfg = settings(alpha=1.0, beta=0.0, p=p, a=25, b=25, seed=5, ranking="per_tensor")
    t, s_se, s_om = _unit(base_cfg)
    r_se, r_om = random_mask(t.base.shape, p, 5, "w/se"), random_mask(t.base.shape, p, 5, "w/om")
    ninf = float("-inf")
    # sequential: top-a among retained entries, then difference sets, then & R
    t_se = topk_mask(s_se.masked_fill(~r_se, ninf), 25, "per_tensor") & r_se
    t_om = topk_mask(s_om.masked_fill(~r_om, ninf), 25, "per_tensor") & r_om
    seq = get_merge("safepatching")(t, base_cfg)
    assert torch.equal(seq.bool(), r_se & t_se & ~t_om)
    assert seq.sum() <= keep_count(25, t.base.numel())
    # union: (R | T) & ~T_OM with T ranked over every entry
    u_se, u_om = topk_mask(s_se, 25, "per_tensor"), topk_mask(s_om, 25, "per_tensor")
    uni = get_merge("safepatching")(t, base_cfg.model_copy(update={"compose": "union"}))
    assert torch.equal(uni.bool(), (r_se | u_se) & ~u_om)
    assert uni.sum() > seq.sum()
    # difference=False: plain masks
    nodiff = get_merge("safepatching")(t, base_cfg.model_copy(update={"difference": False}))
    assert torch.equal(nodiff.bool(), t_se)


def test_ties_merges_by_elected_sign():
    cfg = settings(method="ties", alpha=1.0, beta=1.0, density=1.0)
    base = torch.zeros(4)
    t = TensorInputs("v", base, torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([3.0, 1.0, -1.0, 2.0]))
    assert torch.equal(get_merge("ties")(t, cfg), torch.tensor([2.0, -2.0, 3.0, 2.0]))
    trimmed = get_merge("ties")(t, cfg.model_copy(update={"density": 0.5}))
    assert torch.equal(trimmed, torch.tensor([3.0, -2.0, 3.0, 2.0]))


def test_bad_inputs_refused(world, tmp_path):
    folder = tmp_path / "pickle"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle"):
        list_shards(folder)
    n = SE_NAMES[1]
    wrong = _write_patch(tmp_path / "wrong", {n: torch.zeros(3, 3)}, "patch.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*\(3, 3\).*\(32, 32\)"):
        merge_checkpoint(world["base"], wrong, None, tmp_path / "out", settings(method="se_only"))
    alien = _write_patch(tmp_path / "alien", {"nope.weight": torch.zeros(3)}, "patch.safetensors")
    with pytest.raises(CheckpointError, match="nope.weight"):
        merge_checkpoint(world["base"], alien, None, tmp_path / "out", settings(method="se_only"))
    with pytest.raises(CheckpointError, match="needs importance scores"):
        merge_checkpoint(world["base"], world["se"], None, tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()


def test_resharding(world, tmp_path):
    _stream(world, tmp_path / "one", CFG, max_shard_bytes=10**9)
    assert [p.name for p in list_shards(tmp_path / "one")] == ["model.safetensors"]
    assert _same(load_state_dict(tmp_path / "one"), _mem(world, CFG))


def test_save_sharded_loads_in_transformers(world, tmp_path):
    from transformers import AutoModelForCausalLM

    with atomic_dir(tmp_path / "m") as tmp:
        files = save_sharded(world["sd"], tmp, max_shard_bytes=30_000)
        copy_aux_files(world["base"], tmp)
    assert len(files) >= 3 and (tmp_path / "m" / INDEX_NAME).exists()
    assert _same(load_state_dict(tmp_path / "m"), world["sd"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(v, world["sd"][k]) for k, v in model.state_dict().items())



# ---------------------------------------------------------------- row blocks (streaming) == whole tensors


def _ref_top(s: torch.Tensor, pct: float, among: torch.Tensor) -> torch.Tensor:
    """Reference per-tensor top-k among `among` by a stable sort: k = pct of all entries (capped at the number
    among), ties to the lowest indices."""
    idx = among.reshape(-1).nonzero().squeeze(1)
    order = torch.argsort(-s.reshape(-1)[idx], stable=True)
    mask = torch.zeros(s.numel(), dtype=torch.bool)
    mask[idx[order[:keep_count(pct, s.numel())]]] = True
    return mask.reshape(s.shape)


@pytest.mark.parametrize("n,levels", [(5_000, 0), (600_000, 0), (600_000, 7)])
def test_topk_among_equals_reference(n, levels, monkeypatch):
    monkeypatch.setattr(masks_mod, "BLOCK", 10_000)  # many blocks in the blocked selection / tie passes
    g = torch.Generator().manual_seed(n + levels)
    s = torch.rand(n, generator=g)
    if levels:
        s = (s * levels).floor()  # heavy ties at every threshold
    among = torch.rand(n, generator=g) < 0.8
    for pct in (0.0, 3.0, 10.0, 50.0, 85.0, 100.0):
        got = topk_mask(s, pct, "per_tensor", among=among)
        assert torch.equal(got, _ref_top(s, pct, among)), pct
        old = topk_mask(s.masked_fill(~among, float("-inf")), pct, "per_tensor") & among  # the former formulation
        assert torch.equal(got, old), pct
    assert torch.equal(topk_mask(s, 10.0, "per_tensor"), _ref_top(s, 10.0, torch.ones(n, dtype=torch.bool)))
    rows = s.reshape(-1, 1000)
    got = topk_mask(rows, 10.0, "per_row", among=among.reshape(rows.shape))
    old = topk_mask(rows.masked_fill(~among.reshape(rows.shape), float("-inf")), 10.0, "per_row")
    assert torch.equal(got, old & among.reshape(rows.shape))
    assert torch.equal(topk_mask(s, 10.0, "global", 0.5, among=among), (s >= 0.5) & among)


def test_random_mask_is_counter_hash_below_p():
    """The mask is hash32(index, stream keys of (seed, name)) < p * 2^32, entry by entry (MASK_VERSION 2; this test
    pinned torch.rand(shape) < p from a name_seed generator under version 1)."""
    k1, k2 = stream_keys(7, "layer/se")
    for shape in [(3,), (700, 1001), (2, 300_000)]:
        flat = random_mask(shape, 0.9, 7, "layer/se").reshape(-1)
        n = flat.numel()
        for i in sorted({0, 1, 2, n // 2, n - 1} | set(range(0, n, max(1, n // 997)))):
            assert bool(flat[i]) == (hash32(i, k1, k2) < bernoulli_threshold(0.9)), (shape, i)


def test_where0_is_torch_where_bit_for_bit():
    x = torch.tensor([-0.0, 0.0, 1.5, -2.0, float("inf"), -float("inf"), float("nan"), 1e-45, -1e-45] * 3)
    keep = torch.tensor([True, False, True] * 9)
    assert torch.equal(where0(keep, x).view(torch.int32), torch.where(keep, x, 0.0).view(torch.int32))
    bf = x.to(torch.bfloat16)
    assert torch.equal(where0(keep, bf).view(torch.int16), torch.where(keep, bf, 0.0).view(torch.int16))


def test_row_blocks():
    assert row_blocks(()) == [None]
    assert row_blocks((0, 5)) == [slice(0, 0)]
    blocks = row_blocks((10, 3 * stats_mod.BLOCK_ELEMS // 7))  # 2 rows per block
    assert blocks == [slice(i, i + 2) for i in range(0, 10, 2)]
    assert row_blocks((7, stats_mod.BLOCK_ELEMS // 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert row_blocks((3, stats_mod.BLOCK_ELEMS * 2)) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_read_rows_and_block_writes(tmp_path):
    t = torch.arange(35 * 4, dtype=torch.float32).reshape(35, 4)
    scalar = torch.tensor(2.5, dtype=torch.bfloat16)
    specs = {"t": (t.dtype, (35, 4)), "s": (scalar.dtype, ())}
    with ShardWriter(tmp_path / "x.safetensors", specs) as w:
        assert w.order == ["t", "s"]
        w.write("t", (t[i:i + 8] for i in range(0, 35, 8)))
        w.write("s", iter([scalar]))
    buf = torch.empty(1 << 10, dtype=torch.uint8)
    with LazyReader(tmp_path / "x.safetensors") as r:
        assert torch.equal(r.get("t"), t) and torch.equal(r.get("s"), scalar)
        assert torch.equal(r.read_rows("t", slice(7, 19), buf), t[7:19])
        assert torch.equal(r.read_rows("t", None, buf), t) and torch.equal(r.read_rows("s", None, buf), scalar)
        assert r.read_rows("t", slice(3, 3), buf).shape == (0, 4)
    with pytest.raises(CheckpointError, match="got 32 rows"), ShardWriter(tmp_path / "y.safetensors",
                                                                                 {"t": specs["t"]}) as w:
        w.write("t", (t[i:i + 8] for i in range(0, 32, 8)))
    with pytest.raises(CheckpointError, match="or a block of it"), ShardWriter(tmp_path / "z.safetensors",
                                                                          {"t": specs["t"]}) as w:
        w.write("t", [t[:, :2]])


def test_row_blocks_with_ties_equal_whole(world, tmp_path, monkeypatch):
    """Tie-heavy scores (5 levels), random retention, per-tensor top-k: merging in 1-3-row blocks (whole-tensor masks
    cut to the block) gives the in-memory result bit for bit, for both compositions."""
    monkeypatch.setattr(stats_mod, "BLOCK_ELEMS", 100)
    ties = {k: (v * 4).round() for k, v in world["s_se"].items()}
    sse = _write_patch(tmp_path / "sse_ties", ties, "scores.safetensors")
    for compose in ("sequential", "union"):
        cfg = CFG.model_copy(update={"compose": compose, "rescale": True})
        stats = MergeStats()
        mem = merge_in_memory(world["sd"], world["p_se"], world["p_om"], cfg, ties, world["s_om"], stats=stats)
        man = merge_checkpoint(world["base"], world["se"], world["om"], tmp_path / compose, cfg, sse, world["som"])
        assert _same(load_state_dict(tmp_path / compose), mem) and man["stats"] == stats.as_dict()


def test_nan_scores_refused_when_streaming(world, tmp_path):
    bad = dict(world["s_om"])
    name = "model.layers.1.mlp.down_proj.weight"
    bad[name] = bad[name].clone()
    bad[name][0, 1] = float("inf")
    som_bad = _write_patch(tmp_path / "som_bad", bad, "scores.safetensors")
    with pytest.raises(NonFiniteError, match=name.replace(".", r"\.") + ": om scores"):
        merge_checkpoint(world["base"], world["se"], world["om"], tmp_path / "out", CFG, world["sse"], som_bad)
    assert not list(tmp_path.glob("out*"))


def test_whole_masks_cached_per_cfg(world):
    """A TensorInputs keeps its whole-tensor masks per cfg: calling a method again with another cfg recomputes."""
    n = SE_NAMES[1]
    t = TensorInputs(n, world["sd"][n], world["p_se"][n], world["p_om"][n], world["s_se"][n], world["s_om"][n])
    sp = get_merge("safepatching")
    for upd in ({"a": 5.0}, {"a": 60.0}, {"p": 0.3}, {"a": 5.0}):
        cfg = CFG.model_copy(update=upd)
        fresh = TensorInputs(n, world["sd"][n], world["p_se"][n], world["p_om"][n], world["s_se"][n],
                             world["s_om"][n])
        assert torch.equal(sp(t, cfg), sp(fresh, cfg))


def test_per_layer_ranking_keeps_a_share_of_every_layer(world):
    """Scores 100x larger in layer 1: global ranking keeps (almost) only layer 1, per_layer keeps a% of each layer."""
    s_se = {n: s * (100.0 if layer_of(n) == "L01" else 1.0) for n, s in world["s_se"].items()}
    kept = {}
    for ranking in ("global", "per_layer"):
        cfg = CFG.model_copy(update={"p": 1.0, "difference": False, "ranking": ranking, "beta": 0.0})
        out = merge_in_memory(world["sd"], world["p_se"], world["p_om"], cfg, s_se, world["s_om"])
        kept[ranking] = {}
        for n in SE_NAMES:
            k = (out[n] != world["sd"][n]).sum().item()
            kept[ranking][layer_of(n)] = kept[ranking].get(layer_of(n), 0) + k
    total = {}
    for n in SE_NAMES:
        total[layer_of(n)] = total.get(layer_of(n), 0) + world["p_se"][n].numel()
    assert kept["global"]["L00"] < 0.01 * total["L00"] < kept["global"]["L01"]
    for layer, n in total.items():  # (entries whose delta is exactly 0 cannot show: at most a% of each layer)
        assert 0.9 * keep_count(CFG.a, n) <= kept["per_layer"][layer] <= keep_count(CFG.a, n)


def test_a_method_declares_its_own_prepass(world, tmp_path):
    """The engine runs the whole-model prepass a method declares, whatever its settings model: a score-using method
    whose settings have no a/b/ranking merges, and one declaring global thresholds gets exactly those thresholds."""
    from safepatching.merging.method import _REGISTRY, Merged, Prepass, combine, given

    class TopSettings(MergeSettings):
        top: float = 30.0

    def impl(t: TensorInputs, cfg: TopSettings) -> Merged:  # keep the SE entries scoring at least the threshold
        if t.p_se is None:
            return Merged(combine(t.base, [(cfg.beta, given(t.p_om))]), False, t.p_om is not None)
        keep = t.cut(t.whole.mask("top", lambda: t.whole.load("s_se").float() >= t.thr_se))
        return Merged(combine(t.base, [(cfg.alpha, lambda: where0(keep, t.p_se.float())), (cfg.beta, given(t.p_om))]),
                      keep, t.p_om is not None)

    def plain(t: TensorInputs, cfg: TopSettings) -> Merged:
        return Merged(combine(t.base, [(cfg.alpha, given(t.p_se)), (cfg.beta, given(t.p_om))]), t.p_se is not None,
                      t.p_om is not None)

    register_merge("test_top", TopSettings, needs_scores=True,
                   prepass=lambda cfg: Prepass({"se": cfg.top, "om": cfg.top}, None, lambda n, s, side: s, 0))(impl)
    register_merge("test_no_prepass", TopSettings, needs_scores=True)(plain)
    try:
        top = merge_settings({"method": "test_top", "top": 30.0})
        man = _stream(world, tmp_path / "top", top)
        want = {side: global_threshold(((n, s) for n, s in sorted(world[f"s_{side}"].items())), 30.0,
                                       total=sum(s.numel() for s in world[f"s_{side}"].values()), seed=0)
                for side in ("se", "om")}
        assert man["thresholds"] == want
        # the same as safepatching's global SE set at p = 1 (no random retention), b = 0 (no OM mask) ...
        kept = sum(int((s >= want["se"]).sum()) for s in world["s_se"].values())
        assert man["stats"]["se"]["kept"] == kept == keep_count(30.0, sum(s.numel() for s in world["s_se"].values()))
        assert _same(load_state_dict(tmp_path / "top"), _mem(world, top))
        plain = merge_settings({"method": "test_no_prepass"})
        assert _stream(world, tmp_path / "plain", plain)["thresholds"] == {"se": None, "om": None}
        ta = merge_settings({"method": "task_arithmetic"})
        assert _same(load_state_dict(tmp_path / "plain"), _mem(world, ta))
    finally:
        _REGISTRY._items.pop("test_top", None)
        _REGISTRY._items.pop("test_no_prepass", None)
