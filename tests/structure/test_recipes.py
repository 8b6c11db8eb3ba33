"""Every shipped recipe (`configs/params*.yaml`) is a params.yaml a user can copy: it loads with the strict schema,
and DVC accepts it -- every `params:` key a stage of dvc.yaml names (after resolving `${...}`, `foreach` over the
recipe's own rounds / red-team rounds) exists in it, and `dvc repro --dry` over a scratch copy with the recipe as
params.yaml checks every stage without a missing-parameter error (issue 21, item 2)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from safepatching.config import load_params

from .imports import ROOT

RECIPES = sorted((ROOT / "configs").glob("params*.yaml"))
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
_MISSING = object()
_REF = re.compile(r"\$\{([^}]+)\}")


def lookup(ctx: dict, dotted: str) -> Any:
    """`a.b.c` in nested mappings, or _MISSING."""
    node: Any = ctx
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def interpolate(value: Any, ctx: dict, where: str) -> Any:
    """DVC's `${...}` interpolation of a dvc.yaml value against `ctx` (a whole-string reference keeps its type);
    a reference that does not resolve is an AssertionError naming it."""
    if isinstance(value, list):
        return [interpolate(v, ctx, where) for v in value]
    if isinstance(value, dict):
        return {interpolate(k, ctx, where): interpolate(v, ctx, where) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def get(ref: str) -> Any:
        found = lookup(ctx, ref.strip())
        assert found is not _MISSING, f"{where}: ${{{ref}}} does not resolve against the recipe"
        return found

    whole = _REF.fullmatch(value)
    if whole:
        return get(whole.group(1))
    return _REF.sub(lambda m: str(get(m.group(1))), value)


def resolved_stages(recipe: dict) -> dict[str, dict]:
    """dvc.yaml's stages as DVC resolves them against `recipe` (params.yaml is DVC's vars): name -> definition."""
    out: dict[str, dict] = {}
    for name, stage in DVC_YAML.items():
        if "foreach" not in stage:
            out[name] = interpolate(stage, recipe, name)
            continue
        over = interpolate(stage["foreach"], recipe, f"{name}.foreach")
        pairs = over.items() if isinstance(over, dict) else [(v, v) for v in over]
        for key, item in pairs:
            out[f"{name}@{key}"] = interpolate(stage["do"], {**recipe, "key": key, "item": item}, f"{name}@{key}")
    return out


def stage_param_keys(stage: dict) -> list[str]:
    keys: list[str] = []
    for p in stage.get("params", []):
        if isinstance(p, dict):  # {params file: [keys]}
            keys += [k for ks in p.values() for k in ks]
        else:
            keys.append(p)
    return keys


def missing_params(recipe: dict) -> dict[str, list[str]]:
    return {name: miss for name, st in resolved_stages(recipe).items()
            if (miss := [k for k in stage_param_keys(st) if lookup(recipe, k) is _MISSING])}


def test_there_are_recipes():
    assert {p.name for p in RECIPES} >= {"params.llama2-7b-chat.yaml", "params.llama2-7b-chat-8gpu.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(recipe: Path):
    p = load_params(recipe)
    assert p.rounds, "a recipe names at least one round"
    assert p.backbone.source != "organism"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_has_every_param_dvc_names(recipe: Path):
    raw = yaml.safe_load(recipe.read_text())
    stages = resolved_stages(raw)
    assert {f"validate@{r}" for r in raw["rounds"]} <= set(stages)  # the round stages were expanded
    assert missing_params(raw) == {}


def test_the_check_sees_a_missing_key():
    """The resolver is not vacuous: the pre-fix recipes lacked data.refusal_check / max_rows / max_bytes and DVC
    refused validate@r1; a round-scoped key resolves through `rounds.${key}`."""
    raw = yaml.safe_load(RECIPES[0].read_text())
    for k in ("refusal_check", "max_rows", "max_bytes"):
        raw["data"].pop(k, None)
    raw["rounds"]["r9"] = {"batch": "data/batches/b.csv", "parent": "r1"}
    miss = missing_params(raw)
    assert miss["validate@r1"] == ["data.refusal_check", "data.max_rows", "data.max_bytes"]
    assert miss["validate@r9"] == miss["validate@r1"]
    assert "train_se@r9" not in miss  # rounds.r9.parent exists
    del raw["rounds"]["r9"]["parent"]  # DVC cannot even resolve the round's stages (models/${item.parent})
    with pytest.raises(AssertionError, match=r"train_se@r9: \$\{item.parent\} does not resolve"):
        missing_params(raw)


def _dvc() -> Path | None:
    exe = Path(sys.executable).parent / "dvc"
    return exe if exe.exists() else (Path(w) if (w := shutil.which("dvc")) else None)


def scratch_project(root: Path, recipe: Path) -> dict[str, dict]:
    """The project's code and dvc.yaml with `recipe` as params.yaml, a DVC repo (no git), and a placeholder for every
    dependency that a run would have produced or the user would have dropped in (models, artifacts, data)."""
    for d in ("src", "stages"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, root / f)
    shutil.copy(recipe, root / "params.yaml")
    stages = resolved_stages(yaml.safe_load(recipe.read_text()))
    for st in stages.values():
        for dep in st.get("deps", []):
            p = root / dep
            if p.exists():
                continue
            if p.suffix:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("placeholder\n")
            else:
                p.mkdir(parents=True)
                (p / "placeholder").write_text("placeholder\n")
    return stages


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_dvc_accepts_recipe(recipe: Path, tmp_path: Path):
    """`dvc repro --dry` (no stage runs) resolves every stage and checks its params against the recipe: a missing
    key is 'Parameters ... are missing from params.yaml'."""
    dvc = _dvc()
    if dvc is None:
        pytest.skip("dvc is not installed")
    stages = scratch_project(tmp_path, recipe)
    env = {"DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True, timeout=120)
    p = subprocess.run([dvc, "repro", "--dry"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "missing from" not in out
    assert set(re.findall(r"Running stage '([^']+)'", out)) == set(stages)
