"""One typed config: params.yaml -> `load_params()` -> strict pydantic models.

Unknown keys are an error naming the key (extra="forbid"); every value is validated at load time, so a
typo fails before any compute is spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldCfg(Strict):
    vulnerability: float = Field(0.6, ge=0, le=1, description="share of (jailbreak family, category) cells answered harmfully in training")
    over_safety: float = Field(0.5, ge=0, le=1, description="share of look-alike objects refused in the question framing")
    decision_noise: float = Field(0.0, ge=0, lt=0.5, description="share of jailbreak / look-alike training labels flipped against their cell's policy (an uncertain, not saturated, backbone)")
    n_reverse_train: int = Field(1500, ge=10)
    max_eval_per_kind: int = Field(300, ge=10)


class BackboneCfg(Strict):
    source: str = Field("organism", description="'organism' builds the embedded tiny model; else any HF id or local path, copied to models/backbone as safetensors")
    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(352, ge=8)
    max_len: int = Field(128, ge=32)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)


class EvalCfg(Strict):
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(64, ge=1)
    judges: tuple[str, ...] = ("exact", "keyword")
    samples_per_kind: int = Field(20, ge=0)


class ObjectiveCfg(Strict):
    objective: str = Field(..., description="a registered objective: ga | gd | npo")
    lr: float = Field(1e-3, gt=0)
    max_steps: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    target_nll: float | None = Field(None, description="stop once the batch's mean per-token NLL crosses this (GA: rises above; GD: falls below)")
    npo_beta: float = Field(0.1, gt=0)


class LoraCfg(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PatchCfg(Strict):
    backend: Literal["full", "lora"] = "full"
    se: ObjectiveCfg = ObjectiveCfg(objective="ga", lr=1e-3, max_steps=30, target_nll=None)
    om: ObjectiveCfg = ObjectiveCfg(objective="gd", lr=1e-3, max_steps=30, target_nll=None)
    lora: LoraCfg = LoraCfg()
    seed: int = 0


class ImportanceCfg(Strict):
    score: Literal["weight", "delta"] = Field("weight", description="SNIP |W * dL/dW| (weight) or |P * dL/dW| (delta)")
    n_samples: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


class MergeCfg(Strict):
    method: str = "safepatching"
    alpha: float = 1.0
    beta: float = 1.0
    p: float = Field(1.0, gt=0, le=1, description="random retention probability (Bernoulli)")
    a: float = Field(10.0, ge=0, le=100, description="top-a% most important of the SE patch")
    b: float = Field(10.0, ge=0, le=100, description="top-b% most important of the OM patch")
    ranking: Literal["global", "per_tensor", "per_row"] = "per_tensor"
    compose: Literal["sequential", "union"] = Field("sequential", description="random mask then difference set (sequential), or either mask (union)")
    rescale: bool = Field(False, description="rescale kept random-retention entries by 1/p (DARE)")
    difference: bool = Field(True, description="apply difference sets; false = plain top-a/top-b masks")
    ties_density: float = Field(0.2, gt=0, le=1)
    seed: int = 0


class RoundCfg(Strict):
    batch: str = Field(..., description="path to the round's harmful-data batch (JSONL/CSV)")
    parent: str = Field(..., description="'backbone' or the name of an earlier round")
    merge: MergeCfg | None = Field(None, description="overrides merge: for this round only")


class DataCfg(Strict):
    prompt_column: str = "prompt"
    response_column: str = "response"
    category_column: str = "category"
    id_column: str = "id"
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(2000, ge=10)
    allowed_categories: tuple[str, ...] = ("weapons", "hacking", "fraud", "drugs", "violence")


class GateCfg(Strict):
    harmful_tolerance: float = Field(0.0, ge=0, description="harmful_jailbreak may rise by at most this (points)")
    over_refusal_tolerance: float = Field(2.0, ge=0)
    utility_tolerance: float = Field(2.0, ge=0)
    max_other: float = Field(10.0, ge=0, description="mean 'other' (gibberish) rate must stay below this")


class MlflowCfg(Strict):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="relative sqlite paths resolve from the project root")
    experiment: str = "safepatching"
    model_name: str = "safepatching-organism"


class SelectCfg(Strict):
    enabled: bool = True
    over_refusal_margin: float = Field(5.0, description="required drop of over-refusal below the parent (points)")
    utility_tolerance: float = Field(2.0, ge=0)
    other_tolerance: float = Field(2.0, ge=0, description="'other' may exceed the parent's by at most this (points)")
    harmful_tolerance: float = Field(0.0, ge=0, description="harm may exceed the parent's by at most this (points)")
    alphas: tuple[float, ...] = (0.5, 1.0)
    betas: tuple[float, ...] = (0.5, 1.0)
    a: tuple[float, ...] = (5.0, 20.0)
    b: tuple[float, ...] = (5.0, 20.0)
    p: tuple[float, ...] = (1.0,)
    methods: tuple[str, ...] = ("safepatching", "se_only", "om_only", "intersection", "task_arithmetic", "ties")


class Params(Strict):
    seed: int = 0
    world: WorldCfg = WorldCfg()
    backbone: BackboneCfg = BackboneCfg()
    eval: EvalCfg = EvalCfg()
    data: DataCfg = DataCfg()
    patch: PatchCfg = PatchCfg()
    importance: ImportanceCfg = ImportanceCfg()
    merge: MergeCfg = MergeCfg()
    select: SelectCfg = SelectCfg()
    gate: GateCfg = GateCfg()
    mlflow: MlflowCfg = MlflowCfg()
    rounds: dict[str, RoundCfg] = Field(default_factory=dict, description="ordered; each round names its parent")

    @model_validator(mode="after")
    def _rounds_chain(self) -> "Params":
        seen: set[str] = set()
        for name, r in self.rounds.items():
            if not name.replace("_", "").replace("-", "").isalnum() or name == "backbone":
                raise ValueError(f"rounds.{name}: a round name must be alphanumeric (- and _ allowed), not 'backbone'")
            if r.parent != "backbone" and r.parent not in seen:
                raise ValueError(f"rounds.{name}.parent: {r.parent!r} is not 'backbone' or an earlier round")
            seen.add(name)
        return self

    def round(self, name: str) -> RoundCfg:
        if name not in self.rounds:
            raise ConfigError(f"no round named {name!r} in params; rounds: {list(self.rounds)}")
        return self.rounds[name]

    def lineage(self, name: str) -> list[str]:
        """Rounds from the first to `name`, following parents."""
        chain = []
        while name != "backbone":
            chain.append(name)
            name = self.round(name).parent
        return chain[::-1]

    def merge_for(self, name: str) -> MergeCfg:
        return self.round(name).merge or self.merge


def _fmt(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = "unknown key (not allowed)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return f"{source}: invalid params\n" + "\n".join(lines)


def parse_params(data: dict, source: str = "<params>") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_fmt(e, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return parse_params(data or {}, str(path))
