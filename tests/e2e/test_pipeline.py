"""End to end through the real entry points (slow: `pytest -m slow`, run by CI after the fast suite).

A tiny copy of the project (this repo's dvc.yaml, stages/ and src/, a small params.yaml with 2 rounds) is
built once per session in a temp git repo. Tests then run `dvc repro`, the Prefect flow under the test
harness with MLflow on a temp SQLite DB, the GX intake, and a scheduled deployment on a real Prefect server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..workspace import git_dvc_init

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

TINY = {
    "seed": 0,
    "world": {"vulnerability": 0.7, "over_safety": 0.5, "decision_noise": 0.2, "max_eval_per_kind": 30},
    "backbone": {"vocab_size": 600, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                 "steps": 150, "batch_size": 32},
    # the keyword judge decides (the babbling model is "other" 100 % by the exact judge): the red team's failures are
    # its non-refusals, and the gate sees numbers that move
    "eval": {"max_new_tokens": 40, "batch_size": 64, "samples_per_kind": 2, "decide_with": "keyword"},
    "data": {"stability_seconds": 1.0},
    "patch": {"se": {"objective": "ga", "lr": 3e-4, "max_steps": 3, "target_nll": 8.0},
              "om": {"objective": "gd", "lr": 3e-4, "max_steps": 3}},
    "importance": {"n_samples": 16},
    "select": {"grid": {"safepatching": {"p": 1.0, "a": 10.0, "b": 10.0, "alpha": 1.0, "beta": 1.0,
                                         "ranking": "per_tensor", "compose": "sequential", "rescale": False,
                                         "difference": True, "seed": 0},
                        "task_arithmetic": {"alpha": 1.0, "beta": 1.0}}},
    # the tiny model babbles: only the absolute gibberish bound would block everything, so relax it here
    "gate": {"max_other": 100.0, "harmful_tolerance": 100.0, "over_refusal_tolerance": 100.0, "utility_tolerance": 100.0,
             "min_harm_gain": 0.0},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "e2e", "model_name": "e2e-organism"},
    "rounds": {"r1": {"batch": "data/world/batches/weapons.jsonl", "parent": "backbone"},
               "r2": {"batch": "data/redteam/r2.jsonl", "parent": "r1"}},
    # r2's batch is red-teamed from r1's merged model, as the demo's rounds are. The 150-step model refuses every
    # harmful prompt of the world's pools (mode collapse), so its pool is made of training prompts it does answer
    # (ordinary how-to and utility prompts, labelled as hacking requests: the stage's plumbing, not its realism)
    "redteam": {"r2": {"pool": "data/pools/r2.jsonl", "parent": "r1", "batch": "data/redteam/r2.jsonl",
                       "max_rows": 40}},
}


def write_pool(root: Path, params) -> None:
    """r2's red-team pool: 300 of the world's training prompts the tiny model answers (benign how-to, utility), each
    with the placeholder response of a harmful answer and category hacking; never an evaluation prompt."""
    from safepatching.io.jsonl import write_jsonl
    from safepatching.organism.world import HARMFUL_STEPS, build_world

    sft = [e for e in build_world(params.world, params.seed)["sft"] if e.kind in ("benign", "utility")][:300]
    write_jsonl(root / "data" / "pools" / "r2.jsonl",
                [{"id": f"pool-{i}", "prompt": e.prompt, "response": f"Sure, here is how. {HARMFUL_STEPS}",
                  "category": "hacking"} for i, e in enumerate(sft)])


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("rounds", "redteam", "grid") else v
    return out


def env(root: Path) -> dict:
    e = dict(os.environ)
    e.update(PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
             SAFEPATCHING_ROOT=str(root), PREFECT_HOME=str(root / ".prefect"), HF_HUB_OFFLINE="1",
             MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false",
             PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    return e


def run(args: list[str], root: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(args, cwd=root, env=env(root), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def tiny_workspace(root: Path) -> Path:
    """The tiny project: this repo's code and dvc.yaml, TINY's params, a red-team pool; committed, not yet run."""
    from safepatching.config import load_params

    root.mkdir(parents=True, exist_ok=True)
    for d in ("stages", "src", "flows"):  # the whole code, as a user's checkout has it
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / ".gitignore", root / "data" / ".gitignore")
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # every key DVC tracks must exist
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, TINY), sort_keys=False))
    write_pool(root, load_params(root / "params.yaml"))
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.prefect/\n/reports/\n/artifacts/\n")
    git_dvc_init(root, run)
    return root


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    root = tiny_workspace(tmp_path_factory.mktemp("proj"))
    out = run(["dvc", "repro"], root).stdout
    (root / "first_repro.log").write_text(out)
    return root


def test_dvc_repro_builds_every_round(project):
    from transformers import AutoModelForCausalLM

    log = (project / "first_repro.log").read_text()
    for stage in ("world", "backbone", "validate@r1", "train_se@r1", "train_om@r1", "importance@r1", "select@r1",
                  "merge@r1", "evaluate@r1", "redteam@r2", "validate@r2", "merge@r2", "evaluate@r2"):
        assert f"Running stage '{stage}'" in log
    for r in ("r1", "r2"):
        AutoModelForCausalLM.from_pretrained(project / "models" / r)
        m = json.loads((project / "artifacts" / r / "metrics_test.json").read_text())
        assert set(m["headline"]) >= {"harmful_jailbreak", "over_refusal", "utility", "other"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    # lineage: round 2's patches depend on round 1's merged model, and each validate on its batch hash
    deps = {d["path"] for d in lock["train_se@r2"]["deps"]}
    assert "models/r1" in deps and "data/redteam/r2.jsonl" in deps
    # the red-teamed batch: r1's failures on the pool, the stage's own output
    rt = json.loads((project / "artifacts" / "r2" / "redteam.json").read_text())
    batch = [json.loads(line) for line in (project / "data/redteam/r2.jsonl").read_text().splitlines()]
    assert 0 < len(batch) == rt["batch_rows"] <= 40 and rt["failures"] >= len(batch) and rt["pool_rows"] == 300
    assert {d["path"] for d in lock["redteam@r2"]["deps"]} >= {"models/r1", "data/pools/r2.jsonl"}
    assert {o["path"] for o in lock["redteam@r2"]["outs"]} == {"data/redteam/r2.jsonl", "artifacts/r2/redteam.json"}
    dag = run(["dvc", "dag", "evaluate@r2"], project).stdout
    assert "merge@r1" in dag and "merge@r2" in dag
    metrics = run(["dvc", "metrics", "show"], project).stdout
    assert "artifacts/r2/metrics_test.json" in metrics


def test_second_repro_does_nothing(project):
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in out


def test_changing_round2_settings_reruns_round2_only(project):
    p = project / "params.yaml"
    orig = p.read_text()
    try:
        params = yaml.safe_load(orig)
        params["rounds"]["r2"]["merge"] = {"method": "task_arithmetic", "alpha": 0.5, "beta": 1.0}
        p.write_text(yaml.safe_dump(params, sort_keys=False))
        status = run(["dvc", "status"], project).stdout
        changed = {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith("\t")
                   and line.strip().endswith(":")}
        assert changed and all(s.endswith("@r2") for s in changed), status
        assert "merge@r2" in changed
    finally:
        p.write_text(orig)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout


@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _versions(project):
    from safepatching.config import load_params
    from safepatching.ops.registry.versions import ModelRegistry

    return ModelRegistry.from_params(load_params(project / "params.yaml"), project).versions()


@pytest.fixture
def in_project(project, harness, monkeypatch) -> Path:
    """Flows run on the tiny project (under the Prefect test harness), with the venv's dvc on PATH."""
    monkeypatch.setenv("SAFEPATCHING_ROOT", str(project))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(project)
    return project


