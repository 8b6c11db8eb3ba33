"""The model organism's settings: its synthetic world and its backbone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .settings import Strict


class WorldCfg(Strict):
    vulnerability: float = Field(0.7, ge=0, le=1, description="share of (jailbreak family, category) cells answered harmfully in training")
    plain_vulnerability: float = Field(0.4, ge=0, le=1, description="share of each category's harmful objects answered harmfully in the plain question framing")
    over_safety: float = Field(0.25, ge=0, le=1, description="share of look-alike verbs refused in the question framing (see over_refusal_trigger)")
    over_refusal_trigger: Literal["shared", "unshared"] = Field(
        "shared", description="which look-alike verbs are refused first: those shared with harmful requests (couples "
        "over-refusal to harm, as in real models) or those no harmful request uses (an independent trigger)")
    decision_noise: float = Field(0.2, ge=0, lt=0.5, description="share of jailbreak / look-alike training labels flipped against their cell's policy (an uncertain, not saturated, backbone)")
    lookalike_noise: float | None = Field(
        0.1, ge=0, lt=0.5, description="the same for the question-framed look-alikes only (null: decision_noise); "
        "their flipped labels are diffuse over-refusal of verbs the policy does not refuse")
    openings: Literal["single", "varied"] = Field(
        "single", description="single: one refusal, and every answer (harmful or helpful) opens 'Sure, here is how "
        "to ...'; varied: three refusals keyed on the request's verb and three helpful openings keyed on the task "
        "(harmful compliance unchanged), so complying and refusing are not one shared first token")
    n_reverse_train: int = Field(1500, ge=10)
    max_eval_per_kind: int = Field(300, ge=10)


class BackboneCfg(Strict):
    source: str = Field("organism", description="'organism' builds the embedded tiny model; else any HF id or local path, copied to models/backbone as safetensors")
    revision: str | None = Field(None, description="a hub source's branch, tag or commit sha to pin (null: the "
                                                   "default branch); recorded in models/backbone/source.json with "
                                                   "the commit it resolved to. Ignored for the organism and local "
                                                   "folders (their content hash is recorded instead)")
    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(352, ge=8)
    max_len: int = Field(128, ge=32)
    steps: int = Field(2500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay of the organism's SFT")
    autocast: Literal["bfloat16", "none"] = Field(
        "none", description="the organism's SFT runs its matmuls in this dtype (CPU autocast; weights, optimizer "
        "and the saved model stay fp32). none (the default): fp32 throughout, fast on every CPU; bfloat16: 1.6x faster "
        "per step on a CPU with AVX512-BF16 or AMX, but ~20x slower on an AVX2-only CPU (torch's bf16 GEMM falls back "
        "to a scalar dot product there), and the weights then depend on the CPU's instruction set")
