"""The lineage side of registry identity (no MLflow): DVC stage hashes, version states, the champion check."""

from __future__ import annotations

from pathlib import Path

import yaml

from safepatching.ops.lineage import champion_warning, dvc_outs_md5, dvc_stage_hash, model_hashes, version_state
from safepatching.ops.record import RecordResult, summary_line
from safepatching.ops.registry.rows import VersionRow

LOCK = {"schema": "2.0", "stages": {"merge@r1": {
    "cmd": "python -m stages.merge --round r1",
    "deps": [{"path": "models/backbone", "hash": "md5", "md5": "b" * 32 + ".dir"}],
    "params": {"params.yaml": {"merge": {"alpha": 1.0}}},
    "outs": [{"path": "models/r1", "hash": "md5", "md5": "a" * 32 + ".dir"}]}}}


def _row(version: str, round_: str, model: str, aliases=(), superseded_by: str = "") -> VersionRow:
    return VersionRow(version=version, round=round_, parent_version="none", gate="passed", aliases=tuple(aliases),
                      batch_sha256="x", run_id=None, metrics={}, model_sha256=model, superseded_by=superseded_by)


def test_stage_hash_follows_the_lock_entry(tmp_path: Path) -> None:
    assert dvc_stage_hash(tmp_path, "merge@r1") == "" and dvc_outs_md5(tmp_path, "merge@r1") == ""
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    h = dvc_stage_hash(tmp_path, "merge@r1")
    assert len(h) == 64 and dvc_outs_md5(tmp_path, "merge@r1") == "a" * 32 + ".dir"
    assert dvc_stage_hash(tmp_path, "merge@r9") == ""
    LOCK["stages"]["merge@r1"]["outs"][0]["size"] = 123  # bookkeeping only: same identity
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    assert dvc_stage_hash(tmp_path, "merge@r1") == h
    LOCK["stages"]["merge@r1"]["params"]["params.yaml"]["merge"]["alpha"] = 2.0  # another recipe
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK, sort_keys=False))
    assert dvc_stage_hash(tmp_path, "merge@r1") not in ("", h)


def test_model_hashes_cover_rounds_with_a_model(tmp_path: Path) -> None:
    from safepatching.config import load_params
    from safepatching.io.checkpoints import sha256_dir

    (tmp_path / "params.yaml").write_text("rounds:\n  r1: {batch: b.jsonl, parent: backbone}\n"
                                          "  r2: {batch: c.jsonl, parent: r1}\n")
    for name in ("r1", "r2"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text("{}")
    (tmp_path / "models" / "r1" / "model.safetensors").write_bytes(b"weights")  # r2 has no weights: skipped
    hashes = model_hashes(load_params(tmp_path / "params.yaml"), tmp_path)
    assert hashes == {"r1": sha256_dir(tmp_path / "models" / "r1")}


def test_version_state_and_champion_warning() -> None:
    hashes = {"r1": "h1", "r2": "h2"}
    rows = [_row("1", "r1", "h0", superseded_by="3"), _row("2", "r2", "h2"), _row("3", "r1", "h1"),
            _row("4", "r9", "")]
    assert [version_state(r, hashes) for r in rows] == [
        "superseded by v3", "current", "current", "legacy (no model hash)"]
    assert version_state(_row("5", "r1", "hX"), hashes) == "stale (not in lineage)"
    assert champion_warning(rows, hashes) is None  # no champion
    assert champion_warning([*rows[1:], _row("1", "r1", "h0", ["champion"], "3")], hashes) == (
        "champion v1 (r1, model h0, superseded by v3) is not in the lineage: no round in params.yaml has that model "
        "now; models:/…@champion serves weights the lineage no longer has, and the gate of every new round compares "
        "against it (reference: champion v1); promote a current version to end this")
    assert champion_warning([_row("2", "r2", "h2", ["champion"])], hashes) is None
    assert "no recorded model hash" in champion_warning([_row("4", "r9", "", ["champion"])], hashes)


def test_record_result_lines() -> None:
    new = RecordResult("r1", "3", True, False, ["over_refusal=5.00 violates over_refusal <= 2.00 (x)"],
                       "champion v2", "f" * 64, "d" * 64, ["1"])
    assert new.line() == ("r1: MLflow version 3 (new, supersedes v1; model ffffffffffff); gate FAILED vs champion v2: "
                          "over_refusal=5.00 violates over_refusal <= 2.00 (x)")
    old = RecordResult("r2", "2", False, True, [], "backbone", "e" * 64, "d" * 64)
    assert summary_line({**old.as_dict(), "repro_wall": 1.0}) == (
        "r2: MLflow version 2 (already registered; model eeeeeeeeeeee); recorded gate PASSED vs backbone")
