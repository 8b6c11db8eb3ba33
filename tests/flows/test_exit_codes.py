"""`python -m flows.continual` exit codes (issue 21, item 10): 0 done, 2 an error with one `error:` message (a failed
`dvc repro` too, not a traceback), 3 ATTENTION; the README documents exactly the codes main() returns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_failed_command_is_a_typed_error_with_its_last_lines(tmp_path, monkeypatch):
    import flows.continual as fc

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    with pytest.raises(fc.StageFailed, match=r"failed \(exit 4\); its last lines:\n(line \d+\n){30}$") as e:
        fc.sh(["sh", "-c", "for i in $(seq 1 40); do echo line $i; done; exit 4"])
    assert "line 11\n" in str(e.value) and "line 10\n" not in str(e.value)  # the last 30 of 40
    assert fc.sh(["sh", "-c", "echo ok"])[1] == "ok\n"


def test_main_exits_2_with_one_error_when_repro_fails(tmp_path, monkeypatch, capsys):
    import flows.continual as fc

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)

    def failing(*a, **k):
        raise fc.StageFailed("dvc repro validate@r1 failed (exit 1); its last lines:\nERROR: failed to reproduce\n")

    monkeypatch.setattr(fc, "continual_psa", failing)
    assert fc.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dvc repro validate@r1 failed (exit 1)") and "Traceback" not in err


def _returned_codes(func: str) -> set[int]:
    tree = ast.parse((ROOT / "flows" / "continual.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func)
    return {n.value.value for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Constant)}


def test_readme_documents_the_codes_main_returns():
    assert _returned_codes("main") == {0, 2, 3}
    readme = (ROOT / "README.md").read_text()
    para = readme[readme.index("**Exit codes**"):].split("\n\n")[0]
    assert {int(c) for c in re.findall(r"[:;] (\d) ", para)} == {0, 2, 3}
    assert "`make run` itself exits 2" in para and "Error 3" in para
