"""Patch derivation: train θ on a harmful batch with one objective, store P = θ_trained − θ.

Two backends, one on-disk format:
  full  all parameters train
  lora  PEFT LoRA on `target_modules` (patching.lora); the patch is the merged LoRA delta of each target module
The patch folder holds `patch.safetensors` (deltas keyed by the base checkpoint's tensor names, only tensors that
changed; fp32 or the base dtype per `compute.patch_dtype`) and `manifest.json` (parent checkpoint hash, batch hash,
objective, steps, final loss, seed, compute settings, versions). The deltas are computed by saving the trained model
with `save_pretrained` and diffing it tensor by tensor against the base files, so names always match the checkpoint.

Training runs through `accelerate.Accelerator` (one process by default; several under `accelerate launch`, see
patching.distributed), in `compute.dtype`, with optional gradient checkpointing and accumulation.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..chat import bucketed_batches, collate, encode_pair, sequence_nll
from ..errors import NonFiniteError
from ..progress import Progress
from ..io.checkpoints import sha256_dir
from ..io.models import load_model, versions
from ..io.patches import write_patch
from .objective import get_objective


def _gather_batch(acc, local: list[torch.Tensor], plan: list[list[slice]]) -> torch.Tensor:
    """The per-sequence values of one global batch (each process holds its micro-batch pieces), gathered back into
    batch order: the whole batch's vector."""
    k, world = len(plan), len(plan[0])
    if k == 1 and world == 1:
        return local[0]
    width = max(max(s.stop - s.start for s in row) for row in plan)
    packed = torch.zeros(k, max(width, 1), dtype=torch.float32, device=acc.device)
    for j, x in enumerate(local):
        packed[j, :len(x)] = x.float()
    allp = acc.gather(packed) if world > 1 else packed  # [world * k, width], rank-major
    parts = [allp[r * k + j, :plan[j][r].stop - plan[j][r].start] for j in range(k) for r in range(world)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def optimise(model, tok, pairs: list[tuple[str, str]], objective, lr: float, max_steps: int,
             batch_size: int, target_nll: float | None, seed: int, log=print, accelerator=None) -> dict:
    """Run the objective on the pairs; returns {steps, final_loss, stopped, last_batch_nll, probe_nll_before,
    probe_nll_after, probe_size}.

    `probe_nll_before` / `probe_nll_after`: the mean per-token NLL of one fixed probe set (the first `batch_size`
    pairs, in order) before the first step and after the last, in eval mode: the number that shows what training did
    (gradient ascent raises it, descent lowers it). `last_batch_nll` is the last step's minibatch NLL, what
    `target_nll` is checked against; minibatches differ from step to step, so it is no before/after measure.

    `batch_size` is the global batch of one optimizer step; the accelerator (default: one process on the model's
    device) splits it into `gradient_accumulation_steps` micro-batches on each of its processes (`micro_slices`),
    each weighted by its share, so the step's gradient is that of the whole batch's mean loss (objectives' losses
    are means of per-sequence terms). `model` is trained in place (wrapped by `accelerator.prepare`; unwrap it with
    `accelerator.unwrap_model`)."""
    return _optimise(model, tok, pairs, objective, lr, max_steps, batch_size, target_nll, seed, log, accelerator)[0]


def _optimise(model, tok, pairs, objective, lr, max_steps, batch_size, target_nll, seed, log, accelerator):
    """optimise(); returns (stats, the prepared model)."""
    from ..config import ComputeCfg
    from .distributed import make_accelerator, micro_slices

    if accelerator is None:
        dev = next(model.parameters()).device
        accelerator = make_accelerator(ComputeCfg(device="cpu" if dev.type == "cpu" else "cuda"))
    acc = accelerator
    torch.manual_seed(seed)
    encs = [encode_pair(tok, p, r) for p, r in pairs]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model, opt = acc.prepare(model, opt)
    world, rank, k = acc.num_processes, acc.process_index, acc.gradient_accumulation_steps

    def to_dev(encs_: list) -> dict:
        return {key: v.to(acc.device) for key, v in collate(encs_, tok.pad_token_id).items()}

    ref: dict[int, torch.Tensor] = {}
    if objective.needs_ref:
        model.eval()
        with torch.no_grad():
            for i, e in enumerate(encs):
                ref[i] = sequence_nll(model, to_dev([e]))[0]
    index = {id(e): i for i, e in enumerate(encs)}
    probe, chunk = encs[:max(1, batch_size)], max(1, batch_size // (k * world))  # chunk: one micro-batch
    probe_before = _probe_nll(model, probe, to_dev, chunk)
    progress = Progress(f"  {objective.name} training steps", max_steps, log)  # every 30 s of a long run, with ETA
    model.train()
    step, epoch, stopped = 0, 0, "max_steps"
    last_nll = last_loss = float("nan")
    while step < max_steps:
        for gb in bucketed_batches(encs, batch_size, seed + epoch):
            n = len(gb)
            plan = micro_slices(n, k, world)
            local, loss_sum, bad = [], torch.zeros((), device=acc.device), torch.zeros((), device=acc.device)
            for j in range(k):
                mb = gb[plan[j][rank]]
                # an empty piece (batch smaller than world * k) still runs one sequence with weight 0: every
                # process takes part in every backward (DDP / FSDP collectives)
                run = mb or gb[:1]
                with acc.accumulate(model):
                    nll = sequence_nll(model, to_dev(run))
                    ref_nll = torch.stack([ref[index[id(e)]] for e in run]) if objective.needs_ref else None
                    loss = objective.loss(nll, ref_nll)
                    share = len(mb) / n
                    bad += (~torch.isfinite(loss.detach())).float() if mb else 0.0
                    loss_sum += loss.detach() * share if mb else 0.0
                    w = share * world * k  # backward divides by k, DDP averages over world
                    acc.backward(loss * w if w != 1.0 else loss)
                local.append(nll.detach()[:len(mb)])
            batch_nll = _gather_batch(acc, local, plan)
            if world > 1:
                loss_sum, bad = acc.reduce(torch.stack([loss_sum, bad]), "sum")
            last_nll = batch_nll.mean().item()
            if objective.reached(last_nll, target_nll):
                stopped = "target_nll"
                break
            if bad.item():
                raise NonFiniteError(f"{objective.name}: non-finite loss at step {step}")
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            last_loss = loss_sum.item()
            step += 1
            progress.update(step)
            if step >= max_steps:
                break
        else:
            epoch += 1
            continue
        if stopped == "target_nll":
            break
    probe_after = _probe_nll(model, probe, to_dev, chunk)
    log(f"  {objective.name}: {step} steps ({stopped}); NLL/token on {len(probe)} fixed probe pairs "
        f"{probe_before:.3f} -> {probe_after:.3f} (last minibatch {last_nll:.3f})")
    return {"steps": step, "final_loss": last_loss, "stopped": stopped, "last_batch_nll": last_nll,
            "probe_nll_before": probe_before, "probe_nll_after": probe_after, "probe_size": len(probe)}, model


def _probe_nll(model, probe: list, to_dev, chunk: int) -> float:
    """Mean per-token NLL of the probe pairs, in eval mode, no gradients, `chunk` sequences per forward (the
    training micro-batch size, so it fits where training fits). Every process computes the same value: under
    DDP / FSDP each one runs the same forwards (sharded models need every process in each forward). Leaves the model
    in eval mode; consumes no random numbers, so training is the same with or without it."""
    model.eval()
    with torch.no_grad():
        nll = torch.cat([sequence_nll(model, to_dev(probe[i:i + chunk])).float().cpu()
                         for i in range(0, len(probe), chunk)])
    return nll.mean().item()


def _trained_model(acc, model, base_dir: Path, backend: str, lora_cfg, compute, seed: int):
    """On the main process: the trained model as a plain HF model on the CPU, LoRA merged (fp32 or base dtype per
    `compute.patch_dtype`); None on the others. Sharded engines (FSDP, DeepSpeed) gather the full state dict on the
    main process, which loads it into a fresh CPU copy."""
    from accelerate.utils import DistributedType

    from .lora import merge, wrap

    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        state = acc.get_state_dict(model)  # a collective: every process takes part
        if not acc.is_main_process:
            return None
        trained, _ = load_model(base_dir, trainable=False, dtype=compute.dtype, device="cpu")
        if backend == "lora":
            trained = wrap(trained, lora_cfg, seed)
        trained.load_state_dict(state)
    elif not acc.is_main_process:
        return None
    else:
        trained = acc.unwrap_model(model)
        if next(trained.parameters()).device.type != "cpu":
            trained = trained.to("cpu")  # frees the accelerator before the merge / save
    if backend == "lora":
        trained = merge(trained, fp32=compute.patch_dtype == "float32")
    return trained


def train_patch(base_dir: Path, pairs: list[tuple[str, str]], out_dir: Path, obj_cfg, backend: str = "full",
                lora_cfg=None, seed: int = 0, batch_sha256: str = "", log=print, compute=None) -> dict:
    """Derive one patch (SE with ga/npo, OM with gd) from `pairs` on the checkpoint at base_dir.

    `compute` (config.ComputeCfg; default: fp32 on the CPU, one process) sets the dtype, device, gradient
    checkpointing, accumulation and patch dtype; inside `accelerate launch` every process trains its shard and only
    the main one writes the patch (atomically). Every process returns the written manifest plus `seconds` (its
    wall time, for logs: the manifest file holds no timings)."""
    import json

    from ..config import ComputeCfg
    from ..io.patches import MANIFEST
    from .distributed import make_accelerator
    from .lora import wrap

    compute = compute or ComputeCfg()
    t0 = time.time()
    if backend not in ("full", "lora"):
        raise ValueError(f"unknown backend {backend!r}; known: ['full', 'lora']")
    objective = get_objective(obj_cfg.objective, obj_cfg)
    acc = make_accelerator(compute)
    log = log if acc.is_main_process else (lambda s: None)
    # loaded on the CPU: `prepare` places (DDP) or shards (FSDP / DeepSpeed) it
    model, tok = load_model(base_dir, trainable=(backend == "full"), dtype=compute.dtype, device="cpu")
    if compute.gradient_checkpointing:
        model.config.use_cache = False
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if backend == "lora":
        model = wrap(model, lora_cfg, seed)
    if acc.distributed_type.name == "DEEPSPEED":  # no DataLoader to infer it from
        ds = acc.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu") in (None, "auto"):
            ds["train_micro_batch_size_per_gpu"] = max(1, -(-obj_cfg.batch_size // (acc.num_processes *
                                                                                  acc.gradient_accumulation_steps)))
    stats, model = _optimise(model, tok, pairs, objective, obj_cfg.lr, obj_cfg.max_steps, obj_cfg.batch_size,
                             obj_cfg.target_nll, seed, log, acc)
    trained = _trained_model(acc, model, base_dir, backend, lora_cfg, compute, seed)
    del model
    acc.free_memory()  # the optimizer states (and the wrapped model) leave the accelerator
    out_dir = Path(out_dir)
    if acc.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as td:
            trained.save_pretrained(td, safe_serialization=True)
            del trained  # write_patch reads it back from disk: one trained copy in RAM at a time
            manifest = {"objective": objective.name, "backend": backend, "seed": seed,
                        "parent": str(base_dir), "parent_sha256": sha256_dir(base_dir),
                        "batch_sha256": batch_sha256, "n_pairs": len(pairs),
                        "config": obj_cfg.model_dump(),
                        "lora": lora_cfg.model_dump() if lora_cfg and backend == "lora" else None,
                        "compute": _compute_record(compute, acc),
                        "versions": versions(), **stats}
            manifest = write_patch(base_dir, Path(td), out_dir, manifest, dtype=compute.patch_dtype)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    # the manifest is in a DVC output: the time goes to the log and the returned dict, never into the file
    seconds = round(time.time() - t0, 2)
    log(f"  patch trained and written in {seconds:.1f}s")
    return {**manifest, "seconds": seconds}


def _compute_record(compute, acc) -> dict:
    """What the manifest records of how the patch was computed (the settings + what accelerate resolved)."""
    return {**compute.model_dump(), "processes": acc.num_processes, "distributed": acc.distributed_type.name,
            "mixed_precision": acc.mixed_precision, "accelerator_device": str(acc.device)}
