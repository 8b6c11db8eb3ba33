"""Exact values of the patching maths, each expectation worked out by hand (never by the function under test):
the length-normalised sequence NLL, LoRA's alpha/r scale and SNIP's |X ⊙ g| scores."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from safepatching.chat import Encoded, collate, sequence_nll
from safepatching.config import LoraCfg
from safepatching.patching.importance import snip_scores
from safepatching.patching.lora import merge, wrap

PROBS = [0.5, 0.25, 0.25]  # the toy model's next-token distribution at every position


class FixedLM(torch.nn.Module):
    """Logits = a learnable bias, the same at every position: p(token) = softmax(bias)."""

    def __init__(self, bias: list[float]):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float32))

    def forward(self, input_ids, attention_mask):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.bias.expand(b, t, -1))


def test_sequence_nll_is_the_mean_over_response_tokens_only():
    model = FixedLM([math.log(p) for p in PROBS])
    # sequence 1: prompt [0], response [1, 2] (then padding); sequence 2: prompt [0, 0], response [0, 0, 0, 1]
    batch = collate([Encoded([0, 1, 2], 1), Encoded([0, 0, 0, 0, 0, 1], 2)], pad_id=2)
    nll = sequence_nll(model, batch)
    # 1: -(ln .25 + ln .25) / 2 = ln 4;  2: -(3 ln .5 + ln .25) / 4 = 5 ln 2 / 4
    expected = torch.tensor([math.log(4), 5 * math.log(2) / 4])
    assert torch.allclose(nll, expected, atol=1e-6), nll


def test_lora_merge_adds_alpha_over_r_times_b_a():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16))
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = wrap(model, LoraCfg(r=4, alpha=8, target_modules=("q_proj",)), seed=0)
    q = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    a = torch.arange(32, dtype=torch.float32).reshape(4, 8) / 32  # [r, in]
    b = torch.arange(32, dtype=torch.float32).reshape(8, 4) / 16 - 1  # [out, r]
    with torch.no_grad():
        q.lora_A["default"].weight.copy_(a)
        q.lora_B["default"].weight.copy_(b)
    merged = merge(peft_model)
    delta = merged.model.layers[0].self_attn.q_proj.weight.detach() - before
    assert torch.allclose(delta, 2.0 * (b @ a), atol=1e-5)  # alpha / r = 8 / 4 = 2


class CharTok:
    """A tokenizer of the letters a, b, c (ids 0-2; spaces dropped), eos = pad = 3; the chat template is the prompt."""

    chat_template = "{{ prompt }}"
    eos_token_id = pad_token_id = 3

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return messages[0]["content"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": ["abc".index(ch) for ch in text if ch != " "]}


BIAS = [0.5, -2.0, 1.5, 3.0]
# the two pairs' response tokens (with eos): [a, eos] and [a, b, b, eos]; their token shares
SHARE_1 = [0.5, 0.0, 0.0, 0.5]
SHARE_2 = [0.25, 0.5, 0.0, 0.25]
PAIRS = [("c", "a"), ("c", "abb")]


def _softmax(x: list[float]) -> list[float]:
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


def _grad(shares: list[list[float]]) -> list[float]:
    """d/d(bias) of the batch mean of each sequence's mean token NLL: softmax(bias) - the mean token share."""
    sm = _softmax(BIAS)
    return [sm[i] - sum(s[i] for s in shares) / len(shares) for i in range(len(BIAS))]


@pytest.mark.parametrize("objective", ["gd", "ga"])
def test_snip_scores_are_weight_times_gradient(objective):
    g = _grad([SHARE_1, SHARE_2])
    scores = snip_scores(FixedLM(BIAS), CharTok(), PAIRS, objective, ["bias"], batch_size=2)
    expected = torch.tensor([abs(w * gi) for w, gi in zip(BIAS, g)])
    assert torch.allclose(scores["bias"], expected, atol=1e-6), (scores["bias"], expected)


def test_snip_scores_sum_each_batch_and_use_the_delta_when_given():
    g1, g2 = _grad([SHARE_1]), _grad([SHARE_2])
    delta = [0.1, -0.3, 2.0, -4.0]
    scores = snip_scores(FixedLM(BIAS), CharTok(), PAIRS, "gd", ["bias"], batch_size=1)
    assert torch.allclose(scores["bias"], torch.tensor([abs(w * a) + abs(w * b) for w, a, b in zip(BIAS, g1, g2)]),
                          atol=1e-6)
    scores = snip_scores(FixedLM(BIAS), CharTok(), PAIRS, "gd", ["bias"], batch_size=1,
                         deltas={"bias": torch.tensor(delta)})
    assert torch.allclose(scores["bias"], torch.tensor([abs(d * a) + abs(d * b) for d, a, b in zip(delta, g1, g2)]),
                          atol=1e-6)
