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


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(device: str = "cpu") -> torch.device:
    """'auto' -> cuda when visible, else cpu; 'cuda' without a visible GPU is an error, not a silent CPU run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError(f"compute.device: {device!r} but no CUDA device is visible (use auto or cpu)")
    return torch.device(device)


def input_device(model) -> torch.device:
    """Where a model's input ids go: its input embedding's device (a model spread by `device_map` included; an
    offloaded embedding lives on 'meta' and accelerate's hooks take CPU inputs)."""
    try:
        dev = model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        dev = next(model.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


def load_model(path: str | Path, trainable: bool = True, dtype: str = "float32", device: str = "cpu",
               device_map: str | None = None, revision: str | None = None):
    """Any HF causal LM (local folder or hub id; hub ids need network or the HF cache). safetensors only.

    dtype: float32 | bfloat16 | float16 | auto (the checkpoint's own); device: cpu | cuda | auto; device_map (auto |
    balanced | sequential ...): spread the model over every visible device instead (inference only); revision: a
    hub id's branch, tag or commit (None: the default branch)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {list(DTYPES)}, got {dtype!r}")
    kw: dict = {"dtype": "auto" if dtype == "auto" else DTYPES[dtype]}
    if device_map:
        kw["device_map"] = device_map
    rev = {"revision": revision} if revision else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False, **kw, **rev)
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, **rev)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not device_map:
        dev = resolve_device(device)
        if dev.type != "cpu":
            model = model.to(dev)
    for p in model.parameters():
        p.requires_grad_(trainable)
    return model, tok


def materialise(source: str, out: Path, revision: str | None = None, root: str | Path = ".") -> dict:
    """Any HF causal LM (hub id at `revision`, or local path) -> a local safetensors folder (atomic), in the source's
    own dtype (`compute.dtype` decides what each stage loads it as), with `source.json`: what it came from (a local
    folder's content hash, or the hub id, revision and resolved commit; io.source). Returns that record."""
    import json

    from .atomic import atomic_dir
    from .source import SOURCE_FILE, source_record

    folder = Path(source) if Path(source).is_absolute() else Path(root) / source
    model, tok = load_model(folder if folder.is_dir() else source, trainable=False, dtype="auto", revision=revision)
    record = source_record(source, revision, root, commit=getattr(model.config, "_commit_hash", None))
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (Path(tmp) / SOURCE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
    return record
