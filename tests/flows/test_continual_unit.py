"""Flow plumbing that needs no Prefect server: params append, the workspace lock, timing parse."""

import pytest

from flows.continual import WorkspaceBusy, append_round, stage_seconds, workspace_lock
from safepatching.config import load_params
from safepatching.errors import ConfigError

PARAMS = """seed: 0
rounds:  # comment kept
  r1: {batch: data/world/batches/weapons.jsonl, parent: backbone}
"""


def test_append_round_keeps_comments_and_validates(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(PARAMS)
    append_round(p, "r2", "data/batches/r2_x.jsonl", "r1")
    assert "# comment kept" in p.read_text()
    assert load_params(p).lineage("r2") == ["r1", "r2"]
    before = p.read_text()
    with pytest.raises(ConfigError, match="rounds.r3.parent"):
        append_round(p, "r3", "data/batches/r3.jsonl", "nope")
    assert p.read_text() == before  # a broken params.yaml is never written


def test_workspace_lock_is_exclusive(tmp_path):
    lock = tmp_path / "x.lock"
    with workspace_lock(lock):
        with pytest.raises(WorkspaceBusy, match="one at a time"):
            with workspace_lock(lock):
                pass
    with workspace_lock(lock):  # released
        pass


def test_stage_seconds_parses_stage_output():
    out = "[world.py] done in 1.5s (process; 0.9s after imports)\nnoise\n[merge.py] done in 2.0s (process; 1s)\n"
    assert stage_seconds(out) == 3.5


def test_append_round_refuses_an_existing_name(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(PARAMS)
    with pytest.raises(ConfigError, match="already exists"):
        append_round(p, "r1", "data/batches/x.jsonl", "backbone")
    assert p.read_text() == PARAMS
