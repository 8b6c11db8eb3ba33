"""A small workspace for tests that run the real flow entry point (`python -m flows.continual`) in a child process.

`build_template(root)` makes one: this repo's code, dvc.yaml and a small params.yaml (test_pipeline.TINY, one round),
a git + DVC repo, the organism built and round r1 registered by one flow run (so a champion exists). Tests copy it per
case (`copy_workspace`): the copy re-anchors its MLflow store on first use and never writes into the template.
`run_flow(root, api)` starts the flow in a process group of its own (what a crash point kills) with the offline env,
against a Prefect server the tests share (`prefect_server`: one server start instead of a temporary one per run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..workspace import git_dvc_init
from .test_pipeline import TINY, deep_merge

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# the flow tests' own settings on top of TINY: one round, shorter generations, caps the hostile corpus can straddle
FLOW = {
    "eval": {"max_new_tokens": 24},
    "world": {"max_eval_per_kind": 12},
    "data": {"stability_seconds": 1.0, "max_bytes": 1_000_000, "max_rows": 400},
    "rounds": {"r1": {"batch": "data/world/batches/weapons.jsonl", "parent": "backbone"}},
    "redteam": {},
}


def env(root: Path, **extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("SAFEPATCHING_CRASH_AT", "PREFECT_API_URL", "DVC_STAGE")}
    e.update(PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}", OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
             SAFEPATCHING_ROOT=str(root), PREFECT_HOME=str(root / ".prefect"), HF_HUB_OFFLINE="1",
             HF_HUB_DISABLE_PROGRESS_BARS="1", MLFLOW_DISABLE_TELEMETRY="true",
             PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
             PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
    e.update(extra)
    return e


def sh(args: list[str], root: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(args, cwd=root, env=env(root), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def run_flow(root: Path, api: str | None, timeout: float = 900, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m flows.continual` at root in its own process group (against the Prefect server at `api`, else a
    temporary one); after it ends, nothing of that group is left."""
    if api:
        extra_env["PREFECT_API_URL"] = api
    proc = subprocess.Popen([sys.executable, "-m", "flows.continual"], cwd=root, env=env(root, **extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the flow ran past {timeout}s:\n{out[-3000:]}\n{err[-3000:]}") from None
    finally:
        _reap_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _reap_group(pgid: int, wait: float = 15.0) -> None:
    """Wait until no process of the group is left (a crash point killed it whole); kill what is still there."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    raise AssertionError(f"processes of the flow's group {pgid} outlived it (killed now)")


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A local Prefect server (sqlite under `home`) on a free loopback port; returns (process, API URL)."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = env(home, PREFECT_HOME=str(home / ".prefect-server"))
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=home, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/api"
        except httpx.HTTPError:
            time.sleep(1)
    stop(proc)
    raise AssertionError("prefect server did not become healthy in 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def build_template(root: Path, api: str | None) -> Path:
    for d in ("stages", "src", "flows"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "data" / "incoming").mkdir(parents=True)
    shutil.copy(REPO / "data" / ".gitignore", root / "data" / ".gitignore")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(deep_merge(params, TINY), FLOW), sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.prefect/\n/reports/\n/artifacts/\n")
    git_dvc_init(root, sh)
    first = run_flow(root, api)
    (root / "first_flow.log").write_text(first.stdout + first.stderr)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return root


def copy_workspace(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return dest


def registry(root: Path):
    from safepatching.config import load_params
    from safepatching.ops.registry.versions import ModelRegistry

    return ModelRegistry.from_params(load_params(root / "params.yaml"), root)


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root: relative path -> (size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
