"""Flow plumbing that needs no Prefect server: params append, the workspace lock, timing parse, a round's stages."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.continual import WorkspaceBusy, round_stages, stage_seconds, workspace_lock
from safepatching.config import load_params
from safepatching.errors import ConfigError
from safepatching.ops.intake.paramsfile import append_round

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


def _try_lock_elsewhere(lock) -> str:
    """Try the lock from another process (a fork: no fresh interpreter to import Prefect into); 'TAKEN' or 'BUSY <msg>'."""
    import os

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            with workspace_lock(lock):
                out = "TAKEN"
        except WorkspaceBusy as e:
            out = f"BUSY {e}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_workspace_lock_is_exclusive_and_names_its_holder(tmp_path):
    """A refused run names the holder (pid) and leaves the holder's record intact (it used to truncate it)."""
    import json
    import os

    lock = tmp_path / "x.lock"
    with workspace_lock(lock):
        record = lock.read_text()
        assert json.loads(record)["pid"] == os.getpid()
        out = _try_lock_elsewhere(lock)
        assert out.startswith("BUSY") and f"pid {os.getpid()}" in out and "one at a time" in out, out
        assert lock.read_text() == record  # not truncated by the refused run
        with workspace_lock(lock):  # re-entrant in the holding process (main() and the flow both take it)
            pass
        assert _try_lock_elsewhere(lock).startswith("BUSY")  # still held after the inner release
    assert _try_lock_elsewhere(lock).startswith("TAKEN")  # released


def test_a_killed_holder_is_reported_by_the_next_run(tmp_path):
    """A run that dies holding the lock (no release: kill -9) leaves its record `running`; the next run says it resumes
    an interrupted run, once. A clean release says nothing."""
    import json
    import os

    lock, lines = tmp_path / "x.lock", []
    with workspace_lock(lock, log=lines.append):
        pass
    assert json.loads(lock.read_text())["state"] == "ended"
    with workspace_lock(lock, log=lines.append):
        pass
    assert lines == []
    pid = os.fork()
    if pid == 0:  # child: takes the lock and dies without letting go
        with workspace_lock(lock):
            os._exit(0)
    os.waitpid(pid, 0)
    assert json.loads(lock.read_text()) | {"pid": pid, "state": "running"} == json.loads(lock.read_text())
    with workspace_lock(lock, log=lines.append):
        pass
    assert len(lines) == 1 and lines[0].startswith(f"RESUMING: the previous run (pid {pid} ") and "interrupted" in lines[0]
    with workspace_lock(lock, log=lines.append):
        pass
    assert len(lines) == 1


def test_main_takes_the_lock_before_the_flow_starts(tmp_path, monkeypatch, capsys):
    """A refused `python -m flows.continual` exits 2 naming the holder and never starts the flow (nor its server)."""
    import flows.continual as fc

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    started = []
    monkeypatch.setattr(fc, "continual_psa", lambda *a, **k: started.append(1) or [])
    from safepatching.layout import Project

    lock = Project(tmp_path).lock
    import os

    r, w = os.pipe()
    holder = os.fork()
    if holder == 0:  # child: hold the lock until killed
        os.close(r)
        with workspace_lock(lock):
            os.write(w, b"held")
            import time
            time.sleep(60)
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 4) == b"held"
        monkeypatch.chdir(tmp_path)
        assert fc.main([]) == 2
        assert started == []
        assert f"held by another run (pid {holder} " in capsys.readouterr().err
    finally:
        os.kill(holder, 9)
        os.waitpid(holder, 0)
        os.close(r)
    assert fc.main([]) == 0 and started == [1]


def test_stage_seconds_parses_stage_output():
    out = "[world.py] done in 1.5s (process; 0.9s after imports)\nnoise\n[merge.py] done in 2.0s (process; 1s)\n"
    assert stage_seconds(out) == 3.5


def test_append_round_refuses_an_existing_name(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(PARAMS)
    with pytest.raises(ConfigError, match="already exists"):
        append_round(p, "r1", "data/batches/x.jsonl", "backbone")
    assert p.read_text() == PARAMS


def test_main_exits_3_and_names_what_needs_a_person(tmp_path, monkeypatch, capsys):
    """A quarantined batch no longer fails the flow; the run still ends visibly: ATTENTION lines and exit 3."""
    import flows.continual as fc

    monkeypatch.setenv("SAFEPATCHING_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    taken = {"ok": False, "added": [], "broken_rounds": ["r4"], "problems": ["round r4: its batch is missing"],
             "quarantined": [{"file": "a\nb.jsonl", "rule": "file_name", "report": "data/quarantine/a_b.jsonl.report.json"}]}
    monkeypatch.setattr(fc, "continual_psa", lambda *a, **k: fc.ContinualResult([], intake=taken, skipped=["r4", "r5"]))
    assert fc.main([]) == 3
    err = capsys.readouterr().err
    assert "ATTENTION" in err and "QUARANTINED 'a\\nb.jsonl' (file_name)" in err and "SKIPPED round r5" in err
    ok = fc.ContinualResult([{"round": "r1"}], intake={"ok": True})
    assert ok.ok and ok == [{"round": "r1"}] and not fc.ContinualResult([], intake=taken).ok


def test_round_stages_are_the_stages_iterating_over_a_round_keyed_section(tmp_path):
    do = {"do": {"cmd": "true"}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "world": {"cmd": "true"}, "evaluate_backbone": {"foreach": ["val", "test"], **do},
        "redteam": {"foreach": "${redteam}", **do}, "train": {"foreach": "${rounds}", **do},
        "extra": {"foreach": "${ nested.rounds }", **do}, "literal": {"foreach": {"r2": 1}, **do}}}, sort_keys=False))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "rounds": {"test": {"parent": "backbone"}, "r2": {"parent": "test"}}, "redteam": {"r2": {}},
        "nested": {"rounds": {"r2": {}}}}))
    assert round_stages("test", tmp_path) == ["train@test"]  # evaluate_backbone@test is no round's stage
    assert round_stages("r2", tmp_path) == ["redteam@r2", "train@r2", "extra@r2", "literal@r2"]
    with pytest.raises(ConfigError, match="no stage of round 'r9'"):  # never an empty `dvc repro` (= everything)
        round_stages("r9", tmp_path)


def test_round_stages_of_the_shipped_pipeline_are_every_stage_dvc_names_for_the_round():
    repo = Path(__file__).resolve().parents[2]
    names = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=repo, check=True,
                           capture_output=True, text=True).stdout.split()
    for r in yaml.safe_load((repo / "params.yaml").read_text())["rounds"]:
        assert sorted(round_stages(r, repo)) == sorted(n for n in names if n.endswith(f"@{r}")), r
