"""A patch folder (a DVC output) comes out byte-identical when trained twice: no wall-clock time, date or absolute
path in it. The slow twin, tests/e2e/test_reproducible.py, checks every stage's outputs (the backbone's too)."""

from __future__ import annotations

import json
from pathlib import Path

from safepatching.config import ObjectiveCfg
from safepatching.io.jsonl import read_jsonl
from safepatching.patching.train import train_patch


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_patch_folder_is_the_same_bytes_twice(tiny_organism, world_dir, tmp_path, monkeypatch):
    pairs = [(r["prompt"], r["response"]) for r in read_jsonl(world_dir / "batches" / "weapons.jsonl")][:8]
    cfg = ObjectiveCfg(objective="ga", lr=1e-3, max_steps=2, batch_size=8)
    monkeypatch.chdir(tiny_organism.parent)  # the base as a relative path, as the stages give it
    base = Path(tiny_organism.name)
    m = train_patch(base, pairs, tmp_path / "a", cfg, seed=0, log=lambda s: None)
    train_patch(base, pairs, tmp_path / "b", cfg, seed=0, log=lambda s: None)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert m["seconds"] >= 0 and "seconds" not in json.loads((tmp_path / "a" / "manifest.json").read_text())
