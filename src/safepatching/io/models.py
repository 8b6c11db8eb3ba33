"""Loading any HF causal LM + tokenizer (local folder or hub id), safetensors only; library versions."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def versions() -> dict:
    import transformers

    v = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        v["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


def load_model(path: str | Path, trainable: bool = True):
    """Any HF causal LM (local folder or hub id; hub ids need network). safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if torch.cuda.is_available():
        model = model.cuda()
    for p in model.parameters():
        p.requires_grad_(trainable)
    return model, tok


def materialise(source: str, out: Path) -> None:
    """Any HF causal LM (hub id or local path) -> a local safetensors folder (atomic)."""
    from .checkpoints import atomic_dir

    model, tok = load_model(source, trainable=False)
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
