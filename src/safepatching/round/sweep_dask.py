"""The validation sweep on a Dask cluster (`select.executor.kind: dask`): one task per grid point, and one for the
parent, each a pure function of paths and settings (`SweepJob`, a merge's settings as a dict) that loads the parent,
patches and scores itself from shared storage, merges in memory and evaluates through the same `sweep_point` as the
local executor. Results come back in grid order, so the choice rule sees the list the local sweep gives.

`distributed` is imported only here, and only when a sweep is sent to a cluster (requirements-extra.txt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ComputeCfg, EvalCfg, ExecutorCfg, MergeSettings, UtilityCfg
from ..errors import ExecutorError
from ..layout import RoundLayout


POLL_S = 0.25  # how often the sweep looks at its points while they run (for its progress line)


@dataclass(frozen=True)
class SweepJob:
    """What every point of one round's sweep reads: absolute paths (the same on every worker) and settings."""

    parent_model: str
    patches: tuple[str, str]  # se, om patch folders
    scores: tuple[str, str]  # se, om score folders
    suite: dict  # eval.suite: name -> EvalSetCfg (its paths relative to suite_root)
    suite_root: str
    eval_cfg: EvalCfg
    compute: ComputeCfg | None = None
    threads: int | None = None  # torch threads per point; None: the worker's own
    utility: UtilityCfg | None = None  # lm-eval tasks per point (selection.sweep_utility: absolute include_path)

    @classmethod
    def of(cls, params, layout: RoundLayout) -> "SweepJob":
        from .selection import sweep_utility

        a = lambda p: str(Path(p).resolve())  # noqa: E731
        return cls(a(layout.parent_model), (a(layout.patch("se")), a(layout.patch("om"))),
                   (a(layout.scores("se")), a(layout.scores("om"))), dict(params.eval.suite), a(layout.root),
                   params.eval, params.compute, params.select.executor.threads, sweep_utility(params, layout.root))


def point_task(job: SweepJob, merge: dict | None) -> dict:
    """One point's headline (merge None: the parent's), computed from files alone: what a worker runs."""
    import torch

    from ..config import merge_settings
    from ..evaluation.suite import load_suite
    from .selection import load_inputs, load_parent, sweep_point

    if job.threads:
        torch.set_num_threads(job.threads)
    model, tok, base_sd = load_parent(Path(job.parent_model), job.compute)
    inputs = None if merge is None else load_inputs(job.patches, job.scores)
    split = load_suite(job.suite, "val", Path(job.suite_root))
    return sweep_point(model, tok, base_sd, inputs, None if merge is None else merge_settings(merge), split,
                       job.eval_cfg, job.utility)


def connect(cfg: ExecutorCfg):
    """A distributed.Client on the configured scheduler, or ExecutorError naming the address."""
    try:
        from distributed import Client
    except ImportError as e:
        raise ExecutorError(f"select.executor.kind dask needs the `distributed` package (requirements-extra.txt: "
                            f"make setup-extra): {e}") from None
    try:
        return Client(cfg.address, timeout=cfg.connect_timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ExecutorError(f"select.executor: the Dask scheduler at {cfg.address} is unreachable "
                            f"(within {cfg.connect_timeout:g} s): {e}") from None


def run_sweep_dask(job: SweepJob, grid: list[MergeSettings], cfg: ExecutorCfg, log=print) -> tuple[dict, list[dict]]:
    """(parent_headline, results) as selection.run_sweep returns them, the points evaluated on the cluster; points
    done of all (in any order) with an ETA every 30 s while they run."""
    from ..progress import Progress
    from .selection import log_point, point_record

    t0 = time.time()
    with connect(cfg) as client:
        n = len(client.scheduler_info().get("workers", {}))
        log(f"  sweep of {len(grid)} points + the parent on the Dask cluster at {cfg.address} ({n} workers)")
        futures = [client.submit(point_task, job, None if c is None else c.model_dump(), pure=False)
                   for c in [None, *grid]]
        progress = Progress("sweep points done on the cluster", len(futures), log)
        while not all(f.done() for f in futures):  # polled: this client is not the process's default one
            progress.update(sum(f.done() for f in futures))
            time.sleep(POLL_S)
        parent, *heads = client.gather(futures)
    results = [point_record(c, h) for c, h in zip(grid, heads)]
    for i, r in enumerate(results):
        log_point(i, len(grid), r, log)
    log(f"  sweep of {len(grid)} points in {time.time() - t0:.1f}s")
    return parent, results
