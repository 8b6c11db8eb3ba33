"""`patch:`, `importance:` and `compute:`: how patches are trained and scored, and where."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from .settings import ObjectiveCfg, Strict, objective_settings


class LoraCfg(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | Literal["auto", "all-linear"] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        description="module names; 'auto': the attention + MLP projections of the model's architecture "
                    "(patching.lora.LORA_TARGETS, keyed by config.model_type); 'all-linear': PEFT's every linear "
                    "layer but the output head")


class PatchCfg(Strict):
    backend: Literal["full", "lora"] = "full"
    se: SerializeAsAny[ObjectiveCfg] = Field(default_factory=lambda: objective_settings({"objective": "ga"}),
                                             description="the SE patch's objective and its settings")
    om: SerializeAsAny[ObjectiveCfg] = Field(default_factory=lambda: objective_settings({"objective": "gd"}),
                                             description="the OM patch's objective and its settings")
    lora: LoraCfg = Field(default_factory=LoraCfg)
    seed: int = 0

    @field_validator("se", "om", mode="before")
    @classmethod
    def _objective(cls, v: Any) -> ObjectiveCfg:
        return objective_settings(v)


class ImportanceCfg(Strict):
    score: Literal["weight", "delta"] = Field("weight", description="SNIP |W * dL/dW| (weight) or |P * dL/dW| (delta)")
    target: Literal["batch", "own"] = Field(
        "batch", description="the response tokens SNIP's loss reads: the batch's harmful responses (batch), or each "
        "patched model's own greedy answer to the batch's questions (own: 'using the input question from D_h' read as "
        "the patch's own behaviour -- refusals for SE, compliance for OM)")
    max_new_tokens: int = Field(48, ge=1, description="target own: length of the patched model's answers (generated "
                                                      "in batches of batch_size)")
    n_samples: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


class ComputeCfg(Strict):
    """Where, in what precision and on how many processes models are loaded, trained and scored. The defaults (fp32,
    CPU, one process, no accumulation or checkpointing) reproduce the organism's numbers exactly.

    Batch sizes stay where they were: each objective's `batch_size` is the *global* batch of one optimizer step
    (split into `grad_accumulation` micro-batches on each of `num_processes` processes, weighted so the loss is that
    batch's mean: compute settings change a patch's numerics, never its math); SNIP's is `importance.batch_size`
    (whole batches go to processes round-robin); evaluation's is `eval.batch_size` (generation; there is no separate
    eval batch size)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "float32", description="dtype the model's weights are loaded (and trained) in; auto: the checkpoint's own")
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="auto: cuda when visible, else cpu")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (patch training)")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step (and per SNIP batch)")
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = Field(
        None, description="evaluation only: spread a model that does not fit one device over all visible ones "
                          "(accelerate big-model inference); replaces `device` for evaluation loads")
    patch_dtype: Literal["float32", "base"] = Field(
        "float32", description="float32: deltas computed and stored in fp32 (LoRA merged into fp32 copies of its "
                               "target weights); base: in the base checkpoint's dtype (half the size for bf16, "
                               "LoRA merged in that dtype, each delta rounded to its 8/11 significant bits)")
    num_processes: int = Field(1, ge=1, description="> 1: train_patch and importance relaunch themselves with "
                                                    "`accelerate launch` (DDP; one process per GPU, gloo on CPU)")
    accelerate_config: str | None = Field(None, description="an `accelerate config` file (FSDP, DeepSpeed, mixed "
                                                            "precision); its num_processes is overridden by ours")

    @model_validator(mode="after")
    def _consistent(self) -> "ComputeCfg":
        if self.accelerate_config and self.device == "cpu":
            raise ValueError("accelerate_config (FSDP / DeepSpeed) needs device auto or cuda; CPU data parallel "
                             "(gloo) needs only num_processes")
        return self
