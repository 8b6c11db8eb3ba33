"""Patch derivation: train θ on a harmful batch with one objective, store P = θ_trained − θ.

Two backends, one on-disk format:
  full  all parameters train
  lora  PEFT LoRA on `target_modules`; the patch is the merged LoRA delta of each target module
The patch folder holds `patch.safetensors` (fp32 deltas keyed by the base checkpoint's tensor names,
only tensors that changed) and `manifest.json` (parent checkpoint hash, batch hash, objective, steps,
final loss, seed, versions). The deltas are computed by saving the trained model with `save_pretrained`
and diffing it tensor by tensor against the base files, so names always match the checkpoint.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..chat import bucketed_batches, collate, encode_pair, sequence_nll
from ..errors import NonFiniteError
from ..io.checkpoints import sha256_dir
from ..io.models import load_model, versions
from ..io.patches import write_patch
from .objectives import get_objective


def _device_batch(batch: dict, model) -> dict:
    dev = next(model.parameters()).device
    return {k: v.to(dev) for k, v in batch.items()}


def optimise(model, tok, pairs: list[tuple[str, str]], objective, lr: float, max_steps: int,
             batch_size: int, target_nll: float | None, seed: int, log=print) -> dict:
    """Run the objective on the pairs; returns {steps, final_loss, final_nll, start_nll, stopped}."""
    torch.manual_seed(seed)
    encs = [encode_pair(tok, p, r) for p, r in pairs]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ref: dict[int, torch.Tensor] = {}
    if objective.needs_ref:
        model.eval()
        with torch.no_grad():
            for i, e in enumerate(encs):
                ref[i] = sequence_nll(model, _device_batch(collate([e], tok.pad_token_id), model))[0]
    index = {id(e): i for i, e in enumerate(encs)}
    model.train()
    step, epoch, stopped = 0, 0, "max_steps"
    start_nll = last_nll = last_loss = float("nan")
    while step < max_steps:
        for mb in bucketed_batches(encs, batch_size, seed + epoch):
            batch = _device_batch(collate(mb, tok.pad_token_id), model)
            nll = sequence_nll(model, batch)
            last_nll = nll.mean().item()
            if step == 0:
                start_nll = last_nll
            if objective.reached(last_nll, target_nll):
                stopped = "target_nll"
                break
            ref_nll = torch.stack([ref[index[id(e)]] for e in mb]) if objective.needs_ref else None
            loss = objective.loss(nll, ref_nll)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"{objective.name}: non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            last_loss = loss.item()
            step += 1
            if step >= max_steps:
                break
        else:
            epoch += 1
            continue
        if stopped == "target_nll":
            break
    model.eval()
    log(f"  {objective.name}: {step} steps, NLL/token {start_nll:.3f} -> {last_nll:.3f} ({stopped})")
    return {"steps": step, "final_loss": last_loss, "start_nll": start_nll, "final_nll": last_nll,
            "stopped": stopped}


def train_patch(base_dir: Path, pairs: list[tuple[str, str]], out_dir: Path, obj_cfg, backend: str = "full",
                lora_cfg=None, seed: int = 0, batch_sha256: str = "", log=print) -> dict:
    """Derive one patch (SE with ga/npo, OM with gd) from `pairs` on the checkpoint at base_dir."""
    t0 = time.time()
    objective = get_objective(obj_cfg.objective, obj_cfg)
    model, tok = load_model(base_dir, trainable=(backend == "full"))
    if backend == "lora":
        from peft import LoraConfig, get_peft_model

        lc = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")
        torch.manual_seed(seed)
        model = get_peft_model(model, lc)
    elif backend != "full":
        raise ValueError(f"unknown backend {backend!r}; known: ['full', 'lora']")
    stats = optimise(model, tok, pairs, objective, obj_cfg.lr, obj_cfg.max_steps, obj_cfg.batch_size,
                     obj_cfg.target_nll, seed, log=log)
    if backend == "lora":
        model = model.merge_and_unload()
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent) as td:
        model.save_pretrained(td, safe_serialization=True)
        manifest = {"objective": objective.name, "backend": backend, "seed": seed,
                    "parent": str(base_dir), "parent_sha256": sha256_dir(base_dir),
                    "batch_sha256": batch_sha256, "n_pairs": len(pairs),
                    "config": obj_cfg.model_dump(), "lora": lora_cfg.model_dump() if lora_cfg and backend == "lora" else None,
                    "versions": versions(), "seconds": round(time.time() - t0, 2), **stats}
        return write_patch(base_dir, Path(td), out_dir, manifest)
