"""Round cost profile (not a test): seconds and peak RSS of each step of one round on the organism, and how they grow
with the batch (x1, x2, x4) and the model (hidden 128 -> 256 -> 512).

Each step runs in a fresh child process through the pipeline's own round steps (safepatching.round.steps.*), so its
peak RSS is its own (rusage of the child). Steps: GA patch (train_se), GD patch (train_om), SNIP for both (importance),
one selection point (merge in memory + validation evaluation: select with a one-point grid), the streamed merge,
test evaluation, registration (MLflow on a temp SQLite store). Derived ratios:
  snip_vs_epoch    SNIP for both patches / one epoch of patch training on the same batch (target <= 2)
  sweep_points_per_minute   selection points per minute
  per_row          each step's seconds per batch row (round t must cost O(batch t), not O(all batches))

    OMP_NUM_THREADS=2 .venv/bin/python bench/round_bench.py                 # hidden 128, batch x1 x2 x4
    OMP_NUM_THREADS=2 .venv/bin/python bench/round_bench.py --hidden 128 256 512 --scales 1
The backbone here is trained only briefly (--backbone-steps): costs, not quality, are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safepatching import envdefaults  # noqa: E402

envdefaults.apply()

STEPS = ("train_se", "train_om", "importance", "select_point", "merge", "evaluate_test", "register")


def project_params(root: Path, hidden: int, scale: int, backbone_steps: int):
    """The shipped params, resized: one round on a batch of `scale` x the weapons batch; a one-point select grid."""
    import yaml

    from safepatching.config import parse_params

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["backbone"].update(hidden_size=hidden, intermediate_size=hidden * 11 // 4, steps=backbone_steps,
                            num_heads=max(2, hidden // 32))
    point = {k: (v[0] if isinstance(v, list) else v) for k, v in data["select"]["grid"]["safepatching"].items()}
    data["select"]["grid"] = {"safepatching": point}
    data["mlflow"].update(tracking_uri="sqlite:///mlflow.db", experiment="bench", model_name="bench")
    data["rounds"] = {"r1": {"batch": f"data/batches/x{scale}.jsonl", "parent": "backbone"}}
    data["redteam"] = {}  # costs, not quality: a fixed batch of known size (the plain weapons batch, repeated)
    return parse_params(data, "round bench")


def warm_imports() -> None:
    """Import what every step imports lazily (transformers' Llama classes, the round steps, MLflow) before the clock
    starts: a fresh interpreter spends seconds on these imports, a per-process cost, not the step's. Without this, a
    short step (SNIP) is charged the whole import while training spreads it over its steps."""
    import transformers  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401

    import mlflow  # noqa: F401

    from safepatching.io import models  # noqa: F401
    from safepatching.round.steps import evaluate, importance, merge, select, train_patch  # noqa: F401


def child(step: str, root: str, hidden: int, scale: int, backbone_steps: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from safepatching.layout import RoundLayout

    params = project_params(Path(root), hidden, scale, backbone_steps)
    lay = RoundLayout.of(params, "r1", root)
    quiet = lambda m: None  # noqa: E731
    warm_imports()
    t0 = time.perf_counter()
    extra: dict = {}
    if step in ("train_se", "train_om"):
        from safepatching.round.steps.train_patch import train_patch

        m = train_patch(params, lay, step[-2:], log=quiet)
        extra = {"train_steps": m["steps"], "n_pairs": m["n_pairs"]}
    elif step == "importance":
        from safepatching.round.steps.importance import importance

        importance(params, lay, log=quiet)
    elif step == "select_point":
        from safepatching.round.steps.select import select

        select(params, lay, log=quiet)
    elif step == "merge":
        from safepatching.round.steps.merge import merge

        merge(params, lay, log=quiet)
    elif step == "evaluate_test":
        from safepatching.round.steps.evaluate import evaluate

        evaluate(params, lay, "test")
        evaluate(params, lay.project.backbone(), "test")  # (the backbone's, needed by registration; not timed)
    elif step == "register":
        import yaml

        from safepatching.io.checkpoints import sha256_dir
        from safepatching.ops.record import record_round

        lock = Path(root) / "dvc.lock"  # no DVC here: a stand-in lock entry gives the merge stage's hash
        lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"merge@r1": {
            "cmd": "python -m stages.merge --round r1", "outs": [{"path": "models/r1", "md5": sha256_dir(lay.model)}]}}}))
        t0 = time.perf_counter()
        record_round(params, lay, log=quiet)
    seconds = time.perf_counter() - t0
    return {"step": step, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}


def build(root: Path, hidden: int, scale: int, backbone_steps: int) -> None:
    """World + a briefly trained backbone + the round's batch (the weapons batch repeated `scale` times, ids kept
    unique), validated as the pipeline would."""
    from safepatching.io.atomic import atomic_dir
    from safepatching.io.jsonl import read_jsonl, write_jsonl
    from safepatching.organism.model import build_organism
    from safepatching.organism.world import build_world, save_world
    from safepatching.layout import Project, RoundLayout
    from safepatching.round.steps.validate import validate

    params = project_params(root, hidden, scale, backbone_steps)
    project = Project(root)
    save_world(build_world(params.world, params.seed), project.world)
    with atomic_dir(project.model("backbone"), overwrite=True) as tmp:
        build_organism(project.world, tmp, params.backbone, params.seed, log=lambda m: None)
    rows = read_jsonl(project.world / "batches" / "weapons.jsonl")
    batch = [dict(r, id=f"{r['id']}-{k}", prompt=r["prompt"] if k == 0 else f"{r['prompt']} (variant {k})")
             for k in range(scale) for r in rows]
    write_jsonl(root / "data" / "batches" / f"x{scale}.jsonl", batch)
    validate(params, RoundLayout.of(params, "r1", root), log=lambda m: None)


def run_child(*args: str) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def profile(hidden: int, scale: int, backbone_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as td:
        subprocess.run([sys.executable, __file__, "--build", td, str(hidden), str(scale), str(backbone_steps)],
                       check=True, cwd=ROOT, capture_output=True)
        rows = {s: run_child(s, td, str(hidden), str(scale), str(backbone_steps)) for s in STEPS}
    n = rows["train_se"]["n_pairs"]
    epoch_steps = -(-n // 32)
    per_step = {k: rows[k]["seconds"] / max(1, rows[k]["train_steps"]) for k in ("train_se", "train_om")}
    epoch = sum(per_step.values()) / 2 * epoch_steps
    return {"hidden": hidden, "scale": scale, "n_pairs": n, "steps": rows,
            "snip_vs_epoch": round(rows["importance"]["seconds"] / epoch, 2) if epoch else None,
            "sweep_points_per_minute": round(60 / rows["select_point"]["seconds"], 2),
            "per_row": {s: round(rows[s]["seconds"] / n, 4) for s in STEPS}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--backbone-steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "round_bench.json")
    ap.add_argument("--child", nargs=5, metavar=("STEP", "ROOT", "HIDDEN", "SCALE", "BB_STEPS"))
    ap.add_argument("--build", nargs=4, metavar=("ROOT", "HIDDEN", "SCALE", "BB_STEPS"))
    a = ap.parse_args()
    if a.child:
        step, root, hidden, scale, bb = a.child
        print(json.dumps(child(step, root, int(hidden), int(scale), int(bb))))
        return 0
    if a.build:
        root, hidden, scale, bb = a.build
        build(Path(root), int(hidden), int(scale), int(bb))
        return 0
    results = [profile(h, s, a.backbone_steps) for h in a.hidden for s in a.scales]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    print(f"threads {os.environ.get('OMP_NUM_THREADS', '?')}; seconds (peak RSS MB) per step")
    print(f"{'hidden':>6s} {'batch':>6s} " + " ".join(f"{s:>18s}" for s in STEPS) + "  snip/epoch  points/min")
    for r in results:
        cells = " ".join(f"{r['steps'][s]['seconds']:>9.1f} ({r['steps'][s]['peak_rss_mb']:>5d})" for s in STEPS)
        print(f"{r['hidden']:>6d} {r['n_pairs']:>6d} {cells}  {r['snip_vs_epoch']!s:>10s}  "
              f"{r['sweep_points_per_minute']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
