"""For real models the validation sweep's utility is lm-eval's (eval.utility.tasks on select.utility_limit docs per
task), on the parent and every point, in both executors, so select.utility_tolerance keeps a point that loses
utility from being chosen; with no lm-eval task (the organism) the sweep is what it was."""

from __future__ import annotations

import dataclasses

import pytest

from safepatching.config import merge_settings
from safepatching.evaluation.suite import load_suite
from safepatching.round.selection import choose, load_inputs, run_sweep, sweep_utility
from safepatching.round.sweep_dask import SweepJob, point_task

from .real_round import UTILITY_LIMIT, build_patches, build_stand_in, real_params
from .sweep_round import sweep_params

pytest.importorskip("lm_eval")

# one patch at a time, scaled up: each moves the model's log-likelihoods on tiny_arith (measured: both lose utility)
GRID = {"se_only": {"alpha": 20.0, "beta": 1.0}, "om_only": {"alpha": 1.0, "beta": 20.0}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_sweep")
    model = build_stand_in(root)
    patches, scores = build_patches(model, root)
    params = real_params(GRID)
    split = load_suite(params.eval.suite, "val", root)
    utility = sweep_utility(params, root)
    parent, results = run_sweep(model, load_inputs(patches, scores), split, params.select.points(), params.eval,
                                log=lambda s: None, utility=utility)
    return root, model, patches, scores, params, utility, parent, results


def test_sweep_settings_take_the_limit_and_an_absolute_task_folder(tmp_path):
    params = real_params(GRID)
    u = sweep_utility(params, tmp_path)
    assert u.limit == UTILITY_LIMIT and u.tasks == ("tiny_arith",)
    assert u.include_path == str((tmp_path / "data/eval/tasks").resolve())
    assert sweep_utility(real_params(GRID, utility_limit=None), tmp_path).limit == 3  # null: eval.utility.limit
    assert params.eval.utility.limit == 3  # the test side's own setting is untouched
    assert sweep_utility(sweep_params()) is None  # the organism: no lm-eval task, the sweep as before


def test_points_carry_lm_evals_utility_on_their_merged_model(swept):
    from safepatching.evaluation.utility import run_utility
    from safepatching.io.models import load_model
    from safepatching.merging.in_memory import merge_in_memory

    root, model, patches, scores, params, utility, parent, results = swept
    inputs = load_inputs(patches, scores)
    fresh, tok = load_model(model, trainable=False)
    base = {k: v.clone() for k, v in fresh.state_dict().items()}
    ref = run_utility(fresh, tok, utility, log=lambda s: None)
    assert ref.benchmarks["tiny_arith"]["n_docs"] == UTILITY_LIMIT
    assert parent["utility_tiny_arith"] == ref.headline["utility_tiny_arith"] and parent["utility"] == parent[
        "utility_tiny_arith"]
    for r in results:
        fresh.load_state_dict(merge_in_memory(base, *inputs[:2], merge_settings(r["merge"]), *inputs[2:]))
        got = run_utility(fresh, tok, utility, log=lambda s: None).headline["utility_tiny_arith"]
        assert r["metrics"]["utility_tiny_arith"] == got == r["metrics"]["utility"]
    # the merges move lm-eval's numbers (an equality on identical numbers could not fail)
    assert len({parent["utility"], *(r["metrics"]["utility"] for r in results)}) >= 2


def test_the_dask_task_gives_the_same_utility(swept):
    root, model, patches, scores, params, utility, parent, results = swept
    a = lambda p: str(p.resolve())  # noqa: E731
    job = SweepJob(a(model), (a(patches[0]), a(patches[1])), (a(scores[0]), a(scores[1])), dict(params.eval.suite),
                   a(root), params.eval, params.compute, None, utility)
    assert point_task(job, results[-1]["merge"]) == results[-1]["metrics"]  # == on floats
    assert point_task(dataclasses.replace(job, utility=None), None) == {
        k: v for k, v in parent.items() if not k.startswith("utility")}


def test_a_point_that_loses_utility_beyond_the_tolerance_is_not_chosen(swept):
    *_, params, utility, parent, results = swept
    sel = params.select
    lost = [r for r in results if r["metrics"]["utility"] < parent["utility"] - sel.utility_tolerance]
    assert lost, "the setup must have a point that loses utility"  # measured: every point here does
    assert all(r in lost for r in results)
    chosen = choose(results, parent, sel)
    assert chosen["label"] == "parent" and chosen["merge"] is None  # none within the guard: the parent is kept
    # the same points with the guard off (or, as before, no utility in the sweep) choose one of the lossy points
    off = choose(results, parent, sel.model_copy(update={"utility_tolerance": 1000.0}))
    assert off == dict(max(lost, key=lambda r: r["metrics"]["utility"]), feasible=False,
                       rule="no over-refusal regression")  # harm and over-refusal tie here: the least lossy one
    no_util = [dict(r, metrics={k: v for k, v in r["metrics"].items() if not k.startswith("utility")}) for r in results]
    parent_no_util = {k: v for k, v in parent.items() if not k.startswith("utility")}
    assert choose(no_util, parent_no_util, sel)["merge"] is not None
