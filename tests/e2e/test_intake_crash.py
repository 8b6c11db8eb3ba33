"""Crash tests of the intake transaction with the real `dvc add` (slow: `pytest -m slow`).

A small git + DVC project (the shipped params.yaml with rounds r1, r2; a small eval split) takes in one batch in a
child process that is killed with SIGKILL at one step of the transaction; a second process then reruns the intake.
Asserted each time: nothing lost (the batch's bytes are in data/batches and in the DVC cache, or still in incoming),
the rerun reconciles and appends the round exactly once, tracked with the validated bytes, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..workspace import git_dvc_init, with_plain_rounds

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CHILD = r"""
import os, signal, subprocess, sys, time
from pathlib import Path
import safepatching.ops.intake.run as m
from safepatching.layout import Project

point, root = sys.argv[1], Path.cwd()

def die(step):
    if step == point:
        os.kill(os.getpid(), signal.SIGKILL)

def track(path):
    rel = os.path.relpath(path, root)
    if point == "during_track":  # kill `dvc add` and ourselves while it runs
        p = subprocess.Popen(["dvc", "add", rel], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(os.environ.get("KILL_AFTER", "2.0")))
        p.kill()
        os.kill(os.getpid(), signal.SIGKILL)
    subprocess.run(["dvc", "add", rel], check=True, capture_output=True)

def restore(path):
    subprocess.run(["dvc", "checkout", os.path.relpath(path, root) + ".dvc"], check=True, capture_output=True)

m._step = die if point != "none" else (lambda step: None)
res = m.intake(Project(root), root / "params.yaml", track=track, restore=restore)
print("RESULT " + __import__("json").dumps(res.as_dict()))
"""


def env() -> dict:
    e = dict(os.environ)
    e.update(PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
             PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return e


def sh(args, root, check=True, timeout=600) -> subprocess.CompletedProcess:
    p = subprocess.run(args, cwd=root, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def template(world_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash_template")
    for split in ("val", "test"):
        for f in sorted((world_dir / "eval" / split).glob("*.jsonl")):
            dest = root / "data/world/eval" / split / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text("".join(f.read_text().splitlines(keepends=True)[:20]))
    shutil.copytree(world_dir / "batches", root / "data/world/batches")
    text = with_plain_rounds((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(text)  # shipped stability_seconds: 0 (marker or rename)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "data" / "incoming").mkdir()
    shutil.copy(REPO / "data" / ".gitignore", root / "data" / ".gitignore")
    git_dvc_init(root, sh)
    return root


def intake_in_child(root: Path, point: str) -> subprocess.CompletedProcess:
    return sh([sys.executable, "-c", CHILD, point], root, check=False)


def params_rounds(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())["rounds"]


POINTS = ["before_move", "after_move", "before_track", "during_track", "after_track", "after_append"]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_then_rerun_registers_the_round_once(template, tmp_path, point):
    root = tmp_path / "proj"
    shutil.copytree(template, root, symlinks=True)
    source = (template / "data/world/batches/drugs.jsonl").read_bytes()
    (root / "data/incoming/k.jsonl").write_bytes(source)

    killed = intake_in_child(root, point)
    assert killed.returncode == -9, (killed.returncode, killed.stdout[-2000:], killed.stderr[-2000:])
    batch, incoming = root / "data/batches/r3_k.jsonl", root / "data/incoming/k.jsonl"
    # nothing lost at the kill: the bytes are in incoming or in data/batches
    assert (incoming.exists() and incoming.read_bytes() == source) or (batch.exists() and batch.read_bytes() == source)

    rerun = intake_in_child(root, "none")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    res = json.loads(rerun.stdout.split("RESULT ", 1)[1])
    out = rerun.stdout + rerun.stderr
    assert res["ok"] and res["quarantined"] == [] and res["problems"] == [], res
    if point != "before_move":
        assert res["reconciled"] and "reconciled" in out and "k.jsonl" in " ".join(res["reconciled"])
    rounds = params_rounds(root)
    assert list(rounds) == ["r1", "r2", "r3"] and rounds["r3"] == {"batch": "data/batches/r3_k.jsonl", "parent": "r2"}
    assert batch.read_bytes() == source and not incoming.exists()
    dvc = yaml.safe_load((root / "data/batches/r3_k.jsonl.dvc").read_text())
    md5 = hashlib.md5(source).hexdigest()
    assert dvc["outs"][0]["md5"] == md5
    assert (root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes() == source
    assert not (root / ".dvc/tmp/intake-journal.json").exists()
    assert not (root / "data/quarantine").exists()
    status = sh(["dvc", "status", "data/batches/r3_k.jsonl.dvc"], root)
    assert "up to date" in status.stdout
    sh(["dvc", "status"], root)  # DVC itself still parses params.yaml (no duplicate key, no broken quoting)

    again = intake_in_child(root, "none")  # a third run changes nothing
    res = json.loads(again.stdout.split("RESULT ", 1)[1])
    assert res["added"] == [] and res["reconciled"] == [] and params_rounds(root) == rounds
