"""The core in wings over one floor: the ground imports no wing, wings import no other wing, the evaluation wing never
imports the organism, and nothing in src/ imports Prefect, MLflow or DVC outside ops/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .imports import ROOT, imports_of

SRC = ROOT / "src" / "safepatching"
GROUND = {"config", "errors", "registry", "envdefaults", "chat", "refusals", "crash"}
WINGS = {"io", "batches", "patching", "merging", "evaluation", "organism"}
FLOOR = {"round", "select", "diagnose"}
ALLOWED_WINGS = {"io": set(), "batches": {"io"}, "patching": {"io"}, "merging": {"io"}, "evaluation": {"io"},
                 "organism": {"io"}}


def part(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else ""


def files():
    return sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", files(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_only(path):
    me = part("safepatching." + ".".join(path.relative_to(SRC).with_suffix("").parts))
    for mod in imports_of(path):
        other = part(mod)
        if not other or other == me or mod.split(".")[0] != "safepatching":
            continue
        if me in GROUND:
            assert other in GROUND, f"{path}: the ground floor imports {mod}"
        elif me in WINGS:
            assert other in GROUND or other in ALLOWED_WINGS[me], f"{path}: wing {me} imports {mod}"
        elif me in FLOOR:
            assert other != "ops", f"{path}: the round floor imports {mod}"


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
