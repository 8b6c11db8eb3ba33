"""Static import graph of the project's own modules (safepatching.*, stages.*, flows.*), from the source's AST
(function-level imports included): what a DVC stage's code really depends on."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
OWN = ("safepatching", "stages", "flows")


def module_file(mod: str) -> Path | None:
    base = SRC if mod.split(".")[0] == "safepatching" else ROOT
    p = base.joinpath(*mod.split("."))
    if (p / "__init__.py").exists():
        return p / "__init__.py"
    if p.with_suffix(".py").exists():
        return p.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC if SRC in path.parents else ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in `path` (absolute and relative imports, `from x import submodule`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in OWN and module_file(n) is not None:
                out.add(n)
    # importing a.b.c imports its packages a and a.b too
    for n in list(out):
        parts = n.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)) if module_file(".".join(parts[:i])))
    return out


def closure(mod: str) -> set[Path]:
    """Files of every project module `mod` imports, transitively (itself included)."""
    seen: set[str] = set()
    todo = [mod]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = module_file(m)
        if f is not None:
            todo.extend(imports_of(f) - seen)
    return {module_file(m).relative_to(ROOT) for m in seen if module_file(m) is not None}
