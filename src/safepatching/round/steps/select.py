"""Round step: the validation sweep that chooses the round's merge."""

from __future__ import annotations

import json

from ... import crash
from ...config import Params
from ...layout import RoundLayout


def select(params: Params, layout: RoundLayout, log=print) -> dict:
    """Sweep merge variants on the validation split (reusing the patches and scores) and choose the round's point
    (see safepatching.round.selection); writes selected.json, sweep.json, diagnosis.json and pareto.png. The points
    are evaluated here (select.executor.kind local) or one task each on a Dask cluster (dask: round.sweep_dask);
    both give the same numbers in the same order. With lm-eval tasks (eval.utility.tasks) the parent and every point
    also get lm-eval's utility on select.utility_limit docs per task, so select.utility_tolerance guards it."""
    from ...config import merge_settings
    from ..diagnosis import diagnose, format_diagnosis, importance_by_layer, plot_importance_layers
    from ...evaluation.suite import load_suite
    from ...merging.method import label
    from ..selection import SCALAR_KEYS, choose, load_round_inputs, plot_pareto, run_sweep, sweep_utility

    sel, base_merge = params.select, params.merge_for(layout.name)
    grid = sel.points() if sel.enabled else [base_merge]
    inputs = load_round_inputs(layout)
    if sel.executor.kind == "dask":
        from ..sweep_dask import SweepJob, run_sweep_dask

        parent, results = run_sweep_dask(SweepJob.of(params, layout), grid, sel.executor, log)
    else:
        split = load_suite(params.eval.suite, "val", layout.root)
        parent, results = run_sweep(layout.parent_model, inputs, split, grid, params.eval, log, params.compute,
                                    sweep_utility(params, layout.root))
    chosen = choose(results, parent, sel) if sel.enabled else dict(results[0], feasible=True, rule="fixed")
    layout.select_dir.mkdir(parents=True, exist_ok=True)
    diag_cfg = merge_settings(chosen["merge"]) if chosen.get("merge") else base_merge
    diag = diagnose(*inputs, diag_cfg)
    layout.diagnosis.write_text(json.dumps(diag, indent=1))
    log("  diagnosis of the two patches (masks of " + label(diag_cfg) + "):\n" + format_diagnosis(diag))
    layers = importance_by_layer(inputs[2], inputs[3])
    layout.importance_layers.write_text(json.dumps(layers, indent=1))
    plot_importance_layers(layers, layout.importance_layers.with_suffix(".png"))
    layout.sweep.write_text(json.dumps({"parent": parent, "results": results}, indent=1))
    layout.selected.write_text(json.dumps(chosen, indent=2))
    crash.point("select.outputs")
    plot_pareto(results, parent, chosen, layout.pareto, f"round {layout.name} (validation)")
    log(f"  chosen: {chosen.get('label')} feasible={chosen['feasible']} "
        f"{json.dumps({k: chosen['metrics'].get(k) for k in SCALAR_KEYS})}")
    return chosen
