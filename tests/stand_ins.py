"""Locally built stand-ins for real models and benchmark tasks (no hub): a random-weight Qwen2 chat model with its own
byte-level BPE tokenizer and a ChatML template; a tiny GPT-NeoX chat model with its own BPE tokenizer and Llama-2's
`[INST]` template, briefly trained to refuse some requests, and a sequence classifier on its tokenizer; and an
lm-eval multiple-choice task YAML over a local JSONL."""

from __future__ import annotations

from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# meta-llama/Llama-2-7b-chat-hf's chat template as published (no generation prompt: the reply follows " [/INST]")
LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

# lm-eval task over a local JSONL of {question, choices, answer}; format with name, data, cache, prefix
MC_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{prefix} {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def build_qwen_stand_in(out: Path, corpus: list[str], vocab_size: int = 400) -> Path:
    """A tiny random-weight Qwen2ForCausalLM + its own BPE tokenizer (trained on `corpus`) + a ChatML template."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = _bpe(corpus, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    tok.chat_template = CHATML
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _bpe(corpus: list[str], specials: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `corpus`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tk


def build_neox_stand_in(out: Path, replies: dict[str, str], classifier: Path | None = None, steps: int = 60,
                        vocab_size: int = 400) -> Path:
    """A tiny GPTNeoXForCausalLM with its own byte-level BPE tokenizer (trained on the prompts and replies; `<s>`,
    `</s>`, `<unk>` and no pad token, as Llama-2's) and Llama-2's `[INST]` chat template, trained `steps` full-batch
    steps on `replies` ({prompt: reply}, e.g. a refusal for some requests) through that template, saved to `out`.
    `classifier`: also save a random-weight GPTNeoXForSequenceClassification (labels LABEL_0 / LABEL_1, pad = `</s>`)
    on the same tokenizer there."""
    import torch
    from transformers import (GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification,
                              PreTrainedTokenizerFast)

    texts = [t for pr in replies.items() for t in pr]
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(texts * 3, ["<unk>", "<s>", "</s>"], vocab_size),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left")
    tok.chat_template = LLAMA2_CHAT
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=2048, rotary_pct=0.25,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = GPTNeoXForCausalLM(cfg)
    seqs, starts = [], []
    for prompt, reply in replies.items():
        p = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False),
                add_special_tokens=False)["input_ids"]
        seqs.append(p + tok(" " + reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        starts.append(len(p))
    n = max(map(len, seqs))
    ids = torch.tensor([s + [tok.eos_token_id] * (n - len(s)) for s in seqs])
    labels = torch.tensor([[-100] * b + s[b:] + [-100] * (n - len(s)) for s, b in zip(seqs, starts)])
    att = (torch.arange(n)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=att, labels=labels).loss.backward()
        opt.step()
    model.generation_config.pad_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if classifier is not None:
        torch.manual_seed(1)
        cls_cfg = GPTNeoXConfig(**{**cfg.to_dict(), "num_labels": 2, "pad_token_id": tok.eos_token_id})
        GPTNeoXForSequenceClassification(cls_cfg).save_pretrained(classifier)
        tok.pad_token = tok.eos_token
        tok.save_pretrained(classifier)
    return out


def write_csv(path: Path, header: list[str], rows) -> Path:
    """A CSV as the public benchmark files are published (pandas' to_csv: minimal quoting, `\\n` line ends)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path
