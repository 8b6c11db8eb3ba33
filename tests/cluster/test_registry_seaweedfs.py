"""The registry round trip with SeaweedFS (a production-grade S3 store) behind the MLflow server instead of rclone:
register a round, load `models:/<name>@champion` on another folder, the same tensors; the artifact is in the bucket.
Its own servers (not the session cluster); everything stopped and checked gone at the end."""

from __future__ import annotations

import pytest

from tests.ops.test_registry import REF, _register, models, tiny_model_dir  # noqa: F401  (fixtures)

from . import servers
from .conftest import fresh_name, leftovers
from .test_registry_http import _client_traces, _registry, _same_tensors

pytestmark = pytest.mark.seaweedfs


@pytest.fixture
def seaweed_mlflow():
    started: list[servers.Server] = []
    try:
        started.append(servers.start_postgres(("mlflow",)))
        started.append(servers.start_seaweedfs(("artifacts",)))
        started.append(servers.start_mlflow(started[0], started[1], "artifacts"))
        print("\n" + "\n".join(f"{h.name:<10} {h.start_s:>6.1f} s {h.rss_mib:>7.1f} MiB" for h in started))
        yield started[1], started[2]
    finally:
        for h in reversed(started):
            h.stop()
        assert leftovers(started) == []


def test_register_and_load_champion_on_seaweedfs(seaweed_mlflow, models, tmp_path, monkeypatch) -> None:
    weed, mlflow_server = seaweed_mlflow
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    name, experiment = fresh_name("weed-model"), fresh_name("weed")
    monkeypatch.chdir(tmp_path)
    reg = _registry(mlflow_server.url, name, experiment, tmp_path / "a")
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None) == ("1", True)
    assert reg.champion()[0] == "1"
    exp_id = reg.experiment_id()
    keys = servers.bucket_keys(weed, "artifacts", f"mlflow/{exp_id}/")
    assert sum(k.endswith("/model.safetensors") for k in keys) == 1, keys

    reg_b = _registry(mlflow_server.url, name, experiment, tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")
    _same_tensors(reg_b.load_champion_pipeline().model, models["a"][0])
    assert _client_traces(tmp_path / "a") == [] and _client_traces(tmp_path / "b") == []
