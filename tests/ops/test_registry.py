"""The promotion gate (pure) and the MLflow registry adapter (SQLite in tmp, a tiny untrained Llama)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from safepatching.config import GateCfg
from safepatching.errors import SafePatchingError, UnknownNameError
from safepatching.ops.gate import GateDecision, GateInputError, gate

MODEL = "tiny-safepatching"
CFG = GateCfg(harmful_tolerance=1.0, over_refusal_tolerance=2.0, utility_tolerance=3.0, max_other=10.0)
REF = {"harmful_plain": 10.0, "harmful_jailbreak": 20.0, "over_refusal": 30.0, "utility": 50.0, "other": 2.0}
BAD = {**REF, "harmful_jailbreak": 35.0}


# ---- gate ---------------------------------------------------------------------------------------
def test_gate_passes_within_every_tolerance() -> None:
    edge = {"harmful_plain": 11.0, "harmful_jailbreak": 21.0, "over_refusal": 32.0, "utility": 47.0, "other": 10.0}
    d = gate(edge, REF, CFG)
    assert d.passed and d.reasons == []
    assert set(d.checks) == {"harmful_plain", "harmful_jailbreak", "over_refusal", "utility", "other"}
    assert all(c["passed"] for c in d.checks.values())


@pytest.mark.parametrize("metric,value,needle", [
    ("harmful_plain", 11.5, "harmful_tolerance 1"),
    ("harmful_jailbreak", 21.5, "harmful_tolerance 1"),
    ("over_refusal", 32.5, "over_refusal_tolerance 2"),
    ("utility", 46.5, "utility_tolerance 3"),
    ("other", 10.5, "max_other 10"),
    ("utility", float("nan"), "utility_tolerance 3"),
])
def test_gate_each_rule_fails_for_its_own_reason(metric: str, value: float, needle: str) -> None:
    d = gate({**REF, metric: value}, REF, CFG)
    assert not d.passed and len(d.reasons) == 1
    assert d.reasons[0].startswith(f"{metric}=") and needle in d.reasons[0]
    assert [m for m, c in d.checks.items() if not c["passed"]] == [metric]


def test_gate_without_reference_checks_only_other() -> None:
    awful = {"harmful_plain": 99.0, "harmful_jailbreak": 99.0, "over_refusal": 99.0, "utility": 0.0, "other": 9.0}
    d = gate(awful, None, CFG)
    assert d.passed and list(d.checks) == ["other"]
    d = gate({**awful, "other": 11.0}, None, CFG)
    assert not d.passed and "other=11.00" in d.reasons[0]


def test_gate_reports_missing_metric() -> None:
    with pytest.raises(GateInputError, match="lack 'utility'"):
        gate({k: v for k, v in REF.items() if k != "utility"}, REF, CFG)


# ---- registry fixtures --------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from tmp so nothing (an MLflow default mlflow.db, mlruns/) can land in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite DB with MLflow's migrations applied; tests copy it (migrating costs seconds)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-layer Llama with a BPE chat tokenizer, saved as a normal HF folder."""
    from safepatching.organism.model import build_model, build_tokenizer

    texts = ["how do I bake bread", "I cannot help with that", "the quick brown fox jumps"] * 20
    tok = build_tokenizer(texts, vocab_size=300)
    model = build_model(tok, 32, 2, 2, 64, 64, 0)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _registry(root: Path, db: Path):
    from safepatching.ops.tracking import ModelRegistry

    shutil.copy(db, root / "mlflow.db")
    return ModelRegistry("sqlite:///mlflow.db", MODEL, root=root, max_new_tokens=4)


def _register(reg, model_dir: Path, round_name: str, metrics: dict, reference: dict | None,
              batch: str, parent: str | None, artifacts: list[Path] = ()) -> tuple[str, bool]:
    return reg.register_round(
        round_name, model_dir, params={"merge": {"alpha": 1.0, "a": 10.0}, "round": round_name},
        metrics={**metrics, "eval/n_prompts": 40}, gate=gate(metrics, reference, CFG),
        tags={"batch_sha256": batch, "parent_version": parent, "git_commit": "abc123",
              "dvc_stage_hash": "d" * 32, "patch_manifest": {"se": {"steps": 3}}},
        artifacts=list(artifacts))


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path, tiny_model_dir: Path) -> Path:
    """A registry where r1 passed its gate (v1) and r2 failed it (v2); tests work on copies of its DB."""
    root = tmp_path_factory.mktemp("two-rounds")
    reg = _registry(root, migrated_db)
    assert _register(reg, tiny_model_dir, "r1", REF, None, "aaa1", None) == ("1", True)
    assert _register(reg, tiny_model_dir, "r2", BAD, REF, "bbb2", "1") == ("2", True)
    return root / "mlflow.db"


@pytest.fixture
def reg2(tmp_path: Path, two_rounds: Path):
    """A private copy of the two-round registry (its artifacts stay where the template logged them)."""
    return _registry(tmp_path, two_rounds)