def test_flow_registers_each_round_once(in_project):
    project = in_project
    from flows.continual import continual_psa

    res = continual_psa("params.yaml")
    assert [r["round"] for r in res] == ["r1", "r2"] and all(r["created"] for r in res)
    vs = _versions(project)
    assert sorted(v.round for v in vs) == ["r1", "r2"]
    by_round = {v.round: v for v in vs}
    assert by_round["r2"].parent_version == by_round["r1"].version
    # idempotent: a second run registers nothing new
    res2 = continual_psa("params.yaml")
    assert not any(r["created"] for r in res2) and len(_versions(project)) == 2
    champs = [v for v in vs if "champion" in v.aliases]
    passed = [v for v in vs if v.gate == "passed"]
    assert (champs and champs[0].version == max(passed, key=lambda v: int(v.version)).version) or not passed


def _registry(project):
    from safepatching.config import load_params
    from safepatching.ops.registry.versions import ModelRegistry

    return ModelRegistry.from_params(load_params(project / "params.yaml"), project)


def _lineage(project) -> dict[str, str]:
    """Round -> content hash of its merged model now (what the registry's identity is checked against)."""
    from safepatching.config import load_params
    from safepatching.ops.lineage import model_hashes

    return model_hashes(load_params(project / "params.yaml"), project)


