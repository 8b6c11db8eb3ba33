"""A tiny organism round ready for its validation sweep (the select step's inputs): the session's tiny organism as
the backbone, two few-step patches (SE by ascent, OM by descent) and their SNIP scores, a validation split of a few
prompts per kind, and params (shipped, shrunk) whose grid has points that do and do not change the answers (the
OM patch here teaches the batch's prompts to be refused, so β moves the refusal rates; measured: 4 distinct
headlines of 7)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from safepatching.config import ObjectiveCfg, Params, parse_params
from safepatching.io.jsonl import read_jsonl, write_jsonl
from safepatching.layout import RoundLayout

ROOT = Path(__file__).resolve().parents[2]
ROWS_PER_KIND = 12
STEPS = 8
GRID = {"safepatching": {"p": 1.0, "a": [10.0, 40.0], "b": 10.0, "alpha": 1.0, "beta": [1.0, 3.0],
                         "ranking": "per_tensor", "compose": "sequential", "rescale": False, "difference": True,
                         "seed": 0},
        "task_arithmetic": {"alpha": 1.0, "beta": [1.0, 3.0]}}


def sweep_params(**select) -> Params:
    """The shipped params with a short evaluation (the keyword judge decides: the tiny model babbles), the grid above
    and one round r1 on the backbone; `select` updates the select: section."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["eval"].update(max_new_tokens=10, batch_size=16, decide_with="keyword")
    data["select"].update(grid=GRID, **select)
    data["rounds"] = {"r1": {"batch": "data/batches/r1.jsonl", "parent": "backbone"}}
    data["redteam"] = {}
    return parse_params(data)


def build_sweep_round(root: Path, organism: Path, world_dir: Path, params: Params) -> RoundLayout:
    """Write round r1's sweep inputs under `root` (models/backbone links to `organism`)."""
    from safepatching.patching.importance import compute_importance
    from safepatching.patching.train import train_patch

    for f in sorted((world_dir / "eval" / "val").glob("*.jsonl")):
        write_jsonl(root / "data" / "world" / "eval" / "val" / f.name, list(read_jsonl(f))[:ROWS_PER_KIND])
    layout = RoundLayout.of(params, "r1", root)
    layout.parent_model.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(organism, layout.parent_model)
    harmful = [(r["prompt"], r["response"]) for r in read_jsonl(world_dir / "batches" / "weapons.jsonl")][:32]
    refusals = [(q, params.eval.judges["exact"].refusal) for q, _ in harmful]  # OM here teaches refusing
    for kind, objective, pairs in (("se", "ga", harmful), ("om", "gd", refusals)):
        train_patch(layout.parent_model, pairs, layout.patch(kind),
                    ObjectiveCfg(objective=objective, lr=3e-3, max_steps=STEPS, batch_size=16), log=lambda s: None)
        compute_importance(layout.parent_model, layout.patch(kind), pairs, layout.scores(kind), "weight", 16, 16,
                           log=lambda s: None)
    return layout
