"""The sweep's per-point task (what a Dask worker runs: files in, headline out, a fresh model each time) gives the
in-process sweep's numbers bit for bit, and the select step writes the same sweep with the local executor; the
executor setting is checked at load time and a missing `distributed` is a typed error."""

from __future__ import annotations

import json
import sys

import pytest
from pydantic import ValidationError

from safepatching.config import ExecutorCfg
from safepatching.errors import ExecutorError
from safepatching.evaluation.suite import load_suite
from safepatching.round.selection import choose, load_round_inputs, run_sweep
from safepatching.round.steps.select import select
from safepatching.round.sweep_dask import SweepJob, connect, point_task

from .sweep_round import build_sweep_round, sweep_params


@pytest.fixture(scope="module")
def sweep_round(tiny_organism, world_dir, tmp_path_factory):
    params = sweep_params()
    layout = build_sweep_round(tmp_path_factory.mktemp("sweep"), tiny_organism, world_dir, params)
    grid = params.select.points()
    split = load_suite(params.eval.suite, "val", layout.root)
    parent, results = run_sweep(layout.parent_model, load_round_inputs(layout), split, grid, params.eval,
                                log=lambda s: None, compute=params.compute)
    return params, layout, grid, parent, results


def test_point_task_gives_the_in_process_numbers(sweep_round):
    params, layout, grid, parent, results = sweep_round
    assert len(grid) == 6 and [r["merge"] for r in results] == [c.model_dump() for c in grid]
    # the grid moves the answers: a test of equality on identical numbers could not fail
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in results + [{"metrics": parent}]}) >= 3
    job = SweepJob.of(params, layout)
    # reversed: each task loads its own model, so the order (and what ran before) cannot matter
    by_task = {i: point_task(job, grid[i].model_dump()) for i in reversed(range(len(grid)))}
    assert [by_task[i] for i in range(len(grid))] == [r["metrics"] for r in results]  # == on floats
    assert point_task(job, None) == parent
    points = [dict(r, metrics=by_task[i]) for i, r in enumerate(results)]
    assert choose(points, parent, params.select) == choose(results, parent, params.select)


def test_select_step_writes_that_sweep_with_the_local_executor(sweep_round):
    params, layout, grid, parent, results = sweep_round
    assert params.select.executor.kind == "local"
    chosen = select(params, layout, log=lambda s: None)
    assert json.loads(layout.sweep.read_text()) == {"parent": parent, "results": results}
    assert chosen == json.loads(layout.selected.read_text())
    assert {k: chosen[k] for k in ("label", "merge", "metrics")} == \
        {k: v for k, v in choose(results, parent, params.select).items() if k in ("label", "merge", "metrics")}


def test_executor_setting_and_missing_distributed(monkeypatch):
    assert ExecutorCfg().kind == "local" and ExecutorCfg().address is None
    with pytest.raises(ValidationError, match="scheduler's address"):
        ExecutorCfg(kind="dask")
    with pytest.raises(ValidationError):
        ExecutorCfg(kind="ray", address="tcp://127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if requirements-extra.txt were not installed
    with pytest.raises(ExecutorError, match="make setup-extra"):
        connect(ExecutorCfg(kind="dask", address="tcp://127.0.0.1:1"))
