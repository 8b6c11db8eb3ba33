"""LoRA patches: target modules per architecture, the PEFT wrapper, and merging the adapters back (in fp32 or in the
base dtype) so the patch is an ordinary per-tensor delta.

`LORA_TARGETS` is used when `patch.lora.target_modules` is `auto`: every attention and MLP projection of the
architecture (`config.model_type`), the usual choice for full-capacity LoRA on chat models (QLoRA's "all linear
layers" without the output head). The shipped params.yaml names its modules explicitly so that DVC sees them.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _ATTN + _MLP,
    "mistral": _ATTN + _MLP,
    "gemma": _ATTN + _MLP,
    "gemma2": _ATTN + _MLP,
    "gemma3_text": _ATTN + _MLP,
    "qwen2": _ATTN + _MLP,
    "qwen3": _ATTN + _MLP,
    "olmo2": _ATTN + _MLP,
    "cohere": _ATTN + _MLP,
    "granite": _ATTN + _MLP,
    "mixtral": _ATTN,      # transformers 5 fuses the experts into 3-D parameters: no Linear to adapt
    "qwen2_moe": _ATTN,    # likewise (its shared expert aside)
    "starcoder2": _ATTN + ("c_fc", "c_proj"),
    "falcon": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "opt": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}


def target_modules(value, model) -> list[str] | str:
    """`patch.lora.target_modules` for this model: an explicit list as given, 'all-linear' for PEFT, 'auto' from
    LORA_TARGETS by the model's `config.model_type` (an unknown type is an error naming the known ones)."""
    if value == "all-linear":
        return value
    if value == "auto":
        mt = getattr(getattr(model, "config", None), "model_type", None)
        if mt not in LORA_TARGETS:
            raise ConfigError(f"patch.lora.target_modules: auto knows no LoRA targets for model_type {mt!r} "
                              f"(known: {sorted(LORA_TARGETS)}); list the module names or use all-linear")
        return list(LORA_TARGETS[mt])
    return list(value)


def wrap(model, lora_cfg, seed: int):
    """The PEFT LoRA model over `model` (adapter init seeded)."""
    from peft import LoraConfig, get_peft_model

    lc = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                    target_modules=target_modules(lora_cfg.target_modules, model), task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    return get_peft_model(model, lc)


def merge(model, fp32: bool = True):
    """PEFT model -> the plain model with its adapters merged in. fp32: each adapted weight is upcast to fp32 first,
    so B·A·scale is added without rounding to a bf16/fp16 grid (the patch then holds the exact fp32 delta; only
    those weights grow to 4 bytes per entry, on whatever device the model is on). No-op cast for fp32 models."""
    from peft.tuners.lora import LoraLayer

    if fp32:
        for m in model.modules():
            if isinstance(m, LoraLayer):
                w = m.get_base_layer().weight
                if w.dtype != torch.float32:
                    w.data = w.data.float()
    return model.merge_and_unload()
