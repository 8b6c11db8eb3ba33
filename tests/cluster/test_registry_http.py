"""The registry on a tracking server: the mini-cluster's `mlflow server` (PostgreSQL, artifacts proxied to the rclone
bucket). Every feature over HTTP; the model artifact is in the bucket and not on the client's disk; a server killed
mid-registration, an unreachable one, wrong S3 keys on the server: one clear error naming the URI, nothing
half-registered, and a rerun registers exactly one version."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from safepatching import crash
from safepatching.ops.gate import gate
from tests.ops.test_registry import BAD, CFG, REF, _register, models, tiny_model_dir  # noqa: F401  (fixtures)

from . import servers
from .conftest import fresh_name

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _fast_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow retries a failed request 7 times with backoff (~4 min); a test of a dead server needs a few seconds."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)  # the client needs no S3 keys: the server proxies the artifacts


def _registry(url: str, name: str, experiment: str, root: Path):
    from safepatching.ops.registry.versions import ModelRegistry

    root.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(url, name, experiment, root=root, max_new_tokens=4)


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def _same_tensors(model, model_dir: Path) -> None:
    want, have = _tensors(model_dir), model.state_dict()
    assert set(want) <= set(have)
    for k, v in want.items():
        assert have[k].shape == v.shape and bool((have[k] == v).all()), k


def _client_traces(root: Path) -> list[str]:
    """What MLflow would leave on a client's disk if it stored artifacts locally (the round models under
    `models/` are the workspace's own)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_relative_to(root / "models")
                  and (p.name in ("mlartifacts", "mlruns", "mlflow.db") or p.suffix == ".safetensors"))


def _params(root: Path, url: str, name: str, experiment: str) -> Path:
    p = root / "params.yaml"
    p.write_text(f"mlflow:\n  tracking_uri: {url}\n  experiment: {experiment}\n  model_name: {name}\n"
                 "eval:\n  max_new_tokens: 4\n"
                 "rounds:\n  r1: {batch: b1.jsonl, parent: backbone}\n  r2: {batch: b2.jsonl, parent: r1}\n")
    return p


