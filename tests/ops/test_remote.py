"""The DVC remote (params `storage:`, safepatching.ops.remote) on a local-folder remote: configured in the git-ignored
.dvc/config.local, a round's outputs pushed, a second clone pulls exactly what it lacks, failures name the remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safepatching.config import StorageCfg, parse_params
from safepatching.errors import ConfigError
from safepatching.ops import remote
from safepatching.ops.remote import RemoteError

BIN = Path(sys.executable).parent
DVC_YAML = """stages:
  made:
    cmd: mkdir -p out && echo made > out/a.txt
    outs: [out]
  unpushed:
    cmd: echo local-only > unp.txt
    outs: [unp.txt]
  later:
    cmd: echo later > later.txt
    outs: [later.txt]
  metric:
    cmd: echo 1 > m.json
    outs:
      - m.json: {cache: false}
"""


def sh(args, cwd, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: {p.stdout}{p.stderr}")
    return p


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A git + DVC repo with a `dvc add`ed batch and produced stages (one left unproduced: `later`)."""
    a = tmp_path_factory.mktemp("template") / "a"
    (a / "data").mkdir(parents=True)
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@e"], ["git", "config", "user.name", "t"],
                 ["dvc", "init", "-q"]):
        sh(args, a)
    (a / "data" / "batch.jsonl").write_text('{"id": "1"}\n')
    (a / "dvc.yaml").write_text(DVC_YAML)
    sh(["dvc", "add", "-q", "data/batch.jsonl"], a)
    sh(["dvc", "repro", "-q", "made", "unpushed", "metric"], a)
    sh(["git", "add", "-A"], a)
    sh(["git", "commit", "-qm", "round"], a)
    return a


@pytest.fixture
def machine_a(template, tmp_path) -> Path:
    """A fresh copy of the template (DVC's cache and git included), beside the test's store."""
    shutil.copytree(template, tmp_path / "a", symlinks=True)
    return tmp_path / "a"


def test_no_remote_is_todays_behaviour(tmp_path):
    s = StorageCfg()
    assert not s.enabled and s.remote == "storage"
    assert remote.configure(s, tmp_path) is False and remote.pull_missing(s, tmp_path) == []
    remote.push(s, tmp_path, ["anything"])  # no dvc call at all: tmp_path is not even a DVC repo
    assert list(tmp_path.iterdir()) == []


def test_push_then_a_second_clone_pulls_what_it_lacks(machine_a, tmp_path):
    s = StorageCfg(url="../store")  # relative: from each project root (both clones sit beside the store)
    logs: list[str] = []
    assert remote.configure(s, machine_a, logs.append) is True
    assert remote.configure(s, machine_a, logs.append) is False  # idempotent: nothing rewritten
    assert sh(["git", "status", "--porcelain"], machine_a).stdout == ""  # only the git-ignored config.local
    assert "storage" not in (machine_a / ".dvc" / "config").read_text()
    remote.push(s, machine_a, ["made", "data/batch.jsonl.dvc"], logs.append)
    assert any("DVC remote 'storage'" in line and "pushed" in line for line in logs)
    assert (tmp_path / "store" / "files" / "md5").is_dir()

    b = tmp_path / "b"
    sh(["git", "clone", "-q", str(machine_a), str(b)], tmp_path)
    assert not (b / "out").exists() and not (b / "data" / "batch.jsonl").exists()
    assert remote.missing_outputs(b) == ["data/batch.jsonl", "out", "unp.txt"]  # `later`: never produced, no target
    logs.clear()
    assert remote.pull_missing(s, b, logs.append) == ["data/batch.jsonl", "out", "unp.txt"]
    assert (b / "out" / "a.txt").read_text() == "made\n"
    assert (b / "data" / "batch.jsonl").read_text() == '{"id": "1"}\n'
    # recorded but never pushed (A did not push `unpushed`): no error, left for `dvc repro` to rebuild
    assert not (b / "unp.txt").exists() and any("not on the remote" in line and "unp.txt" in line for line in logs)
    status = sh(["dvc", "status", "made", "unpushed"], b).stdout
    assert "made" not in status and "unpushed" in status
    assert remote.pull_missing(s, b) == ["unp.txt"]  # only what is still missing is asked for again


def test_configure_keeps_local_credentials_and_never_writes_dvc_config(machine_a):
    s = StorageCfg(remote="team", url="s3://bucket/lineage", endpoint_url="http://127.0.0.1:9000")
    assert remote.configure(s, machine_a) is True
    sh(["dvc", "remote", "modify", "--local", "team", "access_key_id", "KEY-ONLY-HERE"], machine_a)
    moved = s.model_copy(update={"endpoint_url": "http://127.0.0.1:9001"})
    assert remote.configure(moved, machine_a) is True
    local = (machine_a / ".dvc" / "config.local").read_text()
    assert "KEY-ONLY-HERE" in local and "9001" in local and "9000" not in local and "remote = team" in local
    assert "KEY-ONLY-HERE" not in (machine_a / ".dvc" / "config").read_text()
    assert sh(["git", "status", "--porcelain"], machine_a).stdout == ""
    assert remote.configure(moved.model_copy(update={"endpoint_url": None}), machine_a) is True
    assert "endpointurl" not in (machine_a / ".dvc" / "config.local").read_text()


def test_unusable_remote_is_one_line_naming_it_and_loses_nothing(machine_a, tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the store should be")
    s = StorageCfg(remote="shared", url=str(tmp_path / "not-a-folder" / "store"))
    with pytest.raises(RemoteError) as e:
        remote.push(s, machine_a, ["made"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"DVC remote 'shared' ({tmp_path / 'not-a-folder' / 'store'})")
    assert "dvc push failed" in msg and "outputs stay in this workspace" in msg
    assert (machine_a / "out" / "a.txt").read_text() == "made\n"  # nothing deleted
    assert sh(["dvc", "status", "made"], machine_a).stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.cluster  # needs dvc-s3 (requirements-extra.txt); boto's retries take ~15 s
def test_unreachable_s3_endpoint_names_remote_and_endpoint(machine_a, monkeypatch):
    pytest.importorskip("dvc_s3")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s = StorageCfg(url="s3://bucket/x", endpoint_url=f"http://127.0.0.1:{port}")
    (machine_a / "out" / "a.txt").unlink()
    (machine_a / "out").rmdir()
    with pytest.raises(RemoteError, match=rf"DVC remote 'storage' \(s3://bucket/x at http://127.0.0.1:{port}\): "
                                          r"dvc pull failed: .*(connect|endpoint)"):
        remote.pull_missing(s, machine_a)


@pytest.mark.parametrize("bad, rule", [({"url": "s3://AKIA:secret@bucket/p"}, "credentials never go in the url"),
                                       ({"url": "http://host/x"}, "only a folder or s3://"),
                                       ({"url": " "}, "empty url"),
                                       ({"url": "s3://b/p", "endpoint_url": "http://k:s@host:9000"}, "no credentials"),
                                       ({"remote": "my remote"}, "a remote name")])
def test_storage_settings_are_checked_at_load(bad, rule):
    with pytest.raises(ConfigError, match=rule):
        parse_params({"storage": bad})
