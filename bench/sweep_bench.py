"""Wall time of the validation sweep (not a test): in-process (select.executor.kind local) vs a Dask cluster of 1 and
of 2 worker processes (dask), on one organism round, with the same numbers checked (== on every float).

The round is built by round_bench's `build` (world, a briefly trained backbone of --hidden, the weapons batch,
validated) and the pipeline's own steps (two patches of --patch-steps, SNIP scores); the validation split is cut to
--rows per kind. The sweep is the shipped grid (14 points) plus the parent. Each Dask cluster (LocalCluster on
loopback, processes, 1 thread per worker) is started before the clock; its first sweep is `cold` (each worker
imports torch and transformers on its first task), the second `warm`. Every Dask task loads the parent, both
patches and both scores itself (what a worker on another machine does), so per point it pays a model load that the
in-process loop pays once.

    OMP_NUM_THREADS=1 .venv/bin/python bench/sweep_bench.py                  # hidden 64, 48 rows per kind
    OMP_NUM_THREADS=1 .venv/bin/python bench/sweep_bench.py --hidden 128 --rows 150

Threads: the in-process sweep uses torch's threads (OMP_NUM_THREADS); each Dask worker 1 (Dask's nanny sets
OMP_NUM_THREADS=1 in its workers; select.executor.threads overrides it per task).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from safepatching import envdefaults  # noqa: E402

envdefaults.apply()


def sweep_params(hidden: int, patch_steps: int):
    """The shipped params (full select grid) with round r1 on round_bench's x1 batch and short patch training."""
    import yaml

    from safepatching.config import parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["backbone"].update(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_heads=max(2, hidden // 32))
    for kind in ("se", "om"):
        data["patch"][kind].update(max_steps=patch_steps, target_nll=None)  # a brief backbone: no early stop
    data["rounds"] = {"r1": {"batch": "data/batches/x1.jsonl", "parent": "backbone"}}
    data["redteam"] = {}
    return parse_params(data, "sweep bench")


def build_round(root: Path, hidden: int, backbone_steps: int, patch_steps: int, rows: int):
    from round_bench import build

    from safepatching.io.jsonl import read_jsonl, write_jsonl
    from safepatching.layout import RoundLayout
    from safepatching.round.steps.importance import importance
    from safepatching.round.steps.train_patch import train_patch

    build(root, hidden, 1, backbone_steps)
    params = sweep_params(hidden, patch_steps)
    lay = RoundLayout.of(params, "r1", root)
    for kind in ("se", "om"):
        train_patch(params, lay, kind, log=lambda m: None)
    importance(params, lay, log=lambda m: None)
    for f in (lay.project.eval_split("val")).glob("*.jsonl"):
        write_jsonl(f, list(read_jsonl(f))[:rows])
    return params, lay


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--backbone-steps", type=int, default=100)
    ap.add_argument("--patch-steps", type=int, default=8)
    ap.add_argument("--rows", type=int, default=48, help="validation prompts per kind")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sweep_bench.json")
    a = ap.parse_args()

    import dask
    import torch
    from distributed import LocalCluster

    from safepatching.config import ExecutorCfg
    from safepatching.evaluation.suite import load_suite
    from safepatching.round.selection import load_round_inputs, run_sweep
    from safepatching.round.sweep_dask import SweepJob, run_sweep_dask

    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        t0 = time.perf_counter()
        params, lay = build_round(Path(tmp) / "proj", a.hidden, a.backbone_steps, a.patch_steps, a.rows)
        grid = params.select.points()
        split = load_suite(params.eval.suite, "val", lay.root)
        print(f"round built in {time.perf_counter() - t0:.0f}s: hidden {a.hidden}, {len(grid)} points + the parent, "
              f"{sum(map(len, split.values()))} validation prompts, in-process torch threads "
              f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}", flush=True)
        t0 = time.perf_counter()
        ref = run_sweep(lay.parent_model, load_round_inputs(lay), split, grid, params.eval, quiet, params.compute)
        out = {"local": round(time.perf_counter() - t0, 2)}
        print(f"  local: {out['local']} s", flush=True)
        job = SweepJob.of(params, lay)
        for n in a.workers:
            with dask.config.set({"temporary-directory": str(Path(tmp) / f"dask{n}")}), \
                    LocalCluster(n_workers=n, processes=True, threads_per_worker=1, host="127.0.0.1",
                                 scheduler_port=0, dashboard_address=None) as cluster:
                cfg = ExecutorCfg(kind="dask", address=cluster.scheduler_address)
                for phase in ("cold", "warm"):
                    t0 = time.perf_counter()
                    got = run_sweep_dask(job, grid, cfg, quiet)
                    out[f"dask{n}_{phase}"] = round(time.perf_counter() - t0, 2)
                    print(f"  dask {n} worker(s) {phase}: {out[f'dask{n}_{phase}']} s", flush=True)
                    if got != ref:
                        raise SystemExit(f"dask {n} workers ({phase}): the sweep differs from the in-process one")
        out.update(hidden=a.hidden, points=len(grid) + 1, prompts=sum(map(len, split.values())),
                   load_average=round(os.getloadavg()[0], 2), cpus=os.cpu_count(),
                   omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print("same parent, points and order on every executor (== on floats)")
    print("wall seconds: " + "  ".join(f"{k} {v}" for k, v in out.items() if k == "local" or k.startswith("dask")))
    for n in a.workers:
        for phase in ("cold", "warm"):
            print(f"  local / dask {n} worker(s) {phase}: {out['local'] / out[f'dask{n}_{phase}']:.2f}x")
    if {1, 2} <= set(a.workers):
        print(f"  dask 1 / dask 2 workers (warm): {out['dask1_warm'] / out['dask2_warm']:.2f}x")
    print(f"load average at the end {out['load_average']} on {out['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
