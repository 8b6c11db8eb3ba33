"""SNIP importance (Lee et al. 2019) of a patch's parameters, on the batch's harmful pairs.

score = Σ_batches |X ⊙ ∂L/∂W|, with X = W (the *patched* model's weights, `score="weight"`) or
X = P (the patch itself, `score="delta"`), and L the patch's own objective on the harmful responses.
Scores are computed on the patched model θ+P: on the backbone, ascent and descent give the same
|∂L/∂W| and so identical scores (and empty difference sets).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..chat import collate, encode_pair, sequence_nll
from .objectives import get_objective
from ..io.checkpoints import sha256_file
from ..io.models import load_model
from ..io.patches import SCORES_FILE, apply_deltas, load_patch

def snip_scores(model, tok, pairs: list[tuple[str, str]], objective_name: str, names: list[str],
                deltas: dict[str, torch.Tensor] | None = None, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """SNIP scores for the parameters in `names`. With `deltas`, scores use |P ⊙ g| instead of |W ⊙ g|."""
    # npo's gradient at θ has |direction| of ga's; SNIP only uses |∂L/∂W|, so score npo patches with ga
    objective = get_objective("ga" if get_objective(objective_name).needs_ref else objective_name)
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        params[n].requires_grad_(True)  # after merge_and_unload grads are off: re-enable
    scores = {n: torch.zeros_like(params[n], dtype=torch.float32, device="cpu") for n in names}
    encs = [encode_pair(tok, p, r) for p, r in pairs]
    model.eval()  # no dropout: scores are deterministic
    dev = next(model.parameters()).device
    for s in range(0, len(encs), batch_size):
        batch = {k: v.to(dev) for k, v in collate(encs[s:s + batch_size], tok.pad_token_id).items()}
        model.zero_grad(set_to_none=True)
        loss = objective.loss(sequence_nll(model, batch))
        loss.backward()
        with torch.no_grad():
            for n in names:
                g = params[n].grad.float().cpu()
                x = deltas[n].float() if deltas is not None else params[n].detach().float().cpu()
                scores[n] += (x * g).abs()
    model.zero_grad(set_to_none=True)
    return scores


def sample_pairs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    return [pairs[i] for i in sorted(idx[:n])]


def compute_importance(base_dir: Path, patch_dir: Path, pairs: list[tuple[str, str]], out_dir: Path,
                       score: str = "weight", n_samples: int = 128, batch_size: int = 32, seed: int = 0,
                       log=print) -> dict:
    """Scores of one patch's tensors on θ+P; writes out_dir/scores.safetensors + manifest.json."""
    deltas, pmanifest = load_patch(patch_dir)
    model, tok = load_model(base_dir, trainable=False)
    apply_deltas(model, deltas)
    sub = sample_pairs(pairs, n_samples, seed)
    scores = snip_scores(model, tok, sub, pmanifest.get("objective", "gd"), sorted(deltas),
                         deltas=deltas if score == "delta" else None, batch_size=batch_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (SCORES_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in scores.items()}, str(tmp))
    tmp.replace(out_dir / SCORES_FILE)
    manifest = {"patch_sha256": pmanifest.get("patch_sha256", ""), "objective": pmanifest.get("objective"),
                "score": score, "n_samples": len(sub), "tensors": len(scores),
                "scores_sha256": sha256_file(out_dir / SCORES_FILE)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log(f"  importance ({score}) of {pmanifest.get('objective')} patch on {len(sub)} pairs: {len(scores)} tensors")
    return manifest
