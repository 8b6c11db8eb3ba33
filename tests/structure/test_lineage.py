"""Complete lineage: every DVC stage's code deps are the stage's whole import closure inside the project, named at
dvc.yaml's granularity (stage files, ground-floor files and round files one by one, any other package -- a wing --
by its folder), no more and no less; every dep dvc.yaml names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from safepatching.registry import BUILTIN_MODULES

from .imports import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# wing folder -> the package whose modules discovery imports by name (invisible to a static import graph)
DISCOVERED = {"src/" + "/".join(pkg.split(".")[:2]): pkg for pkgs in BUILTIN_MODULES.values() for pkg in pkgs}


def stage_closure(module: str) -> set[Path]:
    files = closure(module)
    for wing, pkg in DISCOVERED.items():
        if any(str(f).startswith(wing + "/") for f in files):
            for mod in [pkg] + [f"{pkg}.{p.stem}" for p in (ROOT / "src" / pkg.replace(".", "/")).glob("*.py")]:
                files |= closure(mod)
    return files


def entry(f: Path) -> str:
    """How dvc.yaml names a file of a closure: a package below src/safepatching other than round/ (a wing, or a
    ground-floor package) by its folder, anything else by itself."""
    parts = f.parts
    if parts[:2] == ("src", "safepatching") and len(parts) > 3 and parts[2] != "round":
        return "/".join(parts[:3])
    return str(f)


def stage_deps(name: str) -> tuple[str, list[str]]:
    """(the stage's module, its deps without interpolated ones)."""
    st = DVC[name].get("do", DVC[name])
    return re.search(r"python -m (stages\.\w+)", st["cmd"]).group(1), [d for d in st["deps"] if "${" not in d]


def covered(f: Path, deps: list[str]) -> bool:
    return any(str(f) == d or str(f).startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_its_imports(name):
    module, deps = stage_deps(name)
    missing = sorted(str(f) for f in stage_closure(module) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports files its deps do not name: {missing}"


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_code_deps_are_exactly_its_closure(name):
    module, deps = stage_deps(name)
    code = {d for d in deps if d.startswith(("src/", "stages/"))}
    want = {entry(f) for f in stage_closure(module)}
    assert not want - code, f"dvc.yaml stage {name!r} misses {sorted(want - code)}"
    assert not code - want, f"dvc.yaml stage {name!r} names code it never imports: {sorted(code - want)}"
    assert len(deps) == len(set(deps)), f"dvc.yaml stage {name!r} names a dep twice"


@pytest.mark.parametrize("name", sorted(DVC))
def test_every_named_dep_exists(name):
    missing = [d for d in stage_deps(name)[1] if d.startswith(("src/", "stages/")) and not (ROOT / d).exists()]
    assert not missing, f"dvc.yaml stage {name!r} names paths that do not exist: {missing}"


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