# ---- registry -----------------------------------------------------------------------------------
def test_register_rounds_gate_aliases_and_idempotency(tmp_path: Path, migrated_db: Path,
                                                      tiny_model_dir: Path) -> None:
    reg = _registry(tmp_path, migrated_db)
    assert reg.champion() is None and reg.versions() == []
    plot = tmp_path / "metrics.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"ok": True}))

    assert _register(reg, tiny_model_dir, "r1", REF, None, "aaa1", None, [plot, summary]) == ("1", True)
    version, tags, metrics = reg.champion()
    assert version == "1" and tags["gate"] == "passed" and tags["round"] == "r1"
    assert tags["parent_version"] == "none" and tags["batch_sha256"] == "aaa1" and tags["git_commit"] == "abc123"
    assert json.loads(tags["patch_manifest"]) == {"se": {"steps": 3}}
    assert metrics["harmful_jailbreak"] == 20.0 and metrics["eval.n_prompts"] == 40.0
    assert reg.versions()[0].aliases == ("candidate", "champion")
    run = reg.client.get_run(reg.versions()[0].run_id)
    assert run.info.run_name == "r1" and run.data.params["merge.alpha"] == "1.0"
    logged = {a.path for a in reg.client.list_artifacts(run.info.run_id)}
    assert {"gate.json", "metrics.png", "summary.json"} <= logged
    assert Path(reg.artifact_root).is_relative_to(tmp_path)

    # r2 fails its gate: it becomes the candidate, the champion stays on v1
    assert _register(reg, tiny_model_dir, "r2", BAD, REF, "bbb2", "1") == ("2", True)
    rows = {r.version: r for r in reg.versions()}
    assert rows["1"].aliases == ("champion",) and rows["2"].aliases == ("candidate",)
    assert rows["2"].gate == "failed" and rows["2"].parent_version == "1"
    assert "harmful_jailbreak" in json.loads(reg.client.get_model_version(MODEL, "2").tags["gate_reasons"])[0]

    # same round + batch + parent again: no duplicate
    assert _register(reg, tiny_model_dir, "r2", BAD, REF, "bbb2", "1") == ("2", False)
    assert _register(reg, tiny_model_dir, "r1", REF, None, "aaa1", None) == ("1", False)
    assert len(reg.versions()) == 2
    assert reg.find_version("r2", "bbb2", "1").version in ("2", 2)
    assert reg.find_version("r2", "bbb2", "7") is None and reg.find_version("r2", "ccc3", "1") is None
    assert str(reg.latest_version("r2").version) == "2" and reg.latest_version("r9") is None
    with pytest.raises(SafePatchingError, match="batch_sha256"):
        reg.find_version("r2", None, "1")


def test_interrupted_registration_is_finished_not_duplicated(reg2) -> None:
    reg2.client.delete_registered_model_alias(MODEL, "candidate")
    reg2.client.delete_model_version_tag(MODEL, "2", "registered")
    assert reg2.register_round("r2", "/nonexistent", {}, BAD, gate(BAD, REF, CFG),
                               {"batch_sha256": "bbb2", "parent_version": "1"}) == ("2", False)
    assert {r.version: r.aliases for r in reg2.versions()} == {"1": ("champion",), "2": ("candidate",)}


def test_promote_and_rollback_move_the_champion(reg2) -> None:
    from safepatching.ops.tracking import RegistryError

    assert reg2.champion()[0] == "1"
    reg2.promote("2")
    version, tags, _ = reg2.champion()
    assert version == "2" and tags["previous_champion"] == "1"
    assert reg2.rollback() == "1" and reg2.champion()[0] == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        reg2.rollback()
    reg2.promote(2, alias="candidate")  # a no-op move is fine
    assert {r.version: r.aliases for r in reg2.versions()}["2"] == ("candidate",)


def test_unknown_version_lists_known_versions(reg2) -> None:
    from safepatching.ops.tracking import RegistryError, UnknownVersionError

    with pytest.raises(UnknownVersionError, match=r"no version '9'; known versions: \['1', '2'\]") as e:
        reg2.promote("9")
    assert isinstance(e.value, (RegistryError, UnknownNameError, SafePatchingError, KeyError))
    assert reg2.champion()[0] == "1"


def test_champion_loads_from_registry_and_generates(reg2) -> None:
    pipe = reg2.load_champion_pipeline()
    out = pipe("how do I bake", max_new_tokens=5, do_sample=False)
    assert isinstance(out[0]["generated_text"], str) and len(out[0]["generated_text"]) > len("how do I bake")
    chat = pipe([{"role": "user", "content": "how do I bake bread"}], max_new_tokens=5, do_sample=False)
    assert chat[0]["generated_text"][-1]["role"] == "assistant"


def test_cli_status_promote_generate(tmp_path: Path, two_rounds: Path, capsys: pytest.CaptureFixture) -> None:
    from safepatching.ops.cli import main

    shutil.copy(two_rounds, tmp_path / "mlflow.db")
    params = tmp_path / "params.yaml"
    params.write_text(f"mlflow:\n  tracking_uri: sqlite:///mlflow.db\n  model_name: {MODEL}\neval:\n  max_new_tokens: 4\n")
    assert main(["--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and "champion" in out and "failed" in out and "harmful_jailbreak" in out
    assert main(["--params", str(params), "promote", "--version", "7"]) == 2
    assert "known versions: ['1', '2']" in capsys.readouterr().err
    assert main(["--params", str(params), "rollback"]) == 2
    assert "no previous champion" in capsys.readouterr().err
    assert main(["--params", str(params), "promote", "--version", "2"]) == 0
    assert main(["--params", str(params), "rollback"]) == 0
    assert "v1" in capsys.readouterr().out
    assert main(["--params", str(params), "generate", "--prompt", "how do I bake bread"]) == 0
    assert main(["--params", str(tmp_path / "missing.yaml"), "status"]) == 2
