"""What a backbone came from (issue 21, item 1): `backbone.revision` reaches from_pretrained; the backbone stage's
materialise writes models/backbone/source.json (a local folder's content hash); a changed folder is `stale`."""

from __future__ import annotations

import json
import shutil

import pytest

from safepatching.io.models import load_model, materialise
from safepatching.io.source import SOURCE_FILE, folder_digest, source_record, stale

from ..stand_ins import build_qwen_stand_in


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return build_qwen_stand_in(tmp_path_factory.mktemp("si") / "m", ["how to open a door"] * 20)


def test_revision_reaches_from_pretrained(monkeypatch, stand_in):
    import transformers

    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        orig = cls.from_pretrained.__func__

        def spy(c, path, *a, _orig=orig, **kw):
            seen.append(kw.get("revision"))
            kw.pop("revision", None)
            return _orig(c, path, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_model(stand_in, trainable=False, revision="0123abc")
    load_model(stand_in, trainable=False)
    assert seen == ["0123abc", "0123abc", None, None]


def test_materialise_records_the_local_folders_content_hash(tmp_path, stand_in):
    src = tmp_path / "src"
    shutil.copytree(stand_in, src)
    rec = materialise("src", tmp_path / "models" / "backbone", root=tmp_path)
    on_disk = json.loads((tmp_path / "models" / "backbone" / SOURCE_FILE).read_text())
    assert rec == on_disk and rec["kind"] == "local" and rec["source"] == "src"
    assert rec["sha256"] == folder_digest(src)["sha256"] and "model.safetensors" in rec["files"]
    assert stale(tmp_path / "models" / "backbone", "src", tmp_path) is None
    (src / "config.json").write_text((src / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert "content hash" in stale(tmp_path / "models" / "backbone", "src", tmp_path)
    assert stale(tmp_path / "models" / "backbone", "org/hub-model", tmp_path) is None  # not a local folder
    shutil.copytree(src, tmp_path / "other")
    assert stale(tmp_path / "models" / "backbone", "other", tmp_path) == "built from 'src', backbone.source is now 'other'"


def test_a_digest_reuses_unchanged_files_hashes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a" * 10)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x").write_text("ignored")
    first = folder_digest(tmp_path)
    assert list(first["files"]) == ["a.bin"]
    fake = {"files": {"a.bin": [*first["files"]["a.bin"][:2], "f" * 64]}}
    assert folder_digest(tmp_path, fake)["files"]["a.bin"][2] == "f" * 64  # same size and mtime: not re-read
    assert source_record("org/name", "v1", tmp_path, commit="c0ffee") == {"source": "org/name", "kind": "hub",
                                                                         "revision": "v1", "commit": "c0ffee"}
