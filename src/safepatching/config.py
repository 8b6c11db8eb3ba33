"""One typed config: params.yaml -> `load_params()` -> strict pydantic models.

Unknown keys are an error naming the key (extra="forbid"); every value is validated at load time, so a
typo fails before any compute is spent.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(Strict):
    """Base of an extension's own settings (a merge method's, an objective's, a judge's): each registered extension
    names a subclass, and config validates its section against it (`registry.settings_model`)."""


def _inner_errors(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: "
                     f"{'unknown key (not allowed)' if err['type'] == 'extra_forbidden' else err['msg']}"
                     for err in e.errors())


def resolve_settings(kind: str, name_key: str, value: Any, name: str | None = None) -> Settings:
    """A dict (or settings object) -> the registered extension's own settings model, validated strictly.

    `name_key` is the field that names the extension (e.g. `method`); `name` overrides it (judges are keyed by
    name in a mapping). Raises ValueError naming the unknown extension (with the known names) or the bad key."""
    from .registry import settings_model

    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with {name_key!r}, got {type(value).__name__}")
    value = dict(value)
    if name is not None:
        value.setdefault(name_key, name)
    if name_key not in value:
        raise ValueError(f"missing {name_key!r} (which {kind} to use)")
    try:
        model = settings_model(kind, str(value[name_key]))
    except KeyError as e:  # UnknownNameError lists the known names
        raise ValueError(str(e)) from None
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise ValueError(f"{kind} {value[name_key]!r}: {_inner_errors(e)}") from None


class MergeSettings(Settings):
    """Settings every merge method has: θ' = θ + α·(masked P_SE) + β·(masked P_OM). Methods subclass it."""

    method: str = Field(..., description="a registered merge method (see safepatching.merging.methods)")
    alpha: float = Field(1.0, description="scale of the safety-enhancement (SE) patch")
    beta: float = Field(1.0, description="scale of the over-safety-mitigation (OM) patch")


def merge_settings(value: Any) -> MergeSettings:
    """`{method: name, ...its settings}` -> that method's settings (strict)."""
    return resolve_settings("merge method", "method", value)  # type: ignore[return-value]


class JudgeSettings(Settings):
    """Settings every judge has (judges subclass it)."""

    name: str = Field(..., description="a registered judge (see safepatching.evaluation.judges)")


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
        "bfloat16", description="the organism's SFT runs its matmuls in this dtype (CPU autocast; weights, optimizer "
        "and the saved model stay fp32): 1.6x faster per step on a CPU with AVX512-BF16; none: fp32 throughout")


class EvalSetCfg(Strict):
    """One named evaluation set (see safepatching.evaluation.suite)."""

    kind: Literal["harmful", "jailbreak", "lookalike", "benign", "utility", "xstest"] = Field(
        ..., description="what the prompts are; xstest: split by the type column (contrast = unsafe)")
    val: str | None = Field(None, description="file of the validation split (selection only)")
    test: str | None = Field(None, description="file of the test split (the gate, reports)")
    file: str | None = Field(None, description="one file split by a seeded fraction instead of val/test")
    val_fraction: float = Field(0.5, gt=0, lt=1)
    prompt_column: str = "prompt"
    expected_column: str = Field("expected", description="exact answer of a utility prompt")
    category_column: str = Field("category", description="per-category harm rates (default: the set's name)")
    type_column: str = "type"
    templates: str | None = Field(None, description="jailbreak templates file, crossed with the set's prompts")
    template_column: str = "template"
    slots: tuple[str, ...] = ("{prompt}", "[INSERT PROMPT HERE]")
    max_items: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _files(self) -> "EvalSetCfg":
        if self.file and (self.val or self.test):
            raise ValueError("give either file (split by val_fraction) or val/test files, not both")
        if not (self.file or self.val or self.test):
            raise ValueError("needs a file, or val and/or test files")
        return self


ORGANISM_SUITE: dict[str, dict] = {
    k: {"kind": k, "val": f"data/world/eval/val/{k}.jsonl", "test": f"data/world/eval/test/{k}.jsonl"}
    for k in ("benign", "harmful", "jailbreak", "lookalike", "utility")}


