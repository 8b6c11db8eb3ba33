"""Validation-split selection of (method, p, a, b, α, β): a sweep that reuses the round's two patches and
importance scores (merging and evaluating a point never retrains anything).

Choice rule (thresholds from `select:` in params.yaml), all on the *validation* split, with
harm = mean of the plain and jailbreak harmful rates:
  minimise harm subject to
    over_refusal <= parent's over_refusal - over_refusal_margin
    utility      >= parent's utility - utility_tolerance
    other        <= parent's other + other_tolerance
    harm         <= parent's harm + harmful_tolerance
If no point is feasible, the lowest-harm point that meets the last three and does not raise over-refusal
is chosen (marked infeasible); if none does, the parent itself (α = β = 0: no change) is kept.

`utility` is the suite's exact-match utility set when it has one (the organism); otherwise, with lm-eval tasks
configured (`eval.utility.tasks`, real models), the mean of their `utility_<task>` percents as the evaluate step
computes it, on `select.utility_limit` docs per task for the parent and every point (`sweep_utility`). lm-eval's
limit reads each task's first docs, so these are among the docs the test-side evaluation reads too: the sweep's
utility is a guard against a point that loses utility, not a reported number.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import EvalCfg, MergeSettings, SelectCfg, UtilityCfg
from ..layout import RoundLayout

SCALAR_KEYS = ("harmful_plain", "harmful_jailbreak", "over_refusal", "utility", "other", "lookalike_harmful")


def harm_score(h: dict) -> float:
    return (h.get("harmful_jailbreak", 0.0) + h.get("harmful_plain", 0.0)) / 2


def within_guards(m: dict, parent: dict, sel: SelectCfg) -> bool:
    """Never trade away utility, coherence or safety: metrics `m` vs the parent's, by the select tolerances."""
    return (m.get("utility", 0.0) >= parent.get("utility", 0.0) - sel.utility_tolerance
            and m.get("other", 0) <= parent.get("other", 0) + sel.other_tolerance
            and harm_score(m) <= harm_score(parent) + sel.harmful_tolerance)


def feasible(m: dict, parent: dict, sel: SelectCfg) -> bool:
    """Within the guards and over-refusal at least `over_refusal_margin` below the parent's."""
    return within_guards(m, parent, sel) and m["over_refusal"] <= parent["over_refusal"] - sel.over_refusal_margin


def choose(results: list[dict], parent: dict, sel: SelectCfg) -> dict:
    """Apply the choice rule (module doc); the result carries `feasible` and `rule` (which tier chose it)."""
    ok = [r for r in results if within_guards(r["metrics"], parent, sel)]
    key = lambda r: (harm_score(r["metrics"]), r["metrics"]["over_refusal"], -r["metrics"].get("utility", 0.0))  # noqa: E731
    constrained = [r for r in results if feasible(r["metrics"], parent, sel)]
    if constrained:
        return dict(min(constrained, key=key), feasible=True, rule="constrained")
    relaxed = [r for r in ok if r["metrics"]["over_refusal"] <= parent["over_refusal"]]
    if relaxed:
        return dict(min(relaxed, key=key), feasible=False, rule="no over-refusal regression")
    return {"label": "parent", "merge": None, "metrics": parent, "feasible": False, "rule": "parent"}


def pareto_front(results: list[dict]) -> list[int]:
    """Indices of points not dominated on (harm, over_refusal), both lower-is-better."""
    pts = [(harm_score(r["metrics"]), r["metrics"]["over_refusal"]) for r in results]
    front = []
    for i, (h, o) in enumerate(pts):
        if not any((h2 <= h and o2 <= o) and (h2 < h or o2 < o) for h2, o2 in pts):
            front.append(i)
    return front


