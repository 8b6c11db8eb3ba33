"""Batched greedy generation with a fixed decoding config, for any HF causal LM with a chat template."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..chat import prompt_text
from ..io.models import input_device
from ..progress import Progress


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int = 48
    batch_size: int = 64
    max_prompt_tokens: int | None = None  # longer prompts are skipped (evaluate_rows); None: context - max_new_tokens

    @classmethod
    def of(cls, eval_cfg) -> "DecodingConfig":
        """From `eval:` settings (max_new_tokens, batch_size, max_prompt_tokens)."""
        return cls(eval_cfg.max_new_tokens, eval_cfg.batch_size, eval_cfg.max_prompt_tokens)


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_context(model, tok=None) -> int | None:
    """A model's context in tokens: its config's position limit, else the tokenizer's model_max_length (when sane)."""
    cfg = getattr(model, "config", None)
    for k in CONTEXT_KEYS:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    n = getattr(tok, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10_000_000 else None


def prompt_limit(max_prompt_tokens: int | None, max_new_tokens: int, context: int | None) -> int | None:
    """The longest prompt (chat-templated, in tokens) that is generated: eval.max_prompt_tokens, else the model's
    context minus max_new_tokens; None: no limit known."""
    if max_prompt_tokens is not None:
        return max_prompt_tokens
    return None if context is None else context - max_new_tokens


def prompt_tokens(tok, prompts: list[str]) -> list[int]:
    """Each prompt's length in tokens as generation feeds it (through the chat template)."""
    return [len(tok(prompt_text(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts]


@torch.no_grad()
def generate(model, tok, prompts: list[str], cfg: DecodingConfig = DecodingConfig(), what: str = "generate",
             log=print) -> list[str]:
    """Greedy completions, in the order of `prompts`. Batches are length-sorted, left-padded. Progress with an ETA is
    logged every 30 s of a long generation (Progress)."""
    texts = [prompt_text(tok, p) for p in prompts]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out: list[str] = [""] * len(prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.eval()
    progress = Progress(what, len(prompts), log)
    for s in range(0, len(order), cfg.batch_size):
        progress.update(s)
        idx = order[s:s + cfg.batch_size]
        n = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        att = torch.zeros((len(idx), n), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, n - len(enc[i]):] = torch.tensor(enc[i])
            att[r, n - len(enc[i]):] = 1
        dev = input_device(model)
        gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), do_sample=False,
                             max_new_tokens=cfg.max_new_tokens, pad_token_id=pad,
                             eos_token_id=tok.eos_token_id)
        for r, i in enumerate(idx):
            out[i] = tok.decode(gen[r, n:], skip_special_tokens=True).strip()
    return out