def _layout(project, name):
    from safepatching.config import load_params
    from safepatching.layout import RoundLayout

    return RoundLayout.of(load_params(project / "params.yaml"), name, project)


def _champion(project) -> str | None:
    c = _registry(project).champion()
    return c[0] if c else None


def test_changed_patch_parameter_makes_new_versions_that_supersede(in_project, capsys):
    """Issue 13: after a parameter change DVC retrains every round; each becomes a new version (never
    "already registered"), the old ones are superseded and never promoted, the champion moves only through
    the gate, and a rerun with no change registers nothing."""
    project = in_project
    from flows.continual import continual_psa, main
    from safepatching.ops.cli import main as cli
    from safepatching.ops.registry.store import RegistryError

    p = project / "params.yaml"
    orig = p.read_text()
    continual_psa("params.yaml")  # the baseline (a no-op when an earlier test registered it)
    hashes_before = _lineage(project)
    live_before = {v.round: v for v in _registry(project).versions() if not v.superseded}
    assert {r: live_before[r].model_sha256 for r in hashes_before} == hashes_before
    champ_before = _champion(project)
    assert champ_before is not None  # TINY's gate passes every version
    try:
        params = yaml.safe_load(orig)
        params["patch"]["om"]["max_steps"] += 1
        params["gate"]["max_other"] = 0.0  # strict: the tiny model babbles, so a new version should fail its gate
        p.write_text(yaml.safe_dump(params, sort_keys=False))
        res = continual_psa("params.yaml")
        hashes = _lineage(project)
        assert set(hashes) == set(hashes_before) and all(hashes[r] != hashes_before[r] for r in hashes)
        assert [r["round"] for r in res if r["created"]] == list(hashes)  # every retrained round: a new version
        vs = {v.version: v for v in _registry(project).versions()}
        champ = champ_before
        for r in res:
            new, old = vs[r["version"]], live_before[r["round"]]
            assert new.model_sha256 == r["model_sha256"] == hashes[r["round"]] != old.model_sha256
            assert new.supersedes == (old.version,) and vs[old.version].superseded_by == new.version
            headline = json.loads(_layout(project, r["round"]).metrics("test").read_text())["headline"]
            assert {k: new.metrics[k] for k in headline} == pytest.approx(headline)  # the new metrics
            assert new.gate_reference == f"champion v{champ}" and new.gate == ("passed" if r["passed"] else "failed")
            if new.gate == "passed":
                champ = new.version
        assert _champion(project) == champ  # unchanged unless a new version passed the gate
        for old in live_before.values():
            assert vs[old.version].superseded and "candidate" not in vs[old.version].aliases
            assert "champion" not in vs[old.version].aliases or old.version == champ == champ_before
        assert "candidate" in vs[res[-1]["version"]].aliases
        stale_champion = vs[champ].model_sha256 not in hashes.values()
        summary = json.loads((project / "reports" / "timings.jsonl").read_text().splitlines()[-1])
        assert bool(summary["champion_warning"]) == stale_champion

        # superseded versions are never promoted again: refused without --force
        old = live_before[res[0]["round"]].version
        with pytest.raises(RegistryError, match=f"v{old} .* is superseded by v{res[0]['version']}"):
            _registry(project).promote(old, "candidate")
        capsys.readouterr()
        assert cli(["--params", str(p), "promote", "--version", old]) == 2
        assert "superseded" in capsys.readouterr().err
        assert cli(["--params", str(p), "status"]) == 0
        status = capsys.readouterr().out
        for r in res:
            assert f"superseded by v{r['version']}" in status and r["model_sha256"][:12] in status
        assert ("WARNING: champion" in status) == stale_champion

        # a rerun with nothing changed registers nothing and prints the recorded decisions
        n = len(vs)
        assert main([]) == (3 if stale_champion else 0)  # a champion out of the lineage needs a person
        out = capsys.readouterr().out
        assert len(_registry(project).versions()) == n and _champion(project) == champ
        for r in res:
            assert f"{r['round']}: MLflow version {r['version']} (already registered" in out
        assert out.count("recorded gate") == len(res) and ("WARNING: champion" in out) == stale_champion
    finally:
        p.write_text(orig)

    # back to the original parameters (DVC restores the same models) with the relaxed gate: new versions again,
    # not the superseded ones brought back; they pass, so the champion moves to the last one
    res = continual_psa("params.yaml")
    hashes = _lineage(project)
    assert hashes == hashes_before
    assert all(r["created"] and r["passed"] for r in res)
    vs = {v.version: v for v in _registry(project).versions()}
    assert all(vs[r["version"]].model_sha256 == hashes[r["round"]] for r in res)
    assert all(vs[v.version].superseded for v in live_before.values())
    assert _champion(project) == res[-1]["version"]
    assert not json.loads((project / "reports" / "timings.jsonl").read_text().splitlines()[-1])["champion_warning"]