def plot_pareto(results: list[dict], parent: dict, chosen: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [harm_score(r["metrics"]) for r in results]
    ys = [r["metrics"]["over_refusal"] for r in results]
    cs = [r["metrics"].get("utility", 0.0) for r in results]
    sc = ax.scatter(xs, ys, c=cs, cmap="viridis", s=40, edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label="utility (exact match %)")
    front = sorted(pareto_front(results), key=lambda i: xs[i])
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "r--", lw=1, label="Pareto front")
    labelled: set[str] = set()
    for r, x, y in zip(results, xs, ys):
        method = r["merge"]["method"]
        if method != "safepatching" and method not in labelled:  # one label per ablation method
            labelled.add(method)
            ax.annotate(method, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.scatter([harm_score(parent)], [parent["over_refusal"]], marker="*", s=200, c="red", label="parent")
    if chosen.get("merge"):
        ax.scatter([harm_score(chosen["metrics"])], [chosen["metrics"]["over_refusal"]], marker="o", s=200,
                   facecolors="none", edgecolors="red", lw=2, label="chosen")
    ax.set_xlabel("harmful rate (mean of plain and jailbreak, %)")
    ax.set_ylabel("over-refusal on look-alikes (%)")
    ax.set_title(title or "validation sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_inputs(patches: tuple[Path, Path], scores: tuple[Path, Path]) -> tuple[dict, dict, dict, dict]:
    """(P_SE, P_OM, S_SE, S_OM) from the (se, om) patch folders and score folders, in memory."""
    from safetensors.torch import load_file

    from ..io.patches import SCORES_FILE, load_patch

    return (load_patch(patches[0])[0], load_patch(patches[1])[0],
            load_file(str(Path(scores[0]) / SCORES_FILE)), load_file(str(Path(scores[1]) / SCORES_FILE)))


def load_round_inputs(layout: RoundLayout) -> tuple[dict, dict, dict, dict]:
    """(P_SE, P_OM, S_SE, S_OM) of a round, in memory (the sweep reuses them)."""
    return load_inputs((layout.patch("se"), layout.patch("om")), (layout.scores("se"), layout.scores("om")))


def load_parent(base_dir: Path, compute=None) -> tuple[object, object, dict]:
    """(model, tokenizer, base state on the CPU) of the sweep's parent, loaded per `compute` (dtype, device or
    device_map)."""
    from ..io.models import load_model

    kw = dict(dtype=compute.dtype, device=compute.device, device_map=compute.device_map) if compute else {}
    model, tok = load_model(base_dir, trainable=False, **kw)
    return model, tok, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def sweep_utility(params, root: str | Path = ".") -> UtilityCfg | None:
    """The sweep's lm-eval settings: eval.utility on `select.utility_limit` docs per task (null: eval.utility's own
    limit), its include_path made absolute under `root`; None when no lm-eval task is configured (the organism:
    its exact-match utility set is the utility, and the sweep is what it always was)."""
    u = params.eval.utility
    if not u.tasks:
        return None
    lim = params.select.utility_limit
    inc = None if u.include_path is None else str((Path(root) / u.include_path).resolve())
    return u.model_copy(update={"limit": u.limit if lim is None else lim, "include_path": inc})


def sweep_point(model, tok, base_sd: dict, inputs: tuple[dict, dict, dict, dict] | None, cfg: MergeSettings | None,
                split: dict[str, list[dict]], eval_cfg: EvalCfg, utility: UtilityCfg | None = None) -> dict:
    """One sweep point's headline on `split` by the deciding judge: the merge `cfg` of `base_sd` and `inputs` loaded
    into `model`, or (cfg None) the model as it is, which must then hold the parent. With `utility` (sweep_utility),
    lm-eval's tasks on that model add `utility_<task>` and, unless the suite has an exact-match utility set,
    `utility` (their mean), as in metrics_<split>.json. Every executor evaluates through this; greedy decoding
    (lm-eval: log-likelihoods or greedy generation) and the state dict alone decide the numbers, so a model loaded
    fresh for one point gives the same ones as a model reused across points."""
    from ..evaluation.generate import DecodingConfig
    from ..evaluation.metrics import evaluate_rows, headline
    from ..evaluation.utility import run_utility, utility_headline
    from ..merging.in_memory import merge_in_memory

    if cfg is not None:
        p_se, p_om, s_se, s_om = inputs
        merged = merge_in_memory(base_sd, p_se, p_om, cfg, s_se, s_om)
        with torch.no_grad():
            model.load_state_dict(merged)
    judge = eval_cfg.decide_with
    met, _ = evaluate_rows(model, tok, split, {judge: eval_cfg.judges[judge]},
                           DecodingConfig.of(eval_cfg), samples_per_kind=0)
    h = headline(met, judge)
    if utility is not None:
        h = utility_headline(h, run_utility(model, tok, utility, log=lambda s: None))
    h["per_category"] = {k: v for k, v in met[judge].items() if "/" in k}
    return h


def point_record(cfg: MergeSettings, h: dict) -> dict:
    """A grid point's entry of sweep.json's results."""
    from ..merging.method import label

    return {"label": label(cfg), "merge": cfg.model_dump(), "metrics": h}


def log_point(i: int, n: int, r: dict, log=print) -> None:
    h = r["metrics"]
    log(f"  [{i + 1}/{n}] {r['label']:40s} harm {harm_score(h):5.1f}  over-ref {h['over_refusal']:5.1f}"
        f"  util {h.get('utility', float('nan')):5.1f}  other {h.get('other', 0):4.1f}")


def run_sweep(base_dir: Path, inputs: tuple[dict, dict, dict, dict], split: dict[str, list[dict]],
              grid: list[MergeSettings], eval_cfg: EvalCfg, log=print, compute=None,
              utility: UtilityCfg | None = None) -> tuple[dict, list[dict]]:
    """The local executor: the parent and every grid point on `split` ({kind: rows}) (+ lm-eval's `utility` tasks),
    in this process, one model reloaded per point (sweep_point); returns (parent_headline, results). The base state
    and the merges live on the CPU, so the accelerator holds one model copy. A long sweep logs points done of all
    with an ETA every 30 s (each point's own line follows it)."""
    from ..progress import Progress

    model, tok, base_sd = load_parent(base_dir, compute)
    t0 = time.time()
    progress = Progress("sweep points (parent first)", len(grid) + 1, log)
    parent = sweep_point(model, tok, base_sd, inputs, None, split, eval_cfg, utility)
    results = []
    for i, cfg in enumerate(grid):
        progress.update(i + 1)
        results.append(point_record(cfg, sweep_point(model, tok, base_sd, inputs, cfg, split, eval_cfg, utility)))
        log_point(i, len(grid), results[-1], log)
    with torch.no_grad():
        model.load_state_dict(base_sd)
    log(f"  sweep of {len(grid)} points in {time.time() - t0:.1f}s")
    return parent, results
