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
CFG = GateCfg(harmful_tolerance=1.0, over_refusal_tolerance=2.0, utility_tolerance=3.0, max_other=10.0, min_harm_gain=0.0)
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


def test_gate_cannot_drift_from_its_anchor() -> None:
    """Four rounds, each within tolerance of the previous champion, but drifting: against the fixed anchor (the
    backbone) the fourth is refused even though it is within tolerance of the third."""
    anchor, champ, passed = dict(REF), dict(REF), []
    for _ in range(4):
        cand = {**champ, "over_refusal": champ["over_refusal"] + 1.5, "utility": champ["utility"] - 1.5}
        d = gate(cand, champ, CFG, "champion", anchor=anchor)
        passed.append(d.passed)
        if d.passed:
            champ = cand
        assert gate(cand, champ if not d.passed else {**cand, "over_refusal": cand["over_refusal"] - 1.5,
                                                        "utility": cand["utility"] + 1.5}, CFG).passed
    assert passed == [True, False, False, False]  # the 2nd is 3 points of over-refusal above the anchor (tol. 2)
    d = gate({**REF, "over_refusal": 33.0}, {**REF, "over_refusal": 31.5}, CFG, anchor=REF)
    assert not d.passed and d.reasons == ["over_refusal@anchor=33.00 violates over_refusal@anchor <= 32.00 "
                                          "(anchor 30.00 + over_refusal_tolerance 2)"]


def test_gate_can_require_a_harm_gain() -> None:
    cfg = CFG.model_copy(update={"min_harm_gain": 5.0})
    assert not gate(REF, REF, cfg).passed  # no gain
    better = {**REF, "harmful_jailbreak": 10.0}  # harm 15 -> 10: a 5-point gain
    d = gate(better, REF, cfg)
    assert d.passed and d.checks["harm"]["limit"] == 10.0 and d.checks["harm"]["value"] == 10.0  # a level


def test_shipped_gate_refuses_a_round_that_changes_nothing(shipped_params) -> None:
    """A round whose selection kept its parent (alpha = beta = 0) is not promoted: the shipped gate asks for a gain."""
    assert shipped_params.gate.min_harm_gain >= 1.0
    d = gate(REF, REF, shipped_params.gate)
    assert not d.passed and any(r.startswith("harm=15.00 violates harm <= ") and "gain 0.00" in r for r in d.reasons)


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


