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
from .objective import get_objective
from ..errors import DataError
from ..progress import Progress
from ..io.atomic import atomic_dir
from ..io.checkpoints import sha256_file
from ..io.models import load_model
from ..io.patches import SCORES_FILE, apply_deltas, load_patch
from .distributed import Dist


def snip_scores(model, tok, pairs: list[tuple[str, str]], objective_name: str, names: list[str],
                deltas: dict[str, torch.Tensor] | None = None, batch_size: int = 32, grad_accumulation: int = 1,
                dist: Dist | None = None, log=print) -> dict[str, torch.Tensor]:
    """SNIP scores for the parameters in `names`. With `deltas`, scores use |P ⊙ g| instead of |W ⊙ g|.

    Each batch's gradient is that of its mean loss (accumulated over `grad_accumulation` micro-batches, weighted by
    their share); under several processes (`dist`) whole batches go round-robin to the processes and the scores are
    summed across them, so every process holds the same total as one process would (up to summation order).
    Scores, and the gradients read each batch, live in fp32 on the CPU: the accelerator holds one model copy.
    No `names` (a zero patch: training stopped at step 0, e.g. gradient ascent already past `target_nll`): {}."""
    # npo's gradient at θ has |direction| of ga's; SNIP only uses |∂L/∂W|, so score npo patches with ga
    from .distributed import micro_slices

    if not names:  # a zero patch (trained 0 steps) has no tensors: nothing to score, no backward to run
        return {}
    dist = dist or Dist(next(model.parameters()).device)
    objective = get_objective("ga" if get_objective(objective_name).needs_ref else objective_name)
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        params[n].requires_grad_(True)  # after merge_and_unload grads are off: re-enable
    scores = {n: torch.zeros_like(params[n], dtype=torch.float32, device="cpu") for n in names}
    encs = [encode_pair(tok, p, r) for p, r in pairs]
    model.eval()  # no dropout: scores are deterministic
    dev = dist.device
    starts = list(range(0, len(encs), batch_size))[dist.rank::dist.world]
    progress = Progress("  SNIP batches" + (f" (the main process's share of {dist.world})" if dist.world > 1 else ""), len(starts), log)
    for i, s in enumerate(starts):
        progress.update(i)
        batch = encs[s:s + batch_size]
        model.zero_grad(set_to_none=True)
        for (sl,) in micro_slices(len(batch), grad_accumulation, 1):
            if sl.start == sl.stop:
                continue
            mb = {k: v.to(dev) for k, v in collate(batch[sl], tok.pad_token_id).items()}
            loss = objective.loss(sequence_nll(model, mb))
            if sl.stop - sl.start != len(batch):
                loss = loss * ((sl.stop - sl.start) / len(batch))
            loss.backward()
        with torch.no_grad():
            for n in names:
                g = params[n].grad.float().cpu()
                x = deltas[n].float() if deltas is not None else params[n].detach().float().cpu()
                scores[n] += (x * g).abs()
    model.zero_grad(set_to_none=True)
    for n in names:  # one tensor at a time through the accelerator
        dist.sum_(scores[n])
    return scores


def sample_pairs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    return [pairs[i] for i in sorted(idx[:n])]


def compute_importance(base_dir: Path, patch_dir: Path, pairs: list[tuple[str, str]], out_dir: Path,
                       score: str = "weight", n_samples: int = 128, batch_size: int = 32, seed: int = 0,
                       log=print, compute=None, respond=None) -> dict:
    """Scores of one patch's tensors on θ+P; writes out_dir/scores.safetensors + manifest.json (atomically, on the
    main process only; every process returns the manifest). `compute` (config.ComputeCfg) sets dtype, device and
    accumulation; inside `accelerate launch` the batches are shared among the processes.

    `respond(model, tok, questions) -> answers` (importance.target "own"): the loss reads θ+P's own answers to the
    sampled questions instead of the batch's responses (generated on the main process, shared with the others);
    questions it answers with nothing are dropped."""
    from ..config import ComputeCfg
    from .distributed import dist_context

    compute = compute or ComputeCfg()
    dist = dist_context(compute)
    out_dir = Path(out_dir)
    deltas, pmanifest = load_patch(patch_dir)
    model, tok = load_model(base_dir, trainable=False, dtype=compute.dtype, device=str(dist.device))
    apply_deltas(model, deltas)  # in place: θ+P is the one copy
    names = sorted(deltas)
    if not names:
        log(f"  importance: {patch_dir} is a zero patch (no tensor changed: {pmanifest.get('steps', '?')} "
            f"training steps, stopped by {pmanifest.get('stopped', '?')}); its scores are empty (a zero delta "
            "moves nothing whatever its mask), so the merge keeps the other patch alone")
    if score != "delta":
        deltas = None  # |W ⊙ g| needs only θ+P: free the patch's RAM
    sub = sample_pairs(pairs, n_samples, seed)
    if respond is not None:  # the main process answers, every process scores the same pairs
        answers = dist.broadcast_object(respond(model, tok, [q for q, _ in sub]) if dist.is_main else None)
        asked = len(sub)
        sub = [(q, a) for (q, _), a in zip(sub, answers) if a.strip()]
        if not sub:
            raise DataError(f"{patch_dir}: the patched model answered none of the {asked} sampled questions "
                            "(importance.target own needs answers to score)")
    scores = snip_scores(model, tok, sub, pmanifest.get("objective", "gd"), names, deltas=deltas,
                         batch_size=batch_size, grad_accumulation=compute.grad_accumulation, dist=dist,
                         log=log if dist.is_main else (lambda s: None))
    del model
    manifest = {"patch_sha256": pmanifest.get("patch_sha256", ""), "objective": pmanifest.get("objective"),
                "score": score, "target": "own" if respond is not None else "batch", "n_samples": len(sub),
                "tensors": len(scores)}
    if dist.is_main:
        with atomic_dir(out_dir, overwrite=True) as tmp:
            save_file({k: v.contiguous() for k, v in scores.items()}, str(tmp / SCORES_FILE))
            manifest["scores_sha256"] = sha256_file(tmp / SCORES_FILE)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        log(f"  importance ({score}) of {pmanifest.get('objective')} patch on {len(sub)} pairs: {len(scores)} "
            f"tensors" + (f" ({dist.world} processes)" if dist.world > 1 else ""))
    dist.barrier()
    return json.loads((out_dir / "manifest.json").read_text())