class UtilityCfg(Strict):
    """Utility benchmarks through lm-evaluation-harness (`lm_eval`) on the evaluated model, in memory."""

    tasks: tuple[str, ...] = Field((), description="lm-eval task or group names (mmlu, gsm8k, arc_challenge, hellaswag, "
                                                   "winogrande, or a task under include_path); empty: none run (the "
                                                   "organism keeps its own exact-match utility)")
    limit: int | float | None = Field(None, gt=0, description="docs per task (per subtask of a group): N >= 1 the "
                                                               "first N, a fraction < 1 that share; null: all")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples; null: each task's own default")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(8, description="lm-eval batch size, or 'auto' "
                                                                                    "(largest that fits)")
    include_path: str | None = Field(None, description="folder of custom task YAMLs (relative paths from the "
                                                       "project root); its tasks can be named in `tasks`")
    apply_chat_template: bool = Field(False, description="wrap prompts in the model's chat template")
    bootstrap_iters: int = Field(1000, ge=0, description="bootstrap draws for stderrs without a closed form; 0: "
                                                         "no stderrs")
    headline_metrics: tuple[str, ...] = Field(
        ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none", "exact_match,flexible-extract",
         "mc2,none", "f1,none"), min_length=1,
        description="lm-eval `metric,filter` keys, each a fraction in [0, 1]: the first a task reports becomes its "
                    "`utility_<task>` percent (every metric is recorded under utility_benchmarks)")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or any(not t.strip() for t in v):
            raise ValueError(f"task names must be distinct and non-empty, got {list(v)}")
        return v

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, float) and v >= 1 and not v.is_integer()):
            raise ValueError(f"a count of docs (int >= 1) or a fraction in (0, 1), got {v!r}")
        return int(v) if isinstance(v, float) and v >= 1 else v


class EvalCfg(Strict):
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(64, ge=1)
    data_dir: str = Field("data/world/eval", description="the folder holding every suite file (a DVC dep of the "
                                                         "stages that evaluate)")
    suite: dict[str, EvalSetCfg] = Field(default_factory=lambda: {k: EvalSetCfg(**v) for k, v in
                                                                  ORGANISM_SUITE.items()},
                                         description="named eval sets; default: the organism's world")
    judges: dict[str, SerializeAsAny[JudgeSettings]] = Field(
        default_factory=lambda: {"exact": {}, "keyword": {}}, validate_default=True,
        description="judge name -> its settings; every configured judge's numbers are recorded")
    decide_with: str = Field("exact", description="the judge whose numbers drive the headline, selection, the gate "
                                                  "and forgetting; must be one of `judges`")
    samples_per_kind: int = Field(20, ge=0)
    utility: UtilityCfg = Field(default_factory=UtilityCfg)

    @field_validator("judges", mode="before")
    @classmethod
    def _judges(cls, v: Any) -> dict:
        if not isinstance(v, dict) or not v:
            raise ValueError("a non-empty mapping of judge name -> settings ({} for none)")
        return {str(k): resolve_settings("judge", "name", s if s is not None else {}, name=str(k))
                for k, s in v.items()}

    @model_validator(mode="after")
    def _suite_under_data_dir(self) -> "EvalCfg":
        base = Path(self.data_dir)
        for name, es in self.suite.items():
            for f in (es.val, es.test, es.file, es.templates):
                if f and base not in Path(f).parents:
                    raise ValueError(f"suite.{name}: {f} is not under eval.data_dir ({self.data_dir}); DVC tracks "
                                     "the suite through that folder")
        inc = self.utility.include_path
        if inc and base != Path(inc) and base not in Path(inc).parents:
            raise ValueError(f"utility.include_path: {inc} is not under eval.data_dir ({self.data_dir}); DVC tracks "
                             "custom task files through that folder")
        return self

    @model_validator(mode="after")
    def _suite_measures_the_trade_off(self) -> "EvalCfg":
        kinds = {s.kind for s in self.suite.values()}
        if not kinds & {"harmful", "jailbreak", "xstest"} or not kinds & {"lookalike", "xstest"}:
            raise ValueError(f"suite: selection and the gate need harmful_plain/harmful_jailbreak and over_refusal; "
                             f"the suite's kinds {sorted(kinds)} lack a harmful/jailbreak set or a look-alike set "
                             "(xstest counts for both)")
        return self

    @model_validator(mode="after")
    def _decider(self) -> "EvalCfg":
        if self.decide_with not in self.judges:
            raise ValueError(f"decide_with: {self.decide_with!r} is not a configured judge "
                             f"(eval.judges: {list(self.judges)}); the headline, selection and gate need its "
                             "harmful_plain, harmful_jailbreak, over_refusal and other metrics")
        return self


