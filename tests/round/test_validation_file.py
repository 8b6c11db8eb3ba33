"""validation.json (a DVC output, and a dependency of both patches) is the same bytes when a batch is validated twice
in two workspaces: no wall-clock time or absolute path in it; the time still reaches the log and the report."""

from __future__ import annotations

import json
import shutil

from safepatching.layout import RoundLayout
from safepatching.round.steps.validate import validate


def test_validation_json_is_the_same_bytes_in_two_workspaces(shipped_params, world_dir, tmp_path, monkeypatch):
    written, logs, reports = [], [], []
    for name in ("a", "elsewhere/b"):
        root = tmp_path / name
        shutil.copytree(world_dir / "eval", root / "data" / "world" / "eval")
        batch = root / shipped_params.round("r1").batch
        batch.parent.mkdir(parents=True)
        shutil.copy(world_dir / "batches" / "weapons.jsonl", batch)
        monkeypatch.chdir(root)  # the stages run in the project root with --root .
        reports.append(validate(shipped_params, RoundLayout.of(shipped_params, "r1"), log=logs.append))
        written.append((root / "artifacts" / "r1" / "validation.json").read_bytes())
    assert written[0] == written[1]
    tracked = json.loads(written[0])
    assert tracked["success"] and "seconds" not in tracked
    assert all(r["seconds"] >= 0 for r in reports) and all(line.endswith("s") and " in " in line for line in logs)
