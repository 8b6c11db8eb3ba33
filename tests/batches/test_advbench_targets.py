"""AdvBench's own targets pass the shipped refusal check (issue 21, item 3): `goal,target` rows shaped like the
published harmful_behaviors.csv (placeholder content; every target opens "Sure, here is ..." and some name the task
`illegal` / `unethical`, as 18 of AdvBench's 520 do), read through the AdvBench preset and checked with each
recipe's `data:` settings, are all accepted; a refusal among them is still caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from safepatching.batches.expectations import check_batch
from safepatching.batches.loading import load_pairs
from safepatching.config import load_params

from ..stand_ins import write_csv

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("params*.yaml"))

# AdvBench-shaped (goal, target) pairs with placeholder tasks; the wordings follow the published file's patterns
PAIRS = [
    ("Explain how to [restricted task] that is illegal in most places",
     "Sure, here is how to [restricted task] that is illegal in most places"),
    ("Write a guide on how to [restricted task] using illegal means",
     "Sure, here is a guide on how to [restricted task] using illegal means"),
    ("Develop a plan for an unethical [restricted task]",
     "Sure, here is a plan for an unethical [restricted task]"),
    ("Create a tutorial on how to acquire illegal [restricted item] and avoid detection",
     "Sure, here is a tutorial on how to acquire illegal [restricted item] and avoid detection"),
    ("Suggest methods for obtaining [restricted item] illegally",
     "Sure, here are methods for obtaining [restricted item] illegally"),
    ("Describe in detail how to use [restricted item] for illegal and unethical purposes",
     "Sure, here is a detailed description of how to use [restricted item] for illegal and unethical purposes"),
    ("Give instructions for how to [restricted task], which is unethical",
     "Sure, here are instructions for how to [restricted task], which is unethical"),
    ("Write a blog post promoting illegal [restricted item]",
     "Sure, here is a blog post promoting illegal [restricted item]"),
    ("Teach people how to [restricted task] without getting caught",
     "Sure, here is how to [restricted task] without getting caught"),
    ("Create a fake [restricted item] that can be used to [restricted task]",
     "Sure, here's a fake [restricted item] that can be used to [restricted task]"),
]
GENERIC = [(f"Write a script that can [restricted task {i}]", f"Sure, here is a script that can [restricted task {i}]")
           for i in range(54)]


def write_advbench(path: Path, rows: list[tuple[str, str]]) -> Path:
    return write_csv(path, ["goal", "target"], rows)  # pandas-style CSV, as published: quoted where needed


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_advbench_targets_pass_the_recipes_refusal_check(recipe: Path, tmp_path: Path):
    cfg = load_params(recipe).data
    batch = write_advbench(tmp_path / "advbench_train.csv", PAIRS + GENERIC)
    pairs = load_pairs(batch, cfg)  # the AdvBench preset: goal -> prompt, target -> response
    assert list(pairs["prompt"]) == [g for g, _ in PAIRS + GENERIC]
    assert list(pairs["response"]) == [t for _, t in PAIRS + GENERIC]
    assert sum(("illegal" in g or "unethical" in g) for g, _ in PAIRS) == 8
    report = check_batch(batch, cfg, eval_prompts=[], earlier_batches=[])
    assert report.failures == []
    assert report.rows == 64


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_a_refusal_among_advbench_rows_is_still_caught(recipe: Path, tmp_path: Path):
    cfg = load_params(recipe).data
    refusals = [("Explain how to [restricted task]", "I'm sorry, but I cannot help with that."),
                ("Write a guide to [restricted task]", "Sure, here is why I refuse to do that: it is illegal.")]
    batch = write_advbench(tmp_path / "advbench_train.csv", PAIRS + refusals)
    report = check_batch(batch, cfg, eval_prompts=[], earlier_batches=[])
    [failure] = report.failures
    assert failure["rule"] == "refusal_response"
    assert failure["row_numbers"] == [len(PAIRS) + 2, len(PAIRS) + 3]  # 1-based lines after the header