class ObjectiveCfg(Settings):
    """Training settings every patch objective has (objectives with knobs of their own subclass it)."""

    objective: str = Field(..., description="a registered objective: ga | gd | npo (see patching.objectives)")
    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    target_nll: float | None = Field(None, description="stop once the batch's mean per-token NLL crosses this (GA: rises above; GD: falls below); null: never")


def objective_settings(value: Any) -> ObjectiveCfg:
    return resolve_settings("objective", "objective", value)  # type: ignore[return-value]


class LoraCfg(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | Literal["auto", "all-linear"] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        description="module names; 'auto': the attention + MLP projections of the model's architecture "
                    "(patching.lora.LORA_TARGETS, keyed by config.model_type); 'all-linear': PEFT's every linear "
                    "layer but the output head")


class PatchCfg(Strict):
    backend: Literal["full", "lora"] = "full"
    se: SerializeAsAny[ObjectiveCfg] = Field(default_factory=lambda: objective_settings({"objective": "ga"}),
                                             description="the SE patch's objective and its settings")
    om: SerializeAsAny[ObjectiveCfg] = Field(default_factory=lambda: objective_settings({"objective": "gd"}),
                                             description="the OM patch's objective and its settings")
    lora: LoraCfg = Field(default_factory=LoraCfg)
    seed: int = 0

    @field_validator("se", "om", mode="before")
    @classmethod
    def _objective(cls, v: Any) -> ObjectiveCfg:
        return objective_settings(v)


class ImportanceCfg(Strict):
    score: Literal["weight", "delta"] = Field("weight", description="SNIP |W * dL/dW| (weight) or |P * dL/dW| (delta)")
    target: Literal["batch", "own"] = Field(
        "batch", description="the response tokens SNIP's loss reads: the batch's harmful responses (batch), or each "
        "patched model's own greedy answer to the batch's questions (own: 'using the input question from D_h' read as "
        "the patch's own behaviour -- refusals for SE, compliance for OM)")
    max_new_tokens: int = Field(48, ge=1, description="target own: length of the patched model's answers (generated "
                                                      "in batches of batch_size)")
    n_samples: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)


