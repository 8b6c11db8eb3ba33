"""Model loading under the compute settings: dtype, device, device_map; patch storage dtype."""

import json

import pytest
import torch
from safetensors import safe_open

from safepatching.errors import ConfigError
from safepatching.io.models import input_device, load_model, materialise, resolve_device
from safepatching.io.patches import PATCH_FILE, load_patch, write_patch


def _dtypes(model) -> set:
    return {p.dtype for p in model.parameters()}


@pytest.fixture(scope="module")
def bf16_organism(tiny_organism, tmp_path_factory):
    """The tiny organism saved in bf16 (a real model's usual checkpoint dtype)."""
    m, tok = load_model(tiny_organism, trainable=False, dtype="bfloat16")
    out = tmp_path_factory.mktemp("bf16") / "model"
    m.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_default_load_is_fp32_on_cpu(tiny_organism):
    m, _ = load_model(tiny_organism)
    assert _dtypes(m) == {torch.float32}
    assert all(p.device.type == "cpu" and p.requires_grad for p in m.parameters())


def test_dtype_is_explicit_or_the_checkpoints_own(tiny_organism, bf16_organism):
    assert _dtypes(load_model(tiny_organism, trainable=False, dtype="bfloat16")[0]) == {torch.bfloat16}
    assert _dtypes(load_model(tiny_organism, trainable=False, dtype="float16")[0]) == {torch.float16}
    assert _dtypes(load_model(tiny_organism, trainable=False, dtype="auto")[0]) == {torch.float32}
    assert _dtypes(load_model(bf16_organism, trainable=False, dtype="auto")[0]) == {torch.bfloat16}
    assert _dtypes(load_model(bf16_organism, trainable=False)[0]) == {torch.float32}  # the default upcasts
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_organism, dtype="float8")


def test_materialise_keeps_the_source_dtype(bf16_organism, tmp_path):
    materialise(str(bf16_organism), tmp_path / "bb")
    with safe_open(str(tmp_path / "bb" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_device_map_loads_and_generates_like_one_device(tiny_organism):
    """device_map='auto' (here: everything on the one CPU; on GPUs, layers spread over them) loads through
    transformers' big-model path; generation feeds the input embedding's device and gives the same greedy text."""
    from safepatching.evaluation.generate import DecodingConfig, generate

    spread, tok = load_model(tiny_organism, trainable=False, device_map="auto")
    assert input_device(spread) == spread.get_input_embeddings().weight.device
    one, _ = load_model(tiny_organism, trainable=False)
    prompts = ["How do I bake a loaf of bread?", "What is 2 plus 3?", "Reverse: red green blue"]
    cfg = DecodingConfig(max_new_tokens=8, batch_size=2)
    assert generate(spread, tok, prompts, cfg) == generate(one, tok, prompts, cfg)


def test_patch_dtype_float32_or_base(bf16_organism, tmp_path):
    """write_patch diffs in fp32 (exact for bf16) and stores fp32 or, with dtype='base', the base tensor's dtype."""
    m, tok = load_model(bf16_organism, trainable=False, dtype="auto")
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            if i % 2 == 0:
                p.add_(torch.randn_like(p) * 1e-2)
    m.save_pretrained(tmp_path / "trained", safe_serialization=True)
    a = write_patch(bf16_organism, tmp_path / "trained", tmp_path / "p32", {})
    b = write_patch(bf16_organism, tmp_path / "trained", tmp_path / "pb", {}, dtype="base")
    p32, pb = load_patch(tmp_path / "p32")[0], load_patch(tmp_path / "pb")[0]
    assert a["patch_dtype"] == "float32" and b["patch_dtype"] == "base"
    assert {v.dtype for v in p32.values()} == {torch.float32} and {v.dtype for v in pb.values()} == {torch.bfloat16}
    assert set(pb) <= set(p32) and len(p32) > 0
    for k in pb:  # the stored bf16 delta is the fp32 delta rounded (8 significant bits)
        assert torch.allclose(pb[k].float(), p32[k], rtol=2 ** -8, atol=0)
    assert (tmp_path / "pb" / PATCH_FILE).stat().st_size < 0.6 * (tmp_path / "p32" / PATCH_FILE).stat().st_size
    assert json.loads((tmp_path / "pb" / "manifest.json").read_text())["patch_dtype"] == "base"
    with pytest.raises(ValueError, match="float32 or base"):
        write_patch(bf16_organism, tmp_path / "trained", tmp_path / "px", {}, dtype="float16")
