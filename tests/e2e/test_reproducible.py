"""Lineage that reproduces (issue 20): the tiny pipeline run in two fresh workspaces, at two different paths, locks
the same hashes for every stage's outputs (and so for every dependency built from them). A wall-clock time, a date
or an absolute path in any file DVC hashes makes the two dvc.lock files differ (slow: `pytest -m slow`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from .test_pipeline import run, tiny_workspace

pytestmark = pytest.mark.slow


def hashes(lock: dict, part: str) -> dict[str, dict[str, str | None]]:
    """{stage: {path: md5}} of a dvc.lock's outs (or deps)."""
    return {stage: {e["path"]: e.get("md5") for e in entry.get(part, [])} for stage, entry in lock.items()}


def test_two_fresh_workspaces_lock_the_same_hashes(tmp_path):
    locks, seconds = [], []
    for root in (tmp_path / "a", tmp_path / "elsewhere" / "b"):  # different absolute paths
        tiny_workspace(root)
        t0 = time.perf_counter()
        run(["dvc", "repro"], root)
        seconds.append(time.perf_counter() - t0)
        locks.append(yaml.safe_load((root / "dvc.lock").read_text())["stages"])
    print(f"dvc repro: {seconds[0]:.1f}s and {seconds[1]:.1f}s")
    a, b = locks
    assert set(a) == set(b) and {"backbone", "validate@r1", "train_se@r1", "merge@r2", "evaluate@r2"} <= set(a)
    outs_a, outs_b = hashes(a, "outs"), hashes(b, "outs")
    differ = {s: sorted(p for p in outs_a[s] if outs_a[s][p] != outs_b[s].get(p)) for s in a if outs_a[s] != outs_b[s]}
    assert not differ, f"outputs that differ between two identical runs: {differ}"
    assert all(md5 for o in outs_a.values() for md5 in o.values())
    assert hashes(a, "deps") == hashes(b, "deps")
    assert (tmp_path / "a" / "dvc.lock").read_text() == (tmp_path / "elsewhere" / "b" / "dvc.lock").read_text()
    # the timings left the hashed files but still reach the logs and untracked files
    organism = yaml.safe_load((tmp_path / "a" / "models" / "backbone" / "organism.json").read_text())
    validation = yaml.safe_load((tmp_path / "a" / "artifacts" / "r1" / "validation.json").read_text())
    assert "train_seconds" not in organism and "seconds" not in validation
