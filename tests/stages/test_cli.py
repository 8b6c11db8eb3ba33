"""Stage processes: the exit code and every line printed reach the caller through pipes, with the fast exit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stage(args: list[str], cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_typed_error_exits_2_with_its_message_flushed(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\nnot_a_section: 1\n")
    r = _stage(["stages.validate", "--round", "r1"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and "not_a_section" in r.stderr


@pytest.mark.parametrize("rank", [None, "0"])
def test_success_exits_0_with_stdout_flushed(tmp_path, rank):
    """world (no torch) on a tiny world: exit 0 and the stage's last line (printed just before the exit) arrives,
    both with the fast exit and under a launcher's RANK (normal interpreter exit)."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    r = _stage(["stages.world"], tmp_path, {"RANK": rank} if rank is not None else None)
    assert r.returncode == 0, r.stderr
    assert "[world.py] done in" in r.stdout.splitlines()[-1]
    assert (tmp_path / "data/world/meta.json").is_file()


def test_end_process_keeps_the_code_and_unflushed_output(tmp_path):
    code = ("import sys; sys.path[:0] = [%r, %r]\n"
            "from stages._cli import end_process\n"
            "sys.stdout.write('x' * 100000 + 'END')\n"  # no newline, larger than a pipe buffer
            "end_process(7)\n") % (str(ROOT / "src"), str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 7
    assert r.stdout.endswith("END") and len(r.stdout) == 100003
