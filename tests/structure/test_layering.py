"""The core in floors, every import going down: the ground floor imports no wing; each wing (a folder) is its own floor
and imports only the ground (and `io`); the round sits above the wings and its steps above the round; ops/ is the top.
Nothing in src/ imports stages/ or flows/; the evaluation wing never imports the organism; nothing in src/ imports
Prefect, MLflow or DVC outside ops/."""

from __future__ import annotations

import ast
import re

import pytest

from .imports import ROOT, imports_of, module_name

SRC = ROOT / "src" / "safepatching"
# the ground floor: top-level modules (and the `config` package, however it is split), the package itself ("")
GROUND = {"", "config", "errors", "registry", "envdefaults", "chat", "refusals", "crash", "layout", "progress"}
WINGS = {"io", "batches", "patching", "merging", "evaluation", "organism"}
ALLOWED_WINGS = {"io": set(), "batches": {"io"}, "patching": {"io"}, "merging": {"io"}, "evaluation": {"io"},
                 "organism": {"io"}}
# floors above the wings, lowest first: each may import the ground, any wing and every floor below it
UPPER = ("round", "round.steps", "ops")


def floor(mod: str) -> str:
    """The floor of a module of safepatching: a ground name, a wing, or one of UPPER."""
    parts = mod.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "round" and len(parts) > 1 and parts[1] == "steps":
        return "round.steps"
    return parts[0]


def may_import(me: str, other: str) -> bool:
    if other == me or other in GROUND:
        return True
    if me in GROUND:
        return False
    if me in WINGS:
        return other in ALLOWED_WINGS[me]
    return other in WINGS or (other in UPPER and UPPER.index(other) < UPPER.index(me))


def files():
    return sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_has_a_floor(path):
    me = floor(module_name(path))
    assert me in GROUND | WINGS | set(UPPER), f"{path}: {me!r} is on no floor (add it to GROUND, WINGS or UPPER)"


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_only(path):
    me = floor(module_name(path))
    for mod in imports_of(path):
        assert mod.split(".")[0] == "safepatching", f"{path} imports {mod} (src/ never imports stages/ or flows/)"
        assert may_import(me, floor(mod)), f"{path} (floor {me!r}) imports {mod} (floor {floor(mod)!r}): an arrow up"


@pytest.mark.parametrize("me,other,ok", [
    ("layout", "round", False), ("config", "io", False), ("io", "batches", False), ("merging", "round", False),
    ("evaluation", "organism", False), ("round", "round.steps", False), ("round", "ops", False),
    ("round.steps", "ops", False), ("batches", "io", True), ("round", "merging", True), ("round.steps", "round", True),
    ("ops", "round.steps", True), ("ops", "layout", True)])
def test_the_floor_rule(me, other, ok):
    assert may_import(me, other) is ok


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(SRC)))
def test_only_ops_talks_to_orchestration(path):
    if path.relative_to(SRC).parts[0] == "ops":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        for n in names:
            assert n.split(".")[0] not in {"prefect", "mlflow", "dvc"}, f"{path} imports {n}"


def test_one_class_named_registry():
    hits = [p for p in files() if re.search(r"^class Registry\b", p.read_text(), re.M)]
    assert [str(p.relative_to(SRC)) for p in hits] == ["registry.py"]