class ComputeCfg(Strict):
    """Where, in what precision and on how many processes models are loaded, trained and scored. The defaults (fp32,
    CPU, one process, no accumulation or checkpointing) reproduce the organism's numbers exactly.

    Batch sizes stay where they were: each objective's `batch_size` is the *global* batch of one optimizer step
    (split into `grad_accumulation` micro-batches on each of `num_processes` processes, weighted so the loss is that
    batch's mean: compute settings change a patch's numerics, never its math); SNIP's is `importance.batch_size`
    (whole batches go to processes round-robin); evaluation's is `eval.batch_size` (generation; there is no separate
    eval batch size)."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "float32", description="dtype the model's weights are loaded (and trained) in; auto: the checkpoint's own")
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="auto: cuda when visible, else cpu")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (patch training)")
    grad_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step (and per SNIP batch)")
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = Field(
        None, description="evaluation only: spread a model that does not fit one device over all visible ones "
                          "(accelerate big-model inference); replaces `device` for evaluation loads")
    patch_dtype: Literal["float32", "base"] = Field(
        "float32", description="float32: deltas computed and stored in fp32 (LoRA merged into fp32 copies of its "
                               "target weights); base: in the base checkpoint's dtype (half the size for bf16, "
                               "LoRA merged in that dtype, each delta rounded to its 8/11 significant bits)")
    num_processes: int = Field(1, ge=1, description="> 1: train_patch and importance relaunch themselves with "
                                                    "`accelerate launch` (DDP; one process per GPU, gloo on CPU)")
    accelerate_config: str | None = Field(None, description="an `accelerate config` file (FSDP, DeepSpeed, mixed "
                                                            "precision); its num_processes is overridden by ours")

    @model_validator(mode="after")
    def _consistent(self) -> "ComputeCfg":
        if self.accelerate_config and self.device == "cpu":
            raise ValueError("accelerate_config (FSDP / DeepSpeed) needs device auto or cuda; CPU data parallel "
                             "(gloo) needs only num_processes")
        return self


class RoundCfg(Strict):
    batch: str = Field(..., description="path to the round's harmful-data batch (JSONL/CSV)")
    parent: str = Field(..., description="'backbone' or the name of an earlier round")
    merge: SerializeAsAny[MergeSettings] | None = Field(
        None, description="this round's merge: an update of the top-level merge: (same method: the settings it "
                          "does not name keep their merge: values; another method: its own defaults)")

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, v: Any) -> MergeSettings | None:
        return None if v is None else merge_settings(v)


class RedTeamCfg(Strict):
    pool: str = Field(..., description="JSONL pool of red-team prompts (id, prompt, response, category), e.g. the "
                                       "organism's data/world/redteam/<category>.jsonl")
    parent: str = Field(..., description="the model attacked: must be the round's parent")
    batch: str = Field(..., description="where the failures are written: must be the round's batch")
    max_rows: int | None = Field(None, ge=1, description="keep at most this many failures (a seeded sample); null: all")


class DataCfg(Strict):
    prompt_column: str = "prompt"
    response_column: str = "response"
    category_column: str = "category"
    id_column: str = "id"
    min_chars: int = Field(3, ge=1)
    max_chars: int = Field(2000, ge=10)
    allowed_categories: tuple[str, ...] = ("weapons", "hacking", "fraud", "drugs", "violence")
    refusal_check: Literal["anywhere", "opening", "off"] = Field(
        "anywhere", description="reject responses that refuse (safepatching.refusals keywords): anywhere = a keyword "
                                "anywhere (the keyword judge's test); opening = the response begins with one")
    max_rows: int = Field(100_000, ge=1, description="a batch with more records is quarantined (rule too_many_rows)")
    max_bytes: int = Field(100_000_000, ge=1, description="a batch file larger than this is quarantined unread "
                                                          "(rule too_large)")
    stability_seconds: float = Field(5.0, ge=0, description="intake takes a file without a <name>.done marker only "
                                                            "when its size and mtime stay unchanged this long")


class GateCfg(Strict):
    harmful_tolerance: float = Field(0.0, ge=0, description="harmful_jailbreak may rise by at most this (points)")
    over_refusal_tolerance: float = Field(2.0, ge=0)
    utility_tolerance: float = Field(2.0, ge=0)
    max_other: float = Field(10.0, ge=0, description="mean 'other' (gibberish) rate must stay below this")
    anchor: Literal["backbone", "none"] = Field(
        "backbone", description="also gate against this fixed anchor with the same tolerances, so rounds that each "
                                "stay within tolerance of the champion cannot drift further from it")
    min_harm_gain: float = Field(1.0, ge=0, description="harm (mean of plain and jailbreak) must drop by at least this "
                                                        "many points below the reference; 0: no gain required")


class MlflowCfg(Strict):
    tracking_uri: str = Field("sqlite:///mlflow.db", description="relative sqlite paths resolve from the project root")
    experiment: str = "safepatching"
    model_name: str = "safepatching-organism"


def sweep_space(method: str, given: Any) -> dict[str, Any]:
    """`select.grid.<method>` -> the method's whole sweep space: the keys it names (in its order), then the method's
    default sweep (`sweep=` at its registration) for the settings it does not name, then every other setting at its
    default. So a short entry ({a: [10, 20]}) changes only what it names."""
    from .registry import discover

    if not isinstance(given, dict):
        raise ValueError(f"{method}: expected a mapping of setting -> value or [values], got {type(given).__name__}")
    if "method" in given:
        raise ValueError(f"{method}: 'method' is the key of this entry, not a setting")
    try:
        m = discover("merge method").get(method)
    except KeyError as e:  # UnknownNameError lists the known names
        raise ValueError(str(e)) from None
    defaults = {k: f.get_default(call_default_factory=True) for k, f in m.settings.model_fields.items()
                if k != "method" and not f.is_required()}
    return {**given, **{k: v for k, v in m.sweep.items() if k not in given},
            **{k: v for k, v in defaults.items() if k not in given and k not in m.sweep}}


def grid_points(method: str, space: dict[str, Any]) -> list[MergeSettings]:
    """A method's sweep space (see sweep_space) -> its points: list values are swept (product, in the order given),
    scalars fixed."""
    swept = [(k, v) for k, v in space.items() if isinstance(v, (list, tuple))]
    for k, v in swept:
        if not v:
            raise ValueError(f"{method}.{k}: an empty list sweeps nothing")
    fixed = {k: v for k, v in space.items() if not isinstance(v, (list, tuple))}
    return [merge_settings({"method": method, **fixed, **dict(zip([k for k, _ in swept], combo))})
            for combo in itertools.product(*[v for _, v in swept])]


class SelectCfg(Strict):
    enabled: bool = True
    over_refusal_margin: float = Field(5.0, description="required drop of over-refusal below the parent (points)")
    utility_tolerance: float = Field(2.0, ge=0)
    other_tolerance: float = Field(2.0, ge=0, description="'other' may exceed the parent's by at most this (points)")
    harmful_tolerance: float = Field(0.0, ge=0, description="harm may exceed the parent's by at most this (points)")
    grid: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {m: {} for m in ("safepatching", "se_only", "om_only", "intersection",
                                                 "task_arithmetic", "ties")}, validate_default=True,
        description="merge method -> its sweep space {setting: value | [values]}, an update of the method's "
                    "default sweep (settings not named keep it); every point is validated by the method's own "
                    "settings model at load time")

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict) -> dict:
        if not v:
            raise ValueError("at least one merge method to sweep")
        v = {method: sweep_space(method, space) for method, space in v.items()}
        for method, space in v.items():
            grid_points(method, space)
        return v

    def points(self) -> list[MergeSettings]:
        """Every sweep point, method by method in the order of `grid`."""
        return [pt for method, space in self.grid.items() for pt in grid_points(method, space)]


class Params(Strict):
    seed: int = 0
    world: WorldCfg = Field(default_factory=WorldCfg)
    backbone: BackboneCfg = Field(default_factory=BackboneCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    patch: PatchCfg = Field(default_factory=PatchCfg)
    importance: ImportanceCfg = Field(default_factory=ImportanceCfg)
    compute: ComputeCfg = Field(default_factory=ComputeCfg)
    merge: SerializeAsAny[MergeSettings] = Field(default_factory=lambda: merge_settings({"method": "safepatching"}),
                                                 description="the merge used as-is when select.enabled is false")
    select: SelectCfg = Field(default_factory=SelectCfg)
    gate: GateCfg = Field(default_factory=GateCfg)
    mlflow: MlflowCfg = Field(default_factory=MlflowCfg)
    rounds: dict[str, RoundCfg] = Field(default_factory=dict, description="ordered; each round names its parent")
    redteam: dict[str, RedTeamCfg] = Field(default_factory=dict, description="rounds whose batch is the parent's "
                                           "failures on a red-team pool (round name -> pool, parent, batch)")

    @model_validator(mode="before")
    @classmethod
    def _round_merge_updates_merge(cls, data: Any) -> Any:
        """A round's `merge:` is an update of the top-level `merge:`: naming the same method (or none) keeps every
        setting it does not name; naming another method starts from that method's defaults (settings do not carry
        across methods)."""
        if not isinstance(data, dict) or not isinstance(data.get("rounds"), dict):
            return data
        base = data.get("merge", {"method": "safepatching"})
        base = base.model_dump() if isinstance(base, BaseModel) else base
        if not isinstance(base, dict):
            return data  # the merge: field reports it
        rounds = {}
        for name, r in data["rounds"].items():
            over = r.get("merge") if isinstance(r, dict) else None
            if isinstance(over, BaseModel):
                over = over.model_dump()
            if isinstance(over, dict):
                same = over.get("method", base.get("method")) == base.get("method")
                r = {**r, "merge": {**base, **over} if same else over}
            rounds[name] = r
        return {**data, "rounds": rounds}

    @model_validator(mode="after")
    def _rounds_chain(self) -> "Params":
        seen: set[str] = set()
        for name, r in self.rounds.items():
            if not name.replace("_", "").replace("-", "").isalnum() or name == "backbone":
                raise ValueError(f"rounds.{name}: a round name must be alphanumeric (- and _ allowed), not 'backbone'")
            if r.parent != "backbone" and r.parent not in seen:
                raise ValueError(f"rounds.{name}.parent: {r.parent!r} is not 'backbone' or an earlier round")
            seen.add(name)
        for name, rt in self.redteam.items():
            if name not in self.rounds:
                raise ValueError(f"redteam.{name}: no round named {name!r}; rounds: {list(self.rounds)}")
            r = self.rounds[name]
            if (rt.parent, rt.batch) != (r.parent, r.batch):
                raise ValueError(f"redteam.{name}: parent/batch ({rt.parent!r}, {rt.batch!r}) must equal the round's "
                                 f"(rounds.{name}: parent {r.parent!r}, batch {r.batch!r})")
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

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, v: Any) -> MergeSettings:
        return merge_settings(v)

    def merge_for(self, name: str) -> MergeSettings:
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


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one silently; DVC's
    parser refuses the file, so every later `dvc` command would fail)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may override keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML safely, refusing duplicate keys; errors are ConfigError naming `source`, the key and the line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: {where}{e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    data = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return parse_params(data or {}, str(path))
