"""The on-disk patch format: `patch.safetensors` (deltas keyed by the base checkpoint's tensor names, only tensors
that changed; fp32, or the base tensor's dtype with `compute.patch_dtype: base`) + `manifest.json`; and the
importance-scores file name of a scores folder. Readers upcast deltas to fp32 before using them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, NonFiniteError
from .atomic import atomic_dir
from .checkpoints import iter_shards, sha256_file

PATCH_FILE = "patch.safetensors"
MANIFEST = "manifest.json"
SCORES_FILE = "scores.safetensors"


def iter_tensors(model_dir: Path):
    """(name, tensor) for every tensor of a safetensors checkpoint, one shard in memory at a time."""
    for _, tensors in iter_shards(model_dir):
        yield from tensors.items()


def write_patch(base_dir: Path, trained_dir: Path, out_dir: Path, manifest: dict, dtype: str = "float32") -> dict:
    """Diff two checkpoints tensor by tensor into out_dir/patch.safetensors (+ manifest); atomic. The difference is
    taken in fp32 (exact for bf16/fp16 tensors) and stored in fp32 (dtype='float32') or rounded to the base tensor's
    dtype (dtype='base'); a delta that rounds to zero there is dropped."""
    if dtype not in ("float32", "base"):
        raise ValueError(f"patch dtype must be float32 or base, got {dtype!r}")
    trained = dict(iter_tensors(trained_dir))  # one model in RAM (the trained one just saved)
    deltas: dict[str, torch.Tensor] = {}
    for name, base in iter_tensors(base_dir):
        if name not in trained:
            continue
        new = trained.pop(name)
        if new.shape != base.shape:
            raise CheckpointError(f"{name}: shape {tuple(new.shape)} in trained model vs {tuple(base.shape)} in base")
        d = new.float() - base.float()
        if not torch.isfinite(d).all():
            raise NonFiniteError(f"patch tensor {name} is not finite")
        if dtype == "base" and base.dtype != torch.float32:
            d = d.to(base.dtype)
        if torch.count_nonzero(d):
            deltas[name] = d.contiguous()
    with atomic_dir(out_dir, overwrite=True) as tmp:
        save_file(deltas, str(tmp / PATCH_FILE), metadata={"format": "safepatching-delta-v1"})
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in deltas.values())) if deltas else torch.tensor(0.0)
        manifest = dict(manifest, patch_dtype=dtype, tensors=len(deltas),
                        elements=int(sum(d.numel() for d in deltas.values())),
                        l2_norm=float(norm), patch_sha256=sha256_file(tmp / PATCH_FILE))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def load_patch(patch_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    patch_dir = Path(patch_dir)
    f = patch_dir / PATCH_FILE
    if not f.exists():
        raise CheckpointError(f"{patch_dir}: no {PATCH_FILE}")
    tensors = {}
    with safe_open(str(f), framework="pt") as sf:
        for k in sf.keys():
            tensors[k] = sf.get_tensor(k)
    manifest = json.loads((patch_dir / MANIFEST).read_text()) if (patch_dir / MANIFEST).exists() else {}
    return tensors, manifest


def apply_deltas(model, deltas: dict[str, torch.Tensor], scale: float = 1.0) -> None:
    """In place: θ += scale·P for the model's parameters named in `deltas`."""
    sd = dict(model.named_parameters())
    missing = [k for k in deltas if k not in sd]
    if missing:
        raise CheckpointError(f"patch tensors not in model: {missing[:5]}")
    with torch.no_grad():
        for k, d in deltas.items():
            sd[k].add_(d.to(sd[k].device, sd[k].dtype), alpha=scale)