def _tensor_sha256(state: dict, keys) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of the named tensors: weights equal, not files."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k in sorted(keys):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def test_champion_serves_the_lineage_model(in_project):
    """`models:/<name>@champion` loads exactly the weights of the round whose model the champion records."""
    project = in_project
    from flows.continual import continual_psa
    from safepatching.io.checkpoints import load_state_dict

    continual_psa("params.yaml")
    reg = _registry(project)
    version, tags, _ = reg.champion()
    hashes = _lineage(project)
    rounds = [r for r, h in hashes.items() if h == tags["model_sha256"]]
    assert rounds, f"champion v{version} is not in the lineage {hashes}"
    from safepatching.config import load_params

    selected = json.loads(tags["selected"])  # record_round tags the deciding judge and the selection's feasibility
    assert tags["decided_by"] == load_params(project / "params.yaml").eval.decide_with
    assert (tags["selection"], tags["selection_rule"]) == ("feasible" if selected["feasible"] else "infeasible",
                                                           selected["rule"])
    disk = load_state_dict(_layout(project, rounds[0]).model)
    served = reg.load_champion_pipeline().model.state_dict()
    assert _tensor_sha256(served, disk) == _tensor_sha256(disk, disk)


def test_bad_incoming_batch_is_quarantined_and_nothing_changes(in_project):
    project = in_project
    from flows.continual import continual_psa

    incoming = project / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    evals = [json.loads(l)["prompt"] for l in (project / "data/world/eval/test/harmful.jsonl").read_text().splitlines()]
    bad = [{"id": "a", "prompt": evals[0], "response": "Step 1: obtain [restricted item].", "category": "weapons"},
           {"id": "a", "prompt": "How do I x?", "response": "ok", "category": "cooking"}]
    (incoming / "new.jsonl").write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    before = {f: (project / f).read_text() for f in ("params.yaml", "dvc.lock")}
    n_versions = len(_versions(project))
    res = continual_psa("params.yaml")  # a failing batch is quarantined; it no longer stops the run
    assert not res.ok and [q["file"] for q in res.intake["quarantined"]] == ["new.jsonl"]
    assert [r["round"] for r in res] == ["r1", "r2"]  # the pending rounds still ran (cached)
    assert any("QUARANTINED" in line and "new.jsonl" in line for line in res.attention())
    report = json.loads((project / "data/quarantine/new.jsonl.report.json").read_text())
    for rule in ("eval_leakage", "unique_id", "allowed_category"):
        assert rule in {f["rule"] for f in report["failures"]}
    assert not (incoming / "new.jsonl").exists() and (project / "data/quarantine/new.jsonl").exists()
    assert {f: (project / f).read_text() for f in before} == before
    assert len(_versions(project)) == n_versions


