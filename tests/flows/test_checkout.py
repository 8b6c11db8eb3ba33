"""prefect.yaml's pull step runs the flow from the checkout on the WORKER's machine, resolved when the run starts:
$SAFEPATCHING_ROOT, else the checkout the installed package lives in; never the PWD of whoever ran `prefect deploy`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import safepatching
from safepatching.ops.checkout import CheckoutError, find_checkout

REPO = Path(__file__).resolve().parents[2]


def fake_checkout(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    for f in ("dvc.yaml", "params.yaml", "flows/continual.py"):
        (root / f).write_text("")
    return root


def test_prefect_yaml_pull_step_is_resolved_on_the_worker():
    pull = yaml.safe_load((REPO / "prefect.yaml").read_text())["pull"]
    assert pull == [{"safepatching.ops.checkout.use_checkout": {}}]
    assert "$PWD" not in (REPO / "prefect.yaml").read_text().split("pull:")[1]


def test_find_checkout_prefers_the_env_then_the_installed_package(tmp_path):
    co = fake_checkout(tmp_path / "co")
    assert find_checkout({"SAFEPATCHING_ROOT": str(co)}) == co.resolve()
    assert find_checkout({}) == Path(safepatching.__file__).resolve().parents[2]
    with pytest.raises(CheckoutError, match=r"no flows/continual.py; start the worker with SAFEPATCHING_ROOT"):
        (co / "flows" / "continual.py").unlink()
        find_checkout({"SAFEPATCHING_ROOT": str(co)})


def _run_pull_steps(cwd: Path, env: dict) -> dict:
    """prefect.yaml's pull steps through Prefect's own step runner, in a fresh process started in `cwd`."""
    code = ("import asyncio, json, os, sys, yaml\n"
            "from prefect.deployments.steps.core import run_steps\n"
            "out = asyncio.run(run_steps(yaml.safe_load(open(sys.argv[1]))['pull']))\n"
            "print(json.dumps({'out': out, 'cwd': os.getcwd(), 'root': os.environ.get('SAFEPATCHING_ROOT'),"
            " 'path0': sys.path[0], 'pythonpath': os.environ['PYTHONPATH']}))\n")
    p = subprocess.run([sys.executable, "-c", code, str(REPO / "prefect.yaml")], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_pull_step_uses_the_workers_checkout_not_the_deploy_time_pwd(tmp_path):
    worker_checkout = fake_checkout(tmp_path / "worker-machine" / "safepatching")
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    base = {k: v for k, v in os.environ.items() if k != "SAFEPATCHING_ROOT"}
    env = {**base, "PWD": str(tmp_path / "the-deployers-folder"), "SAFEPATCHING_ROOT": str(worker_checkout)}
    got = _run_pull_steps(elsewhere, env)
    assert got["out"]["directory"] == got["cwd"] == got["root"] == str(worker_checkout.resolve())
    assert got["path0"] == str(worker_checkout.resolve() / "src")
    assert got["pythonpath"].split(os.pathsep)[0] == str(worker_checkout.resolve() / "src")

    # no SAFEPATCHING_ROOT on the worker: the checkout its installed safepatching lives in (this one, here)
    got = _run_pull_steps(elsewhere, {**base, "PWD": str(tmp_path / "the-deployers-folder")})
    installed = Path(safepatching.__file__).resolve().parents[2]
    assert got["out"]["directory"] == got["cwd"] == str(installed)


def test_no_rounds_slot_on_the_ephemeral_server(monkeypatch, tmp_path):
    """`make run` (no PREFECT_API_URL) takes no server-side slot: its ephemeral server is reachable by nobody else and
    keeps leases in memory, so a slot held by a killed run would block the next `make run` forever."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.slot as slot

    def must_not_run(*a, **k):
        raise AssertionError("the slot was taken on the ephemeral server")

    monkeypatch.setattr(slot, "ensure_limit", must_not_run)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    ran = []
    with temporary_settings(updates={PREFECT_API_URL: None}):
        with slot.rounds_slot(str(tmp_path), log=ran.append):
            ran.append("inside")
    assert ran == ["inside"]
    # with a server URL the slot is taken (ensure_limit runs first and here refuses)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with pytest.raises(AssertionError, match="ephemeral"):
            with slot.rounds_slot(str(tmp_path), log=ran.append):
                pass