def test_every_registry_feature_over_http(cluster, models, experiment_name, tmp_path, monkeypatch, capsys) -> None:
    from safepatching.ops.cli import main

    name = fresh_name("http-model")
    a = tmp_path / "machine-a"
    monkeypatch.chdir(a.parent)
    reg = _registry(cluster.mlflow.url, name, experiment_name, a)
    monkeypatch.chdir(a)
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None) == ("1", True)
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None) == ("1", False)  # idempotent
    assert _register(reg, models["b"], "r2", BAD, REF, "bbb2", "1") == ("2", True)  # gate fails
    rows = {r.version: r for r in reg.versions()}
    assert rows["1"].aliases == ("champion",) and rows["2"].aliases == ("candidate",) and rows["2"].gate == "failed"
    tags = reg.client.get_model_version(name, "1").tags
    assert (tags["round"], tags["batch_sha256"], tags["parent_version"], tags["model_sha256"]) == (
        "r1", "aaa1", "none", models["a"][1]) and tags["registered"] == "complete"
    # r2 retrained (model c) and passing: v3 supersedes v2 and becomes champion
    assert _register(reg, models["c"], "r2", REF, REF, "bbb2", "1") == ("3", True)
    rows = {r.version: r for r in reg.versions()}
    assert rows["3"].supersedes == ("2",) and rows["2"].superseded_by == "3"
    assert set(rows["3"].aliases) == {"champion", "candidate"}

    # the server assigned the location; the artifacts are in the bucket, none on the client's disk
    exp = reg.client.get_experiment(reg.experiment_id())
    assert exp.artifact_location.startswith("mlflow-artifacts:/"), exp.artifact_location
    keys = servers.bucket_keys(cluster.s3, cluster.bucket, f"mlflow/{exp.experiment_id}/")
    assert sum(k.endswith("/model.safetensors") for k in keys) == 3, keys
    assert sum(1 for _ in (cluster.bucket_dir / "mlflow" / exp.experiment_id).rglob("model.safetensors")) == 3
    assert _client_traces(a) == []

    # status and promotions from the shell, over HTTP (models/<round> define the lineage)
    for rnd, m in (("r1", "a"), ("r2", "c")):
        shutil.copytree(models[m][0], a / "models" / rnd)
    params = _params(a, cluster.mlflow.url, name, experiment_name)
    capsys.readouterr()  # MLflow's own "View run ..." lines
    assert main(["--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "superseded" in out and "gate of a new round: against champion v3" in out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["1", "2", "3"]
    assert main(["--params", str(params), "promote", "--version", "2"]) == 2
    assert "superseded" in capsys.readouterr().err
    assert main(["--params", str(params), "promote", "--version", "1", "--alias", "champion"]) == 0  # in lineage, passed
    assert capsys.readouterr().out.strip() == f"{name}@champion -> v1"
    assert main(["--params", str(params), "promote", "--version", "2", "--force", "--reason", "canary", "--by", "ann"]) == 0
    assert "(forced)" in capsys.readouterr().out
    forced = reg.version("2").forced
    assert [(f["alias"], f["by"], f["reason"], f["replaced"]) for f in forced] == [("champion", "ann", "canary", "1")]
    assert main(["--params", str(params), "rollback"]) == 0
    assert capsys.readouterr().out.strip() == f"{name}@champion -> v1 (rolled back)"
    assert main(["--params", str(params), "rollback"]) == 0  # v1 replaced v3: back to v3
    assert reg.champion()[0] == "3"
    assert main(["--params", str(params), "status"]) == 0
    assert "v2 (r2) -> champion by ann" in capsys.readouterr().out

    # another machine (another folder, nothing shared but the server) loads the champion: v3's tensors
    b = tmp_path / "machine-b"
    reg_b = _registry(cluster.mlflow.url, name, experiment_name, b)
    monkeypatch.chdir(b)
    pipe = reg_b.load_champion_pipeline()
    _same_tensors(pipe.model, models["c"][0])
    assert _client_traces(b) == [] and _client_traces(a) == []


def test_server_killed_mid_registration_then_one_version(cluster, models, experiment_name, tmp_path,
                                                         monkeypatch) -> None:
    from safepatching.ops.registry.store import RegistryError

    name = fresh_name("crash-model")
    root = tmp_path / "a"
    reg = _registry(cluster.mlflow.url, name, experiment_name, root)
    monkeypatch.chdir(root)
    real_point = crash.point

    def kill_server_at(point: str) -> None:
        if point == "register.run":  # the run is open and the model logged; no version yet
            cluster.mlflow.kill()
        real_point(point)

    monkeypatch.setattr(crash, "point", kill_server_at)
    with pytest.raises(RegistryError, match=f"MLflow tracking server {cluster.mlflow.url}") as err:
        _register(reg, models["a"], "r1", REF, None, "aaa1", None)
    assert len(str(err.value).splitlines()) == 1 and err.value.__cause__ is None
    monkeypatch.setattr(crash, "point", real_point)
    with pytest.raises(RegistryError, match=f"{cluster.mlflow.url} is unreachable"):
        _registry(cluster.mlflow.url, name, experiment_name, root)  # down: refused at opening

    cluster.mlflow.restart()  # same port, PostgreSQL and bucket
    reg = _registry(cluster.mlflow.url, name, experiment_name, root)
    assert reg.versions() == []  # nothing half-registered
    lines: list[str] = []
    assert reg.register_round("r1", models["a"][0], {}, REF, gate(REF, None, CFG),
                              {"batch_sha256": "aaa1", "model_sha256": models["a"][1], "dvc_stage_hash": "d" * 64},
                              log=lines.append) == ("1", True)
    assert [r.version for r in reg.versions()] == ["1"] and reg.champion()[0] == "1"
    assert any("ended 1 MLflow run(s) left RUNNING" in line and "KILLED" in line for line in lines), lines
    runs = reg.client.search_runs([reg.experiment_id()], filter_string="tags.round = 'r1'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None) == ("1", False)


def test_unreachable_server_is_one_clear_error(tmp_path, monkeypatch, capsys) -> None:
    from safepatching.ops.cli import main
    from safepatching.ops.registry.server import TrackingServerUnreachable

    url = f"http://127.0.0.1:{servers.free_port()}"
    with pytest.raises(TrackingServerUnreachable, match=f"MLflow tracking server {url} is unreachable"):
        _registry(url, "m", "e", tmp_path)
    params = _params(tmp_path, url, "m", "e")
    assert main(["--params", str(params), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: MLflow tracking server {url} is unreachable") and len(err.splitlines()) == 1
    assert _client_traces(tmp_path) == []


def test_wrong_s3_keys_on_the_server_register_nothing(cluster, models, experiment_name, tmp_path,
                                                      monkeypatch) -> None:
    from safepatching.ops.registry.store import RegistryError

    bad = servers.start_mlflow(cluster.postgres, cluster.s3, cluster.bucket, key="wrong", secret="keys")
    try:
        name = fresh_name("badkeys-model")
        reg = _registry(bad.url, name, experiment_name, tmp_path / "a")
        monkeypatch.chdir(tmp_path / "a")
        with pytest.raises(RegistryError, match=f"MLflow tracking server {bad.url}") as err:
            _register(reg, models["a"], "r1", REF, None, "aaa1", None)
        assert len(str(err.value).splitlines()) == 1
        assert reg.versions() == []  # no version without its artifact
        assert "InvalidAccessKeyId" in bad.log.read_text() or "AccessDenied" in bad.log.read_text() or \
            "403" in bad.log.read_text()
        exp_id = reg.experiment_id()
        runs = reg.client.search_runs([exp_id], filter_string="tags.round = 'r1'")
        assert [r.info.status for r in runs] == ["FAILED"]
    finally:
        bad.stop()
    # the same names on the good server (same database): nothing there either
    good = _registry(cluster.mlflow.url, name, experiment_name, tmp_path / "b")
    assert good.versions() == []
    assert servers.bucket_keys(cluster.s3, cluster.bucket, f"mlflow/{exp_id}/") == []
