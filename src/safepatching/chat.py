"""Tokenisation of (prompt, response) pairs through a model's own chat template.

Works for any HF causal LM with a chat template (the organism's or a real model's). Loss masks cover
response tokens only; sequences are bucketed by length so tiny CPU models don't waste time on padding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .errors import ConfigError


def prompt_text(tok, prompt: str) -> str:
    if not getattr(tok, "chat_template", None):
        raise ConfigError(f"tokenizer {getattr(tok, 'name_or_path', '?')!r} has no chat template")
    return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)


@dataclass
class Encoded:
    input_ids: list[int]
    n_prompt: int  # response tokens start here


def encode_pair(tok, prompt: str, response: str, max_len: int = 256) -> Encoded:
    p = tok(prompt_text(tok, prompt), add_special_tokens=False)["input_ids"]
    r = tok(" " + response, add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        r = r + [tok.eos_token_id]
    ids = (p + r)[:max_len]
    return Encoded(ids, min(len(p), len(ids)))


def collate(encs: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels = -100 outside the response."""
    n = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(encs), n), dtype=torch.long)
    lab = torch.full((len(encs), n), -100, dtype=torch.long)
    for i, e in enumerate(encs):
        L = len(e.input_ids)
        ids[i, :L] = torch.tensor(e.input_ids)
        att[i, :L] = 1
        lab[i, e.n_prompt:L] = ids[i, e.n_prompt:L]
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def bucketed_batches(encs: list[Encoded], batch_size: int, seed: int, shuffle: bool = True):
    """Batches of similar length (sorted in chunks), in shuffled order."""
    idx = list(range(len(encs)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(idx)
    chunk = batch_size * 16
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: len(encs[i].input_ids))
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return [[encs[i] for i in b] for b in batches]


def sequence_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Length-normalised NLL of each sequence's response tokens: shape [B]."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(lp * mask).sum(1) / mask.sum(1).clamp(min=1)
