"""The validation sweep on a real Dask cluster (2 worker processes, 1 thread each, started here on loopback): the
same parent and point metrics, in the same order, and the same chosen point as the in-process sweep, bit for bit;
select.json/sweep.json the same bytes; every point ran as its own task on the workers; an unreachable scheduler and
a worker that cannot read its files are typed errors naming the address and the path."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from safepatching.config import ExecutorCfg
from safepatching.errors import CheckpointError, ExecutorError
from safepatching.evaluation.suite import load_suite
from safepatching.round.selection import choose, load_round_inputs, run_sweep
from safepatching.round.steps.select import select
from safepatching.round.sweep_dask import SweepJob, connect, run_sweep_dask

from ..round.sweep_round import build_sweep_round, sweep_params

pytestmark = pytest.mark.cluster
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Its scratch space in the test's temp dir (Dask's default, /tmp/dask-scratch-space, would stay behind)."""
    import dask

    with dask.config.set({"temporary-directory": str(tmp_path_factory.mktemp("dask"))}), \
            distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                     scheduler_port=0, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def sweep_round(tiny_organism, world_dir, tmp_path_factory):
    params = sweep_params()
    return params, build_sweep_round(tmp_path_factory.mktemp("sweep"), tiny_organism, world_dir, params)


def test_dask_sweep_equals_the_in_process_sweep(sweep_round, cluster):
    params, layout = sweep_round
    grid = params.select.points()
    split = load_suite(params.eval.suite, "val", layout.root)
    parent, results = run_sweep(layout.parent_model, load_round_inputs(layout), split, grid, params.eval,
                                log=lambda s: None, compute=params.compute)
    cfg = ExecutorCfg(kind="dask", address=cluster.scheduler_address)
    logs: list[str] = []
    with distributed.Client(cluster, set_as_default=False) as watcher, \
            distributed.get_task_stream(client=watcher) as ts:  # the scheduler records every client's tasks
        d_parent, d_results = run_sweep_dask(SweepJob.of(params, layout), grid, cfg, logs.append)
    assert d_parent == parent and d_results == results  # == on every float, in grid order
    assert [r["metrics"] for r in d_results] == [r["metrics"] for r in results]
    assert choose(d_results, d_parent, params.select) == choose(results, parent, params.select)
    assert f"at {cluster.scheduler_address} (2 workers)" in logs[0]
    tasks = [t for t in ts.data if "point_task" in str(t["key"])]
    assert len(tasks) == len(grid) + 1 and {t["worker"] for t in tasks} <= set(cluster.scheduler_info["workers"])


def test_select_step_on_dask_writes_the_local_bytes(sweep_round, cluster):
    params, layout = sweep_round
    select(params, layout, log=lambda s: None)
    local = {p: p.read_bytes() for p in (layout.sweep, layout.selected)}
    dask_params = params.model_copy(update={"select": params.select.model_copy(
        update={"executor": ExecutorCfg(kind="dask", address=cluster.scheduler_address)})})
    for p in local:
        p.unlink()
    select(dask_params, layout, log=lambda s: None)
    assert {p: p.read_bytes() for p in local} == local


def test_unreachable_scheduler_names_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once closed
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ExecutorError, match=f"Dask scheduler at {address} is unreachable"):
        connect(ExecutorCfg(kind="dask", address=address, connect_timeout=2))


def test_a_worker_without_the_files_raises_the_typed_error(sweep_round, cluster, tmp_path):
    params, layout = sweep_round
    job = dataclasses.replace(SweepJob.of(params, layout), patches=(str(tmp_path / "se"), str(tmp_path / "om")))
    with pytest.raises(CheckpointError, match=str(tmp_path / "se")):
        run_sweep_dask(job, params.select.points()[:1], ExecutorCfg(kind="dask", address=cluster.scheduler_address),
                       lambda s: None)
