"""Utility benchmarks through lm-evaluation-harness (`lm_eval`) on an already-loaded model.

`run_utility(model, tok, eval.utility)` wraps the in-memory model in lm-eval's `HFLM` and calls
`lm_eval.simple_evaluate` on the configured tasks (standard ones such as mmlu, gsm8k, arc_challenge, hellaswag,
winogrande, or custom task YAMLs under `include_path`). It returns every numeric metric lm-eval reports per requested
task or group, in lm-eval's own units, plus one `utility_<task>` percent per task: 100 x the first of
`headline_metrics` the task reports.

Offline: standard tasks read their datasets through the HF hub cache (fetch them once with network); a custom task
over a local file (`dataset_path: json`, `dataset_kwargs: {data_files: ...}`) needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import UtilityCfg
from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class UtilityResult:
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> {"metric,filter": value, n_docs}
    headline: dict[str, float] = field(default_factory=dict)               # "utility_<task>" -> percent


def task_manager(tasks: tuple[str, ...], include_path: str | Path | None = None):
    """lm-eval's TaskManager for `tasks`; raises ConfigError naming unknown tasks before any model call. When every
    task is a custom one under `include_path`, lm-eval's own task index (thousands of YAMLs, ~10 s) is skipped."""
    from lm_eval.tasks import TaskManager

    path = None
    if include_path is not None:
        path = Path(include_path)
        if not path.is_dir():
            raise ConfigError(f"eval.utility.include_path: {path} is not a folder of task YAMLs")
        local = TaskManager(include_path=str(path), include_defaults=False)
        if set(tasks) <= set(local.all_tasks):
            return local
    tm = TaskManager(include_path=str(path) if path else None)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ConfigError(f"eval.utility.tasks: unknown lm-eval task(s) {unknown}"
                          + (f" (not in lm-eval's tasks or under {path})" if path else
                             " (custom tasks need eval.utility.include_path)"))
    return tm


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _docs(name: str, out: dict) -> int:
    """Docs evaluated for a task, or summed over a group's tasks."""
    n = out.get("n-samples", {})
    if name in n:
        return int(n[name]["effective"])
    return sum(_docs(sub, out) for sub in out.get("group_subtasks", {}).get(name, []))


def summarise(out: dict, tasks: tuple[str, ...], headline_metrics: tuple[str, ...]) -> UtilityResult:
    """simple_evaluate's output -> {task: {metric: value, n_docs}} and {utility_<task>: percent}."""
    benchmarks: dict[str, dict[str, float]] = {}
    headline: dict[str, float] = {}
    for t in tasks:
        if t not in out["results"]:
            raise DataError(f"lm-eval returned no results for task {t!r} (got {sorted(out['results'])})")
        m = {k: float(v) for k, v in out["results"][t].items() if "," in k and _number(v)}
        m["n_docs"] = _docs(t, out)
        benchmarks[t] = m
        key = next((k for k in headline_metrics if k in m), None)
        if key is None:
            raise DataError(f"lm-eval task {t!r} reports {sorted(k for k in m if k != 'n_docs')}: none of "
                            f"eval.utility.headline_metrics {list(headline_metrics)}; add the one to report")
        headline[f"utility_{t}"] = round(100.0 * m[key], 2)
    return UtilityResult(benchmarks, headline)


def utility_headline(head: dict, res: UtilityResult) -> dict:
    """`head` (a metrics headline) with each task's `utility_<task>` percent and, when the suite has no exact-match
    utility set (no `utility` yet), `utility` = their mean: the number the gate and selection's utility guard read.
    One rule for metrics_<split>.json (the evaluate step) and the validation sweep's points."""
    out = {**head, **res.headline}
    if "utility" not in head and res.headline:
        out["utility"] = round(sum(res.headline.values()) / len(res.headline), 2)
    return out


def run_utility(model, tok, cfg: UtilityCfg, log=print) -> UtilityResult:
    """lm-eval's tasks `cfg.tasks` on an in-memory HF causal LM (on whatever device it already is)."""
    if not cfg.tasks:
        return UtilityResult()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    tm = task_manager(cfg.tasks, cfg.include_path)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                  task_manager=tm, bootstrap_iters=cfg.bootstrap_iters, log_samples=False,
                                  apply_chat_template=cfg.apply_chat_template)
    res = summarise(out, cfg.tasks, cfg.headline_metrics)
    log("lm-eval utility: " + ", ".join(f"{k} {v:.1f}%" for k, v in res.headline.items()))
    return res