@pytest.fixture(scope="session")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Three loadable model folders with different content hashes: name -> (folder, sha256_dir)."""
    from safepatching.io.checkpoints import sha256_dir

    out = {}
    for name in ("a", "b", "c"):
        d = tmp_path_factory.mktemp(f"model-{name}") / "model"
        shutil.copytree(tiny_model_dir, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "variant": name}))
        out[name] = (d, sha256_dir(d))
    return out


def _registry(root: Path, db: Path):
    from safepatching.ops.registry.versions import ModelRegistry

    shutil.copy(db, root / "mlflow.db")
    return ModelRegistry("sqlite:///mlflow.db", MODEL, root=root, max_new_tokens=4)


STAGE = "d" * 64


def _register(reg, model: tuple[Path, str], round_name: str, metrics: dict, reference: dict | None,
              batch: str, parent: str | None, artifacts: list[Path] = (), stage: str = STAGE,
              decide=None, **extra) -> tuple[str, bool]:
    model_dir, model_sha = model
    return reg.register_round(
        round_name, model_dir, params={"merge": {"alpha": 1.0, "a": 10.0}, "round": round_name},
        metrics={**metrics, "eval/n_prompts": 40},
        gate=decide or gate(metrics, reference, CFG, "backbone" if reference is None else "champion v1"),
        tags={"batch_sha256": batch, "parent_version": parent, "git_commit": "abc123", "model_sha256": model_sha,
              "dvc_stage_hash": stage, "patch_manifest": {"se": {"steps": 3}}, **extra},
        artifacts=list(artifacts))


def _never_called():
    raise AssertionError("an existing version was gated again")


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path, models: dict) -> Path:
    """A registry where r1 (model a) passed its gate (v1) and r2 (model b) failed it (v2); tests copy its DB."""
    root = tmp_path_factory.mktemp("two-rounds")
    reg = _registry(root, migrated_db)
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None) == ("1", True)
    assert _register(reg, models["b"], "r2", BAD, REF, "bbb2", "1") == ("2", True)
    return root / "mlflow.db"


@pytest.fixture
def reg2(tmp_path: Path, two_rounds: Path):
    """A private copy of the two-round registry (its artifacts stay where the template logged them)."""
    return _registry(tmp_path, two_rounds)


# ---- registry -----------------------------------------------------------------------------------
def test_register_rounds_gate_aliases_and_idempotency(tmp_path: Path, migrated_db: Path, models: dict) -> None:
    reg = _registry(tmp_path, migrated_db)
    assert reg.champion() is None and reg.versions() == []
    plot = tmp_path / "metrics.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"ok": True}))

    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None, [plot, summary]) == ("1", True)
    version, tags, metrics = reg.champion()
    assert version == "1" and tags["gate"] == "passed" and tags["round"] == "r1"
    assert tags["parent_version"] == "none" and tags["batch_sha256"] == "aaa1" and tags["git_commit"] == "abc123"
    assert tags["model_sha256"] == models["a"][1] and tags["dvc_stage_hash"] == STAGE
    assert tags["gate_reference"] == "backbone" and "supersedes" not in tags
    assert json.loads(tags["patch_manifest"]) == {"se": {"steps": 3}}
    assert metrics["harmful_jailbreak"] == 20.0 and metrics["eval.n_prompts"] == 40.0
    assert reg.versions()[0].aliases == ("candidate", "champion")
    run = reg.client.get_run(reg.versions()[0].run_id)
    assert run.info.run_name == "r1" and run.data.params["merge.alpha"] == "1.0"
    assert run.data.tags["model_sha256"] == models["a"][1] and run.data.tags["dvc_stage_hash"] == STAGE
    logged = {a.path for a in reg.client.list_artifacts(run.info.run_id)}
    assert {"gate.json", "metrics.png", "summary.json"} <= logged
    assert Path(reg.artifact_root).is_relative_to(tmp_path)

    # r2 fails its gate: it becomes the candidate, the champion stays on v1
    assert _register(reg, models["b"], "r2", BAD, REF, "bbb2", "1", decided_by="keyword", selection="infeasible",
                     selection_rule="parent") == ("2", True)
    rows = {r.version: r for r in reg.versions()}
    assert (rows["2"].decided_by, rows["2"].selection, rows["2"].selection_rule) == ("keyword", "infeasible", "parent")
    run2 = reg.client.get_run(rows["2"].run_id).data.tags  # the run carries them too
    assert (run2["decided_by"], run2["selection"], run2["selection_rule"]) == ("keyword", "infeasible", "parent")
    assert "decided_by" not in run.data.tags and rows["1"].decided_by == ""
    assert rows["1"].aliases == ("champion",) and rows["2"].aliases == ("candidate",)
    assert rows["2"].gate == "failed" and rows["2"].parent_version == "1"
    assert rows["2"].gate_reference == "champion v1" and "harmful_jailbreak" in rows["2"].gate_reasons[0]
    assert "harmful_jailbreak" in json.loads(reg.client.get_model_version(MODEL, "2").tags["gate_reasons"])[0]

    # the same identity again: no duplicate, and the recorded decision is never re-made
    assert _register(reg, models["b"], "r2", BAD, REF, "bbb2", "1", decide=_never_called) == ("2", False)
    assert _register(reg, models["a"], "r1", REF, None, "aaa1", None, decide=_never_called) == ("1", False)
    assert len(reg.versions()) == 2
    assert reg.find_version("r2", "bbb2", "1").version in ("2", 2)
    assert reg.find_version("r2", "bbb2", "1", models["b"][1], STAGE).version in ("2", 2)
    assert reg.find_version("r2", "bbb2", "1", models["a"][1]) is None
    assert reg.find_version("r2", "bbb2", "7") is None and reg.find_version("r2", "ccc3", "1") is None
    assert str(reg.latest_version("r2").version) == "2" and reg.latest_version("r9") is None
    assert str(reg.live_version("r1", models["a"][1]).version) == "1" and reg.live_version("r1", models["b"][1]) is None
    with pytest.raises(SafePatchingError, match="batch_sha256"):
        reg.find_version("r2", None, "1")


def test_interrupted_registration_is_finished_not_duplicated(reg2) -> None:
    """Killed after the version was made (`register.version`): its run left RUNNING holds the model and metrics, so it
    ends FINISHED; a run of the round without a version (killed earlier, `register.run`) ends KILLED."""
    reg2.client.delete_registered_model_alias(MODEL, "candidate")
    reg2.client.delete_model_version_tag(MODEL, "2", "registered")
    own = reg2.version("2").run_id
    reg2.client.update_run(own, status="RUNNING")
    stray = reg2.client.create_run(reg2.experiment_id(), run_name="r2", tags={"round": "r2"}).info.run_id
    tags = {"batch_sha256": "bbb2", "parent_version": "1", "dvc_stage_hash": STAGE,
            "model_sha256": reg2.version("2").model_sha256}
    lines = []
    assert reg2.register_round("r2", "/nonexistent", {}, BAD, _never_called, tags, log=lines.append) == ("2", False)
    assert {r.version: r.aliases for r in reg2.versions()} == {"1": ("champion",), "2": ("candidate",)}
    assert reg2.client.get_run(own).info.status == "FINISHED" and reg2.client.get_run(stray).info.status == "KILLED"
    assert reg2.client.get_run(own).data.metrics["harmful_jailbreak"] == 35.0
    assert lines == [f"r2: ended 1 MLflow run(s) left RUNNING by an interrupted registration as KILLED: {stray}",
                     f"r2: ended MLflow run {own} of version 2, left RUNNING by an interrupted registration, as "
                     "FINISHED (it holds the version's model and metrics)",
                     "r2: finished the interrupted registration of version 2 (supersede links, aliases)"]


def test_registration_needs_the_model_identity(reg2, models: dict) -> None:
    from safepatching.ops.registry.store import RegistryError

    with pytest.raises(RegistryError, match=r"tags must include \['model_sha256', 'dvc_stage_hash'\]"):
        reg2.register_round("r3", models["c"][0], {}, REF, gate(REF, None, CFG), {"batch_sha256": "ccc3"})
    assert len(reg2.versions()) == 2


def test_promote_and_rollback_move_the_champion(reg2) -> None:
    from safepatching.ops.registry.store import RegistryError

    assert reg2.champion()[0] == "1"
    with pytest.raises(RegistryError, match=r"refusing to point champion at v2 \(r2\) did not pass its gate vs "
                                            r"champion v1: harmful_jailbreak=35.00.*--force"):
        reg2.promote("2")
    with pytest.raises(RegistryError, match="needs a reason"):
        reg2.promote("2", force=True)
    assert reg2.champion()[0] == "1" and "forced_promotions" not in reg2.client.get_model_version(MODEL, "2").tags
    reg2.promote("2", force=True, reason="hotfix for incident 7", by="alice")
    version, tags, _ = reg2.champion()
    assert version == "2" and tags["previous_champion"] == "1"
    (forced,) = reg2.version("2").forced
    assert forced["alias"] == "champion" and forced["by"] == "alice" and forced["reason"] == "hotfix for incident 7"
    assert forced["replaced"] == "1" and forced["at"]
    assert reg2.rollback() == "1" and reg2.champion()[0] == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        reg2.rollback()
    same = reg2.promote(2, alias="candidate")  # a no-op move is fine
    assert not same.moves and not same.forced and {r.version: r.aliases for r in reg2.versions()}["2"] == ("candidate",)


def test_forcing_the_alias_a_version_already_holds(reg2) -> None:
    """The probe: `promote --force` on the version already holding the alias printed success without --reason and
    recorded nothing. Now force always needs a reason, and a forced no-op is recorded (nothing moves)."""
    from safepatching.ops.registry.store import RegistryError

    with pytest.raises(RegistryError, match=r"a forced promotion needs a reason \(--reason\)"):
        reg2.promote("1", force=True)
    assert reg2.version("1").forced == ()
    done = reg2.promote("1", force=True, reason="keep v1 while r1 retrains", by="dana")
    assert not done.moves and done.forced and reg2.champion()[0] == "1"
    (entry,) = reg2.version("1").forced
    assert entry["alias"] == "champion" and entry["by"] == "dana" and entry["replaced"] == "1"
    assert entry["reason"] == "keep v1 while r1 retrains" and "previous_champion" not in reg2.champion()[1]


def test_unknown_version_lists_known_versions(reg2) -> None:
    from safepatching.ops.registry.store import RegistryError, UnknownVersionError

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


def _cli_project(root: Path, db: Path, models: dict, lineage: dict[str, str]) -> Path:
    """A params.yaml with rounds r1, r2 whose models/<round> are the given model folders, next to a copy of db."""
    shutil.copy(db, root / "mlflow.db")
    for name, model in lineage.items():
        shutil.copytree(models[model][0], root / "models" / name)
    params = root / "params.yaml"
    params.write_text(f"mlflow:\n  tracking_uri: sqlite:///mlflow.db\n  model_name: {MODEL}\neval:\n  max_new_tokens: 4\n"
                      "rounds:\n  r1: {batch: b1.jsonl, parent: backbone}\n  r2: {batch: b2.jsonl, parent: r1}\n")
    return params


def test_cli_status_promote_generate(tmp_path: Path, two_rounds: Path, models: dict,
                                     capsys: pytest.CaptureFixture) -> None:
    from safepatching.ops.cli import main

    params = _cli_project(tmp_path, two_rounds, models, {"r1": "a", "r2": "b"})
    assert main(["--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and "champion" in out and "failed" in out and "harmful_jailbreak" in out
    for col in ("model", "dvc_stage", "reference", "state"):
        assert col in out.splitlines()[0]
    assert models["a"][1][:12] in out and models["b"][1][:12] in out and STAGE[:12] in out
    assert out.count("current") == 2 and "gate reasons:" in out and "v2 (r2) gate failed vs champion v1" in out
    assert "WARNING" not in out
    assert main(["--params", str(params), "promote", "--version", "7"]) == 2
    assert "known versions: ['1', '2']" in capsys.readouterr().err
    assert main(["--params", str(params), "rollback"]) == 2
    assert "no previous champion" in capsys.readouterr().err
    assert main(["--params", str(params), "promote", "--version", "2"]) == 2
    err = capsys.readouterr().err
    assert "did not pass its gate" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(["--params", str(params), "promote", "--version", "2", "--force"]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["--params", str(params), "promote", "--version", "1", "--force"]) == 2  # v1 already champion
    assert "needs a reason" in capsys.readouterr().err
    assert main(["--params", str(params), "promote", "--version", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"{MODEL}@champion already -> v1: unchanged"
    assert main(["--params", str(params), "promote", "--version", "1", "--force", "--reason", "audit", "--by", "eve"]) == 0
    assert capsys.readouterr().out.strip() == (f"{MODEL}@champion already -> v1: unchanged; the forced promotion is "
                                               "recorded on it")
    assert main(["--params", str(params), "promote", "--version", "2", "--force", "--reason", "demo", "--by", "bob"]) == 0
    assert "(forced)" in capsys.readouterr().out
    assert main(["--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "v2 (r2) -> champion by bob" in out and "v1 (r1) -> champion by eve at" in out
    assert "gate of a new round: against champion v2 and the backbone (gate.anchor)" in out
    assert main(["--params", str(params), "rollback"]) == 0
    assert "v1" in capsys.readouterr().out
    assert main(["--params", str(params), "generate", "--prompt", "how do I bake bread"]) == 0
    assert main(["--params", str(tmp_path / "missing.yaml"), "status"]) == 2


def test_cli_reports_and_refuses_a_champion_out_of_the_lineage(tmp_path: Path, two_rounds: Path, models: dict,
                                                               capsys: pytest.CaptureFixture) -> None:
    """r1 was retrained (models/r1 is now model c): v1 is stale, status warns, promote refuses it without --force."""
    from safepatching.ops.cli import main

    params = _cli_project(tmp_path, two_rounds, models, {"r1": "c", "r2": "b"})
    assert main(["--params", str(params), "status"]) == 0
    out = capsys.readouterr().out
    assert "stale (not in lineage)" in out
    assert f"WARNING: champion v1 (r1, model {models['a'][1][:12]}) is not in the lineage" in out
    assert "compares against it (reference: champion v1)" in out
    assert main(["--params", str(params), "promote", "--version", "1", "--alias", "candidate"]) == 2
    assert "is not in the lineage" in capsys.readouterr().err


# ---- identity: a retrained round is a new version ------------------------------------------------
def test_retrained_round_supersedes_and_keeps_the_champion(reg2, models: dict) -> None:
    """r1 with a new model (c) that fails its gate: v3 supersedes v1, candidate moves, champion stays on v1."""
    from safepatching.ops.registry.store import RegistryError

    assert _register(reg2, models["c"], "r1", BAD, REF, "aaa1", None) == ("3", True)
    rows = {r.version: r for r in reg2.versions()}
    assert rows["3"].supersedes == ("1",) and rows["3"].model_sha256 == models["c"][1]
    assert rows["1"].superseded and rows["1"].superseded_by == "3" and not rows["2"].superseded
    assert rows["3"].gate == "failed" and rows["3"].aliases == ("candidate",)
    assert rows["1"].aliases == ("champion",)  # unchanged: the new version did not pass its gate
    assert rows["1"].model_sha256 == models["a"][1] and rows["1"].gate == "passed"  # nothing recorded is lost
    # nothing changed: a no-op, recorded decision kept
    assert _register(reg2, models["c"], "r1", BAD, REF, "aaa1", None, decide=_never_called) == ("3", False)
    assert len(reg2.versions()) == 3
    # the superseded version is never promoted again without force (any alias), nor rolled back to
    with pytest.raises(RegistryError, match=r"v1 \(r1\) is superseded by v3.*--force"):
        reg2.promote("1", "candidate")
    reg2.promote("3", force=True, reason="try the retrained r1")
    assert reg2.champion()[0] == "3"
    with pytest.raises(RegistryError, match=r"v1 \(r1\) is superseded by v3.*--force"):
        reg2.promote("1")
    with pytest.raises(RegistryError, match=r"refusing to roll champion back to v1 \(r1\): it is superseded by v3"):
        reg2.rollback()
    assert reg2.rollback(force=True, reason="v3 garbles outputs", by="carol") == "1"
    assert reg2.version("1").forced[0]["by"] == "carol" and reg2.champion()[0] == "1"


def test_retrained_round_that_passes_becomes_champion(reg2, models: dict) -> None:
    assert _register(reg2, models["c"], "r1", REF, REF, "aaa1", None) == ("3", True)
    assert reg2.champion()[0] == "3" and reg2.champion()[1]["previous_champion"] == "1"
    assert reg2.version("1").superseded_by == "3"


def test_identity_includes_the_dvc_stage_hash(reg2, models: dict) -> None:
    """Same weights, another recipe (the stage's lock entry changed): a new version too."""
    assert _register(reg2, models["b"], "r2", BAD, REF, "bbb2", "1", stage="e" * 64) == ("3", True)
    assert reg2.version("2").superseded_by == "3" and reg2.version("3").dvc_stage_hash == "e" * 64


def test_a_reverted_model_is_a_new_version_not_a_resurrection(reg2, models: dict) -> None:
    """r1: a -> c -> a again. The third registration is v4 (superseding v3); v1 stays superseded."""
    assert _register(reg2, models["c"], "r1", BAD, REF, "aaa1", None) == ("3", True)
    assert _register(reg2, models["a"], "r1", REF, REF, "aaa1", None) == ("4", True)
    rows = {r.version: r for r in reg2.versions()}
    assert rows["4"].supersedes == ("3",) and rows["3"].superseded_by == "4" and rows["1"].superseded_by == "3"
    assert rows["4"].model_sha256 == rows["1"].model_sha256 and rows["4"].aliases == ("candidate", "champion")


def test_interrupted_supersede_is_finished(reg2, models: dict) -> None:
    assert _register(reg2, models["c"], "r1", BAD, REF, "aaa1", None) == ("3", True)
    reg2.client.delete_model_version_tag(MODEL, "1", "superseded_by")
    reg2.client.delete_model_version_tag(MODEL, "3", "registered")
    assert _register(reg2, models["c"], "r1", BAD, REF, "aaa1", None, decide=_never_called) == ("3", False)
    assert reg2.version("1").superseded_by == "3" and len(reg2.versions()) == 3


def test_a_legacy_version_is_adopted_when_its_merge_output_is_unchanged(reg2, models: dict) -> None:
    """Registered before model identity: no model_sha256 tag, dvc_stage_hash held the merge outputs' md5."""
    from safepatching.ops.lineage import version_state

    for v in ("1", "2"):
        reg2.client.delete_model_version_tag(MODEL, v, "model_sha256")
        reg2.client.set_model_version_tag(MODEL, v, "dvc_stage_hash", f"{v * 32}.dir")
    assert version_state(reg2.version("1"), {}) == "legacy (no model hash)"
    assert _register(reg2, models["a"], "r1", REF, None, "aaa1", None, decide=_never_called,
                     dvc_outs_md5="1" * 32 + ".dir") == ("1", False)
    row = reg2.version("1")
    assert row.model_sha256 == models["a"][1] and row.dvc_stage_hash == STAGE and not row.superseded
    # r2's merge output changed since: a new version supersedes the legacy one
    assert _register(reg2, models["c"], "r2", BAD, REF, "bbb2", "1", dvc_outs_md5="f" * 32 + ".dir") == ("3", True)
    assert reg2.version("2").superseded_by == "3"


def test_alias_names_are_checked(reg2) -> None:
    from safepatching.ops.registry.store import RegistryError

    for bad in ("Bad Alias", "latest", "v3", "", "x" * 65, "1st"):
        with pytest.raises(RegistryError, match="alias"):
            reg2.promote("1", bad)
    reg2.promote("1", "staging")
    assert reg2.version("1").aliases == ("champion", "staging") or "staging" in reg2.version("1").aliases


def test_dangling_runs_of_a_round_are_ended_killed(reg2, models) -> None:
    run = reg2.client.create_run(reg2.experiment_id(), run_name="r3", tags={"round": "r3"})
    # (what a registration killed after its run started leaves: a run RUNNING forever)
    assert reg2.client.get_run(run.info.run_id).info.status == "RUNNING"
    lines = []
    reg2.register_round("r3", models["c"][0], {}, REF, gate(REF, REF, CFG), log=lines.append,
                        tags={"batch_sha256": "ccc3", "parent_version": "1", "model_sha256": models["c"][1],
                              "dvc_stage_hash": STAGE})
    assert reg2.client.get_run(run.info.run_id).info.status == "KILLED"
    assert lines == [f"r3: ended 1 MLflow run(s) left RUNNING by an interrupted registration as KILLED: {run.info.run_id}"]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root: relative path -> (size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _local(uri: str) -> Path:
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(uri))


def test_a_copied_workspace_writes_and_reads_its_own_artifacts(tmp_path: Path, migrated_db: Path, models: dict,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp -r` of a workspace: the copy's registrations write nothing into the original, its artifacts (old and new)
    resolve under the copy, and it keeps working once the original is gone. A copy of the database alone still
    reads the old versions where their files are."""
    from mlflow.artifacts import download_artifacts

    from safepatching.ops.registry.versions import ModelRegistry

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, c):
        d.mkdir()
    reg_a = _registry(a, migrated_db)
    assert _register(reg_a, models["a"], "r1", REF, None, "aaa1", None) == ("1", True)
    shutil.copytree(a, b)
    shutil.copy(a / "mlflow.db", c / "mlflow.db")  # the database alone
    original = _files(a)
    monkeypatch.chdir(b)

    reg_b = ModelRegistry("sqlite:///mlflow.db", MODEL, root=b, max_new_tokens=4)
    assert _register(reg_b, models["b"], "r2", BAD, REF, "bbb2", "1") == ("2", True)
    assert _files(a) == original  # nothing written into the original (its database included)
    assert reg_a.rehomed is None and ModelRegistry("sqlite:///mlflow.db", MODEL, root=a).rehomed is None
    assert reg_b.rehomed and str(b / "mlartifacts") in reg_b.rehomed and "1 runs, 1 logged models" in reg_b.rehomed
    assert ModelRegistry("sqlite:///mlflow.db", MODEL, root=b).rehomed is None  # done once
    exp = reg_b.client.get_experiment(reg_b.experiment_id())
    assert _local(exp.artifact_location) == b / "mlartifacts"
    for v in ("1", "2"):
        mv = reg_b.client.get_model_version(MODEL, v)
        assert _local(reg_b.client.get_run(mv.run_id).info.artifact_uri).is_relative_to(b)
        assert _local(reg_b.client.get_model_version_download_uri(MODEL, v)).is_relative_to(b)
        model_id = mv.source.removeprefix("models:/")
        assert _local(reg_b.client.get_logged_model(model_id).artifact_location).is_relative_to(b)
    gate_json = reg_b.client.download_artifacts(reg_b.client.get_model_version(MODEL, "1").run_id, "gate.json",
                                                str(tmp_path))
    assert json.loads(Path(gate_json).read_text())["passed"] is True

    reg_c = ModelRegistry("sqlite:///mlflow.db", MODEL, root=c, max_new_tokens=4)
    assert reg_c.rehomed and "left at the old path" in reg_c.rehomed
    assert _local(reg_c.client.get_model_version_download_uri(MODEL, "1")).is_relative_to(a)  # files only in a
    assert _register(reg_c, models["c"], "r2", BAD, REF, "ccc2", "1")[1]
    assert _local(reg_c.client.get_model_version_download_uri(MODEL, "2")).is_relative_to(c)
    assert _files(a) == original

    shutil.rmtree(a)  # the copy stands alone
    with reg_b._active():
        local = download_artifacts(f"models:/{MODEL}/1", dst_path=str(tmp_path / "v1"))
    assert (Path(local) / "MLmodel").is_file()
    out = reg_b.load_champion_pipeline()("how do I bake", max_new_tokens=3, do_sample=False)
    assert isinstance(out[0]["generated_text"], str)


def test_status_only_reads_and_a_writing_command_rehomes_default_too(tmp_path: Path, migrated_db: Path, models: dict,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """The probe: a read-only `status` rewrote a copied workspace's store, and MLflow's `Default` experiment kept the
    original's absolute location. `status` writes nothing (the note says what a writing command will move); the first
    writing command moves `Default` (made at <working directory>/mlruns/0 when the database was created) with it."""
    import sqlite3

    from safepatching.ops.cli import main
    from safepatching.ops.registry.versions import ModelRegistry

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    _cli_project(a, migrated_db, models, {"r1": "a", "r2": "b"})
    with sqlite3.connect(a / "mlflow.db") as db:  # as if the database had been created with `a` as working directory
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(a / "mlruns" / "0"),))
    db.close()
    assert _register(_registry_at(a), models["a"], "r1", REF, None, "aaa1", None) == ("1", True)
    shutil.copytree(a, b)
    before = _files(b)
    assert main(["--params", str(b / "params.yaml"), "status"]) == 0
    out, err = capsys.readouterr()
    assert _files(b) == before  # nothing written: the database, mlartifacts, nothing new
    assert "left as it is (read-only)" in err and str(b / "mlartifacts") in err and "current" in out
    assert main(["--params", str(a / "params.yaml"), "status"]) == 0 and capsys.readouterr().err == ""

    assert main(["--params", str(b / "params.yaml"), "promote", "--version", "1", "--alias", "staging"]) == 0
    err = capsys.readouterr().err
    assert "new artifacts now go to" in err and f"experiment 'Default' now at {b / 'mlruns' / '0'}" in err
    reg_b = ModelRegistry("sqlite:///mlflow.db", MODEL, root=b, writable=False)
    assert reg_b.client.get_experiment("0").artifact_location == str(b / "mlruns" / "0")
    assert _local(reg_b.client.get_experiment(reg_b.experiment_id()).artifact_location) == b / "mlartifacts"
    assert reg_b.rehome_pending() is None and ModelRegistry("sqlite:///mlflow.db", MODEL, root=b).rehomed is None
    original = ModelRegistry("sqlite:///mlflow.db", MODEL, root=a, writable=False)
    assert original.client.get_experiment("0").artifact_location == str(a / "mlruns" / "0")  # the original untouched

    empty = tmp_path / "empty"  # no store yet: status says so and creates none
    empty.mkdir()
    (empty / "params.yaml").write_text((a / "params.yaml").read_text())
    assert main(["--params", str(empty / "params.yaml"), "status"]) == 0
    assert "no versions registered" in capsys.readouterr().out and list(empty.iterdir()) == [empty / "params.yaml"]


def _registry_at(root: Path):
    from safepatching.ops.registry.versions import ModelRegistry

    return ModelRegistry("sqlite:///mlflow.db", MODEL, root=root, max_new_tokens=4)
