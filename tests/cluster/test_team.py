"""A team in miniature on the session cluster (tests/cluster/conftest.py): two machines = two fresh `git clone`s of one
origin, nothing shared but the servers (git origin, Prefect, MLflow on PostgreSQL + S3, the DVC remote in the bucket).

  A   deploys prefect.yaml on a work pool of its own; a process worker whose only link to A is its installed package
      (PYTHONPATH=<A>/src, started in another folder) runs r1: version, tags and model artifact on the server and in
      the bucket, nothing of MLflow on A's disk, A's DVC outputs pushed to the bucket.
  B   a second clone; its worker runs the SAME deployment (registered from A) from B's checkout: pulls what it lacks,
      takes a new batch from data/incoming, runs r2: v2 with parent v1, `models:/...@champion` = B's models/r2.
  A+B two runs started at once hold the server's rounds slot one after the other (intervals from Prefect's API).
  bad keys for the DVC remote: one-line error naming the remote, the batch stays in data/incoming, nothing registered.

The organism is tiny (tests/e2e/test_pipeline.TINY, shrunk further); the whole cycle's wall time is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from ..e2e.test_pipeline import TINY, deep_merge
from ..workspace import git_dvc_init
from . import servers
from .conftest import fresh_name

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOYMENT = "continual-psa/continual-psa-nightly"
TINIER = {"world": {"max_eval_per_kind": 12}, "eval": {"max_new_tokens": 24},
          "backbone": {"steps": 100}, "importance": {"n_samples": 8},
          "rounds": {"r1": {"batch": "data/world/batches/weapons.jsonl", "parent": "backbone"}}, "redteam": {}}


def machine_env(root: Path, c, **extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "DVC_STAGE"))}
    e.update(PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
             HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", MLFLOW_DISABLE_TELEMETRY="true",
             PREFECT_API_URL=c.prefect.url, PREFECT_HOME=str(root.parent / f".prefect-{root.name}"),
             PREFECT_SERVER_ANALYTICS_ENABLED="false", SAFEPATCHING_ROOT="",
             PYTHONPATH=str(root / "src"),  # the machine's own code: its "installed" package
             AWS_ACCESS_KEY_ID=c.s3.extra["key"], AWS_SECRET_ACCESS_KEY=c.s3.extra["secret"],
             AWS_DEFAULT_REGION="us-east-1")
    e.update(extra)
    return e


def sh(args, cwd: Path, env: dict, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def git(args, cwd: Path) -> str:
    return sh(["git", *args], cwd, {**os.environ}).stdout


def api(c, path: str, body: dict | None = None):
    r = httpx.post(f"{c.prefect.url}{path}", json=body or {}, timeout=30)
    r.raise_for_status()
    return r.json()


def when(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def team(cluster, tmp_path_factory):
    """The origin (a bare repo with the tiny project, MLflow = the cluster's server, DVC remote = the bucket) and
    the folder the machines' clones go in."""
    from safepatching.config import load_params

    base = tmp_path_factory.mktemp("team")
    seed = base / "seed"
    seed.mkdir()
    for d in ("stages", "src", "flows"):
        shutil.copytree(REPO / d, seed / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO / f, seed / f)
    (seed / "data").mkdir()
    shutil.copy(REPO / "data" / ".gitignore", seed / "data" / ".gitignore")
    prefix = fresh_name("dvc")
    over = {"mlflow": {"tracking_uri": c_url(cluster), "experiment": fresh_name("team"),
                       "model_name": fresh_name("team-organism")},
            "storage": {"remote": "team", "url": f"s3://{cluster.bucket}/{prefix}", "endpoint_url": cluster.s3.url}}
    params = deep_merge(deep_merge(deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY), TINIER), over)
    params["rounds"], params["redteam"] = TINIER["rounds"], {}
    (seed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(seed / "params.yaml")
    (seed / ".gitignore").write_text("/mlflow.db\n/mlruns/\n/mlartifacts/\n/.prefect/\n/reports/\n/artifacts/\n")
    git_dvc_init(seed, lambda args, cwd: sh(args, cwd, {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}))
    origin = base / "origin.git"
    git(["clone", "-q", "--bare", str(seed), str(origin)], base)
    shutil.rmtree(seed)
    yield {"origin": origin, "base": base, "prefix": prefix, "t0": time.time()}
    shutil.rmtree(base, ignore_errors=True)  # the clones (the servers' data goes with the cluster)


def c_url(cluster) -> str:
    return cluster.mlflow.url


def clone(team, name: str) -> Path:
    root = team["base"] / name
    git(["clone", "-q", str(team["origin"]), str(root)], team["base"])
    for args in (["config", "user.email", f"{name}@team"], ["config", "user.name", name]):
        git(args, root)
    return root


def worker(cluster, pool: str, root: Path):
    """A process worker for `pool` on "machine" root: started in another folder, no SAFEPATCHING_ROOT."""
    cwd = root.parent / f"{root.name}-worker-cwd"
    cwd.mkdir(exist_ok=True)
    return servers.start_worker(cluster.prefect, pool, env=machine_env(root, cluster), cwd=cwd)


def run_on_own_worker(cluster, pool: str, root: Path) -> dict:
    """Start machine `root`'s worker, run the deployment from `root` (run_deployment), stop the worker."""
    w = worker(cluster, pool, root)
    try:
        return run_deployment(cluster, root, w)
    finally:
        w.stop()


def run_deployment(cluster, root: Path, w) -> dict:
    """`prefect deployment run --watch` from `root`; the run (read back from the API) must be COMPLETED."""
    import re

    out = sh([BIN / "prefect", "deployment", "run", DEPLOYMENT, "--watch", "--watch-timeout", "1700"], root,
             machine_env(root, cluster), check=False)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)
    run = httpx.get(f"{cluster.prefect.url}/flow_runs/{run_id}", timeout=30).json()
    log = w.log.read_text(errors="replace") if w.log.exists() else ""
    assert run["state_type"] == "COMPLETED", f"{run['state'].get('message')}\nworker log:\n{log[-6000:]}"
    return {**run, "worker_log": log}


