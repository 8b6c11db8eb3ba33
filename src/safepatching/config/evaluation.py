"""`eval:`: the named evaluation sets, the judges, lm-eval utility benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from .settings import JudgeSettings, Strict, resolve_settings


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
    context_column: str | None = Field(None, description="a column of context posed before the prompt when non-empty, "
                                                         "as HarmBench poses its contextual behaviours: context + "
                                                         "'\\n\\n---\\n\\n' + prompt (HarmBench: ContextString)")
    exclude: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="rows to leave out: column -> "
                                                "values (HarmBench: {FunctionalCategory: [copyright]}, whose rows "
                                                "need HarmBench's hash-based copyright judge)")
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
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="a prompt (through the chat template) longer than this many tokens is skipped, not "
                                "generated, and counted (skipped_too_long/<kind>); null: the model's context (its "
                                "config's max_position_embeddings, else the tokenizer's model_max_length) minus "
                                "max_new_tokens")
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
