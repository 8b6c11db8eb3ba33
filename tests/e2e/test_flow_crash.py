"""Kill -9 of the whole flow at each step of a round, then a rerun (slow: `pytest -m slow`).

A copy of a small workspace (r1 registered, champion v1) gets a new batch in data/incoming/ and runs the real entry
point (`python -m flows.continual`) with $SAFEPATCHING_CRASH_AT set: at that point the flow's process group -- the
flow, `dvc repro`, the running stage -- dies at once (safepatching.crash). A second run without it must finish the job.

Asserted after the kill: the champion alias is unchanged, nothing half-written is published (a round's model folder
only with its merge manifest, a patch or score folder only with its manifest), the batch is not lost. After the rerun:
exit 0, a line saying it resumes an interrupted run (and the point's own repair), that it took over the dead run's
rounds slot at once (no wait for its lease), the batch is round r2 with its bytes
tracked by DVC, exactly one complete MLflow version for r2 (its model's hash), no run left RUNNING, no `.tmp-*` /
`.old-*` debris, `dvc status` clean, and the template was never written to.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from .flowspace import copy_workspace, files, registry, run_flow, sh

pytestmark = pytest.mark.slow

# id -> ($SAFEPATCHING_CRASH_AT, what the rerun must also say)
POINTS = {
    "intake_before_dvc_add": ("intake.before_track", "reconciled"),
    "intake_after_dvc_add": ("intake.after_track", "reconciled"),
    "train_se": ("train_se@r2:publish", "Running stage 'train_se@r2'"),
    "importance": ("importance@r2:publish", "Running stage 'importance@r2'"),
    "select": ("select@r2:select.outputs", "Running stage 'select@r2'"),
    "merge_writing_tmp": ("merge@r2:merge.shards", "Running stage 'merge@r2'"),
    "evaluate": ("evaluate@r2:evaluate.outputs", "Running stage 'evaluate@r2'"),
    "register_run_open": ("register.run", "left RUNNING by an interrupted registration as KILLED"),
    "register_version_made": ("register.version", "finished the interrupted registration of version 2"),
}


def _debris(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for d in ("models", "artifacts", "data") if (root / d).exists()
                  for p in (root / d).rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def _unpublished_halves(root: Path) -> list[str]:
    """Round artefact folders visible under their final name without the manifest their writer puts in last."""
    bad = []
    for m in (root / "models").iterdir():
        if m.is_dir() and m.name != "backbone" and "." not in m.name and not (m / "merge_manifest.json").is_file():
            bad.append(str(m.relative_to(root)))
    for d in (root / "artifacts").glob("r*/*"):
        if d.is_dir() and d.name in ("se", "om", "scores_se", "scores_om") and not (d / "manifest.json").is_file():
            bad.append(str(d.relative_to(root)))
    return bad


def _assert_killed_where_it_says(root: Path, point: str) -> None:
    """The state a kill at `point` leaves: the step before it done, the step itself not finished or published."""
    done = set(yaml.safe_load((root / "dvc.lock").read_text())["stages"])
    rounds = yaml.safe_load((root / "params.yaml").read_text())["rounds"]
    art, batch = root / "artifacts/r2", root / "data/batches/r2_k.jsonl"

    def tmp_of(final: Path) -> Path:
        (t,) = list(final.parent.glob(final.name + ".tmp-*"))
        assert not final.exists()  # only the unpublished .tmp-<pid> folder has it
        return t

    def stages(finished: str | None, unfinished: str) -> None:
        assert finished is None or finished in done, (finished, sorted(done))
        assert unfinished not in done, (unfinished, sorted(done))

    if point.startswith("intake."):
        assert batch.is_file() and "r2" not in rounds
        assert (batch.with_name(batch.name + ".dvc")).exists() == (point == "intake.after_track")
    elif point == "train_se@r2:publish":
        stages("validate@r2", "train_se@r2")
        t = tmp_of(art / "se")
        assert (t / "patch.safetensors").is_file() and (t / "manifest.json").is_file()
    elif point == "importance@r2:publish":
        stages("train_om@r2", "importance@r2")
        assert (tmp_of(art / "scores_se") / "scores.safetensors").is_file()
    elif point == "select@r2:select.outputs":
        stages("importance@r2", "select@r2")
        assert (art / "select/selected.json").is_file() and not (art / "select/pareto.png").exists()
    elif point == "merge@r2:merge.shards":
        stages("select@r2", "merge@r2")
        t = tmp_of(root / "models/r2")
        assert any(t.glob("*.safetensors")) and not (t / "merge_manifest.json").exists()
    elif point == "evaluate@r2:evaluate.outputs":
        stages("merge@r2", "evaluate@r2")
        assert (art / "metrics_test.json").is_file()
    elif point.startswith("register."):
        stages("evaluate@r2", "nothing")
        reg = registry(root)
        running = reg.client.search_runs([reg.experiment_id()], filter_string="attributes.status = 'RUNNING'")
        assert [r.data.tags.get("round") for r in running] == ["r2"]
        versions = _r2_versions(root)
        assert len(versions) == (point == "register.version")
        assert all(reg.client.get_model_version(reg.model_name, v.version).tags.get("registered") != "complete"
                   for v in versions)
    else:
        raise AssertionError(f"no expectation for {point}")


def _r2_versions(root: Path) -> list:
    return [v for v in registry(root).versions() if v.round == "r2"]


@pytest.mark.parametrize("case", list(POINTS))
def test_kill_the_flow_then_rerun(flow_template, prefect_api, tmp_path, case):
    point, needle = POINTS[case]
    template_files = files(flow_template)
    root = copy_workspace(flow_template, tmp_path / "ws")
    source = (root / "data/world/batches/drugs.jsonl").read_bytes()
    (root / "data/incoming/k.jsonl").write_bytes(source)
    (root / "data/incoming/k.jsonl.done").touch()
    champion = registry(root).champion()[0]
    assert champion == "1"

    killed = run_flow(root, prefect_api, SAFEPATCHING_CRASH_AT=point)
    out = killed.stdout + killed.stderr
    assert killed.returncode == -9, f"{point}: exit {killed.returncode}\n{out[-4000:]}"
    assert registry(root).champion()[0] == champion  # the killed run moved no alias
    assert _unpublished_halves(root) == []
    batch, incoming = root / "data/batches/r2_k.jsonl", root / "data/incoming/k.jsonl"
    assert (incoming.exists() and incoming.read_bytes() == source) or batch.read_bytes() == source  # not lost
    assert len(_r2_versions(root)) == (1 if point == "register.version" else 0)
    _assert_killed_where_it_says(root, point)

    rerun = run_flow(root, prefect_api)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, f"rerun after {point}: exit {rerun.returncode}\n{out[-4000:]}"
    assert "RESUMING: the previous run" in out and "was interrupted" in out
    assert needle in out, f"rerun after {point} does not say {needle!r}:\n{out[-4000:]}"
    # the killed run held the rounds slot of the shared server (taken before intake): its lease is released at once
    assert "TAKEOVER: the rounds slot 'safepatching-rounds' was held by" in out and "WAITING" not in out

    rounds = yaml.safe_load((root / "params.yaml").read_text())["rounds"]
    assert list(rounds) == ["r1", "r2"] and rounds["r2"] == {"batch": "data/batches/r2_k.jsonl", "parent": "r1"}
    assert batch.read_bytes() == source and not incoming.exists()
    md5 = hashlib.md5(source).hexdigest()
    assert yaml.safe_load((root / "data/batches/r2_k.jsonl.dvc").read_text())["outs"][0]["md5"] == md5
    assert (root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes() == source

    from safepatching.io.checkpoints import sha256_dir

    (v,) = _r2_versions(root)  # exactly one version for the round
    reg = registry(root)
    assert v.model_sha256 == sha256_dir(root / "models/r2") and v.parent_version == champion
    assert reg.client.get_model_version(reg.model_name, v.version).tags.get("registered") == "complete"
    running = reg.client.search_runs([reg.experiment_id()], filter_string="attributes.status = 'RUNNING'")
    assert running == []
    assert registry(root).champion()[0] == (v.version if v.gate == "passed" else champion)
    assert _debris(root) == [] and _unpublished_halves(root) == []
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], root).stdout
    assert not (root / ".dvc/tmp/intake-journal.json").exists()
    assert files(flow_template) == template_files  # the copy never wrote into the template (MLflow store included)
    shutil.rmtree(root)  # keep tmp small: 9 workspaces