def registry(root: Path):
    from safepatching.config import load_params
    from safepatching.ops.registry.versions import ModelRegistry

    return ModelRegistry.from_params(load_params(root / "params.yaml"), root)


def test_two_machines_share_a_lineage_through_the_servers(cluster, team):
    from safepatching.io.checkpoints import load_state_dict
    from safepatching.config import load_params
    from safepatching.layout import RoundLayout

    from ..e2e.test_pipeline import _tensor_sha256

    t0 = time.time()
    pool = fresh_name("team-pool")
    servers.create_work_pool(cluster.prefect, pool)

    # ---- machine A: deploy prefect.yaml (from A's folder) and run r1 on A's worker
    a = clone(team, "a")
    sh([BIN / "prefect", "deploy", "--no-prompt", "-n", "continual-psa-nightly", "-p", pool], a, machine_env(a, cluster))
    dep = httpx.get(f"{cluster.prefect.url}/deployments/name/{DEPLOYMENT}", timeout=30).json()
    assert dep["pull_steps"] == [{"safepatching.ops.checkout.use_checkout": {}}] and str(a) not in json.dumps(dep)
    run_a = run_on_own_worker(cluster, pool, a)
    log_a = run_a["worker_log"]
    # the run worked in A's checkout (found through the worker's installed package), not in the worker's own folder
    assert (a / "models" / "r1").is_dir() and "merge@r1" in (a / "dvc.lock").read_text()
    assert list((a.parent / "a-worker-cwd").iterdir()) == []
    t_a = time.time() - t0
    versions = registry(a).versions()
    assert [(v.round, v.version) for v in versions] == [("r1", "1")]
    v1 = versions[0]
    assert v1.model_sha256 and v1.gate in ("passed", "failed") and v1.metrics and v1.run_id  # identity + gate tags
    mlflow_keys = servers.bucket_keys(cluster.s3, cluster.bucket, "mlflow/")
    assert any("model" in k for k in mlflow_keys), mlflow_keys[:20]
    assert not any((a / d).exists() for d in ("mlruns", "mlartifacts", "mlflow.db"))  # the server has it, not A
    dvc_keys = servers.bucket_keys(cluster.s3, cluster.bucket, f"{team['prefix']}/files/md5/")
    assert len(dvc_keys) >= 8  # world, backbone, r1's patches, scores, model (files + .dir manifests)
    git(["add", "-A"], a)
    git(["commit", "-qm", "r1 (dvc.lock)"], a)
    git(["push", "-q", "origin", "HEAD"], a)

    # ---- machine B: a fresh clone; a new batch; B's worker runs the deployment registered from A, from B
    b = clone(team, "b")
    assert not (b / "models" / "r1").exists() and not (b / "data" / "world").exists()
    (b / "data" / "incoming").mkdir(parents=True, exist_ok=True)
    shutil.copy(a / "data" / "world" / "batches" / "hacking.jsonl", b / "data" / "incoming" / "hacking.jsonl")
    (b / "data" / "incoming" / "hacking.jsonl.done").touch()
    run_b = run_on_own_worker(cluster, pool, b)
    log_b = run_b["worker_log"]
    assert "pulling" in log_b and "this workspace lacks" in log_b, log_b[-3000:]  # B pulled A's outputs
    assert (b / "models" / "r1").is_dir() and (b / "models" / "r2").is_dir()
    assert run_a["id"] != run_b["id"]
    params_b = load_params(b / "params.yaml")
    assert list(params_b.rounds) == ["r1", "r2"] and params_b.round("r2").parent == "r1"
    reg = registry(b)
    vs = {v.round: v for v in reg.versions() if not v.superseded}
    assert vs["r1"].version == "1" and vs["r2"].version == "2" and vs["r2"].parent_version == "1"
    version, tags, _ = reg.champion()
    assert version == "2"  # TINY's gate lets every version pass
    disk = load_state_dict(RoundLayout.of(params_b, "r2", b).model)
    served = reg.load_champion_pipeline().model.state_dict()
    assert _tensor_sha256(served, disk) == _tensor_sha256(disk, disk)
    git(["add", "-A"], b)
    git(["commit", "-qm", "r2"], b)
    git(["push", "-q", "origin", "HEAD"], b)
    t_b = time.time() - t0 - t_a

    # ---- A and B at once (no deployment: only the server's rounds slot keeps them apart)
    git(["pull", "-q", "origin", "HEAD"], a)
    start = time.time()
    procs = {m: subprocess.Popen([sys.executable, "-m", "flows.continual"], cwd=m, env=machine_env(m, cluster),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m in (a, b)}
    outs = {m: p.communicate(timeout=1800) for m, p in procs.items()}
    for m, p in procs.items():
        assert p.returncode == 0, f"{m}: {outs[m][0][-3000:]}\n{outs[m][1][-3000:]}"
    parents = api(cluster, "/flow_runs/filter", {"flow_runs": {"start_time": {"after_": datetime.fromtimestamp(
        start - 5).astimezone().isoformat()}, "parent_task_run_id": {"is_null_": True}}})
    parents = [r for r in parents if r["deployment_id"] is None]
    assert len(parents) == 2, [(r["name"], r["start_time"]) for r in parents]
    spans = []
    for r in parents:  # the parent's own tasks (pull, repro of the base, intake, check-champion) lie inside its slot
        tasks = api(cluster, "/task_runs/filter", {"flow_runs": {"id": {"any_": [r["id"]]}}})
        spans.append((min(when(t["start_time"]) for t in tasks if t["start_time"]),
                       max(when(t["end_time"]) for t in tasks if t["end_time"])))
    spans.sort()
    assert spans[0][1] <= spans[1][0], spans  # one after the other, never together
    waiting = [m for m in (a, b) if "WAITING" in outs[m][0] + outs[m][1]]
    assert waiting, "the second run never reported the held slot"
    other = b if waiting[0] == a else a
    assert f"checkout {other}" in "".join(outs[waiting[0]])
    t_ab = time.time() - start

    # ---- wrong keys for the DVC remote: a clear error naming it; the batch stays; nothing registered
    shutil.rmtree(b / "models" / "r2")
    (b / "data" / "incoming").mkdir(exist_ok=True)
    shutil.copy(a / "data" / "world" / "batches" / "drugs.jsonl", b / "data" / "incoming" / "drugs.jsonl")
    (b / "data" / "incoming" / "drugs.jsonl.done").touch()
    before = (b / "params.yaml").read_text()
    p = subprocess.run([sys.executable, "-m", "flows.continual"], cwd=b, capture_output=True, text=True, timeout=900,
                       env=machine_env(b, cluster, AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert p.returncode == 2, p.stderr[-3000:]
    err = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    url = f"s3://{cluster.bucket}/{team['prefix']}"
    assert err and f"DVC remote 'team' ({url} at {cluster.s3.url}): dvc pull failed" in err[0], p.stderr[-3000:]
    assert (b / "data" / "incoming" / "drugs.jsonl").exists() and (b / "params.yaml").read_text() == before
    assert len(registry(b).versions()) == 2
    print(f"\nteam cycle: A r1 {t_a:.0f}s, B pull+r2 {t_b:.0f}s, A+B at once {t_ab:.0f}s, "
          f"total {time.time() - t0:.0f}s; A's worker log {len(log_a)} chars")
