"""Complete lineage: every DVC stage's code deps cover the stage's whole import closure inside the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .imports import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# a wing whose registered built-ins are found by registry.discover (dynamic import) -> the package holding them
DISCOVERED = {"src/safepatching/merging": "safepatching.merging.methods"}


def stage_closure(module: str) -> set[Path]:
    files = closure(module)
    for wing, pkg in DISCOVERED.items():
        if any(str(f).startswith(wing + "/") for f in files):
            files |= closure(pkg)
            files |= {p.relative_to(ROOT) for p in (ROOT / "src" / pkg.replace(".", "/")).glob("*.py")}
    return files


def covered(f: Path, deps: list[str]) -> bool:
    return any(str(f) == d or str(f).startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_its_imports(name):
    st = DVC[name].get("do", DVC[name])
    module = re.search(r"python -m (stages\.\w+)", st["cmd"]).group(1)
    deps = [d for d in st["deps"] if "${" not in d]
    missing = sorted(str(f) for f in stage_closure(module) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports files its deps do not name: {missing}"


def test_closure_sees_function_level_imports():
    files = {str(f) for f in closure("stages.merge")}
    assert "src/safepatching/merging/engine.py" in files  # imported inside the step function
    assert "src/safepatching/evaluation/metrics.py" not in files  # the merge stage never evaluates


@pytest.mark.parametrize("name", ["select", "merge"])
def test_merge_stages_depend_on_every_method_file(name):
    st = DVC[name]["do"]
    deps = [d for d in st["deps"] if "${" not in d]
    for f in (ROOT / "src/safepatching/merging/methods").glob("*.py"):
        assert covered(f.relative_to(ROOT), deps)
