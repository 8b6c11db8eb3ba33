"""`dvc repro` works as the README spells it (issue 21, item 5): the stages' commands call `python` from PATH, so a
bare `.venv/bin/dvc repro` outside an activated venv ran the system python (`No module named 'safepatching'`).
The README says `make repro`, whose `dvc` and stage `python` are the venv's, and spells no other way."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .imports import ROOT


def test_docs_spell_no_bare_venv_dvc_repro():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    bad = [f"{d.relative_to(ROOT)}:{i}" for d in docs for i, line in enumerate(d.read_text().splitlines(), 1)
           if re.search(r"\.venv/bin/dvc repro|^\s*dvc repro|or: dvc repro", line)]  # commands, not prose
    assert bad == []
    assert "make repro" in (ROOT / "README.md").read_text()


def _fake_venv_project(root: Path) -> None:
    """A copy of the Makefile over a stand-in venv whose install stamp is up to date (so make installs nothing) and
    whose `dvc` reports which `python` a stage command would run."""
    for f in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / f, root / f)
    bin_ = root / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\necho venv-python\n")
    (bin_ / "dvc").write_text('#!/bin/sh\necho "dvc $*"; echo "python=$(command -v python)"\n')
    for exe in bin_.iterdir():
        exe.chmod(0o755)
    stamp = root / ".venv" / ".installed"
    stamp.touch()
    newer = max((root / f).stat().st_mtime for f in ("requirements.txt", "pyproject.toml")) + 10
    os.utime(stamp, (newer, newer))


def run_make(root: Path, target: str, python: str | None = None) -> subprocess.CompletedProcess:
    """`make -s target` in the stand-in project (no venv activated); `python`: the stand-in venv python's script."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    if not (root / ".venv").exists():
        _fake_venv_project(root)
    if python is not None:
        (root / ".venv" / "bin" / "python").write_text(python)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root)}
    return subprocess.run([make, "-s", target], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_make_repro_runs_dvc_with_the_venv_python_first(tmp_path: Path):
    p = run_make(tmp_path, "repro")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines() == ["venv-python", "dvc repro", f"python={tmp_path / '.venv' / 'bin' / 'python'}"]


def test_make_run_exits_2_when_the_flow_exits_3(tmp_path: Path):
    """What the README documents: make's own code is 2 for any failing command; its last line carries the flow's."""
    p = run_make(tmp_path, "run",
                 '#!/bin/sh\ncase "$*" in *preflight*) echo "preflight $*";; *) echo "flow $*"; exit 3;; esac\n')
    assert p.returncode == 2
    assert p.stdout == ("preflight -m safepatching.ops.preflight --params params.yaml --record\n"
                        "flow -m flows.continual\n")
    assert re.search(r"\[Makefile:\d+: run\] Error 3$", p.stderr.strip()), p.stderr


def test_make_run_stops_at_a_failed_preflight(tmp_path: Path):
    """The preflight runs before the flow: a problem (exit 2) ends `make run` before Prefect or DVC start."""
    script = '#!/bin/sh\ncase "$*" in *preflight*) echo "preflight: 2 problems" >&2; exit 2;; *) echo "flow $*";; esac\n'
    for target in ("run", "repro"):
        p = run_make(tmp_path, target, script)
        assert p.returncode == 2 and p.stdout == "", (target, p.stdout)
        assert "preflight: 2 problems\n" in p.stderr and "flow" not in p.stderr
