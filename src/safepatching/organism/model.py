"""Build the model organism: a BPE tokenizer with a chat template and a tiny Llama trained from scratch.

The result is a normal HF folder (safetensors + tokenizer + chat_template.jinja) that
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load like any real model.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch

from ..chat import bucketed_batches, collate, encode_pair, sequence_nll

SPECIAL = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|> {{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on the world's texts, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(tok, hidden: int, layers: int, heads: int, intermediate: int, max_len: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_len, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, attn_implementation="eager")
    return LlamaForCausalLM(cfg)


def train_sft(model, tok, pairs: list[tuple[str, str]], steps: int, batch_size: int, lr: float,
              seed: int, log_every: int = 200, log=print, weight_decay: float = 0.01,
              autocast: str = "none") -> list[float]:
    """Plain SFT (loss on response tokens, mean over sequences of the per-token NLL). `autocast="bfloat16"` runs the
    forward under CPU autocast (matmuls in bf16, fp32 master weights and optimizer)."""
    torch.manual_seed(seed)
    encs = [encode_pair(tok, p, r) for p, r in pairs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    warm = max(1, steps // 20)

    def lr_at(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    step, epoch, t0 = 0, 0, time.time()
    while step < steps:
        for mb in bucketed_batches(encs, batch_size, seed + epoch):
            batch = collate(mb, tok.pad_token_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bfloat16"):
                loss = sequence_nll(model, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if log_every and step % log_every == 0:
                log(f"  step {step}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f} "
                    f"({time.time() - t0:.0f}s)")
            if step >= steps:
                break
        epoch += 1
    model.eval()
    return losses


def build_organism(world_dir: Path, out_dir: Path, cfg, seed: int, log=print) -> dict:
    """world_dir (from the `world` stage) -> out_dir: an aligned tiny chat Llama. Returns the summary written to
    out_dir/organism.json plus `train_seconds` (for logs only: the file holds no timings)."""
    from ..io.jsonl import read_jsonl

    rows = read_jsonl(Path(world_dir) / "sft.jsonl")
    random.Random(seed).shuffle(rows)
    texts = [r["prompt"] + " " + r["response"] for r in rows]
    t0 = time.time()
    tok = build_tokenizer(texts, cfg.vocab_size)
    model = build_model(tok, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size,
                        cfg.max_len, seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"organism: {n_params / 1e6:.2f}M params, vocab {len(tok)}, {len(rows)} SFT pairs")
    losses = train_sft(model, tok, [(r["prompt"], r["response"]) for r in rows], cfg.steps,
                       cfg.batch_size, cfg.lr, seed, log=log, weight_decay=cfg.weight_decay,
                       autocast=cfg.autocast)
    train_s = time.time() - t0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    summary = {"params": n_params, "vocab": len(tok),
               "final_loss": round(sum(losses[-50:]) / min(50, len(losses)), 5), "steps": cfg.steps,
               "autocast": cfg.autocast,
               "seed": seed}
    # organism.json is in a DVC output: no wall-clock time there (it would change the folder's hash on every run)
    (out_dir / "organism.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "train_seconds": round(train_s, 1)}