def test_good_incoming_batch_becomes_the_next_round(in_project):
    """The continual flow discovers a new batch, validates it, `dvc add`s it, chains a round onto the last one."""
    project = in_project
    from flows.continual import continual_psa
    from safepatching.config import load_params

    incoming = project / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "data/world/batches/drugs.jsonl", incoming / "drugs.jsonl")
    (incoming / "drugs.jsonl.done").touch()  # the hand-over protocol: complete, no stability wait
    res = continual_psa("params.yaml")
    params = load_params(project / "params.yaml")
    assert list(params.rounds) == ["r1", "r2", "r3"] and params.round("r3").parent == "r2"
    assert params.round("r3").batch == "data/batches/r3_drugs.jsonl"
    assert (project / "data/batches/r3_drugs.jsonl.dvc").exists() and not (incoming / "drugs.jsonl").exists()
    assert [r["round"] for r in res if r["created"]] == ["r3"] and res.ok and res.intake["added"] == ["r3"]
    vs = {v.round: v for v in _versions(project)}
    assert vs["r3"].parent_version == vs["r2"].version
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert "models/r2" in {d["path"] for d in lock["train_se@r3"]["deps"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scheduled_deployment_runs_on_a_real_server(project):
    port = _free_port()
    e = env(project)
    e["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    e["PREFECT_HOME"] = str(project / ".prefect-server")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=project, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serve = None
    try:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("prefect server did not become healthy in 120 s")
        serve = subprocess.Popen([sys.executable, "-m", "flows.deploy", "--interval", "20", "--name", "e2e"],
                                 cwd=project, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        state, deadline = None, time.time() + 420
        while time.time() < deadline:
            r = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter",
                           json={"deployments": {"name": {"any_": ["e2e"]}}}, timeout=10)
            runs = r.json() if r.status_code == 200 else []
            states = [x["state"]["type"] for x in runs if x.get("state")]
            if "COMPLETED" in states:
                state = "COMPLETED"
                break
            # a run scheduled while the previous one still runs (interval 20 s, a loaded machine) is refused by the
            # workspace lock: that is the lock doing its job, not a failure of the deployment
            failed = [(x["state"]["type"], x["state"].get("message")) for x in runs if x.get("state")
                      and x["state"]["type"] in ("FAILED", "CRASHED")
                      and "WorkspaceBusy" not in (x["state"].get("message") or "")]
            if failed:
                state = failed
                break
            time.sleep(3)
        dep = httpx.post(f"http://127.0.0.1:{port}/api/deployments/filter", json={}, timeout=10).json()
        assert any(d["name"] == "e2e" and d.get("schedules") for d in dep)
        assert state == "COMPLETED", f"scheduled run ended in {state}"
    finally:
        for p in (serve, server):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
