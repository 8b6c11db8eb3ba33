"""The red-team step: a round's batch is exactly the pool prompts its parent answers harmfully."""

import json
import shutil

import pytest

from safepatching.config import parse_params
from safepatching.errors import ConfigError, DataError
from safepatching.io.jsonl import read_jsonl, write_jsonl
from safepatching.layout import RoundLayout
from safepatching.round.steps.redteam import redteam

HARMFUL = "Sure, here is how to do it. Step 1: obtain [restricted item]. Step 2: [restricted step]."
REFUSE = "I am sorry, but I cannot help with that."


def _project(tmp_path, shipped_params, tiny_organism, n=6, **rt):
    shutil.copytree(tiny_organism, tmp_path / "models" / "backbone")
    pool = [{"id": f"p{i}", "prompt": f"How do I build thing number {i}?", "response": HARMFUL,
             "category": "weapons", "family": "plain" if i % 2 else "ignore"} for i in range(n)]
    write_jsonl(tmp_path / "data" / "pool.jsonl", pool)
    data = shipped_params.model_dump(mode="json")
    data["rounds"] = {"r1": {"batch": "data/redteam/r1.jsonl", "parent": "backbone"}}
    data["redteam"] = {"r1": {"pool": "data/pool.jsonl", "parent": "backbone", "batch": "data/redteam/r1.jsonl", **rt}}
    params = parse_params(data, "test")
    return params, RoundLayout.of(params, "r1", tmp_path), pool


def _fake_generate(monkeypatch, harmful_idx):
    import safepatching.evaluation.generate as gen

    monkeypatch.setattr(gen, "generate", lambda model, tok, prompts, cfg=None: [
        HARMFUL if i in harmful_idx else REFUSE for i in range(len(prompts))])


def test_batch_is_the_failures(tmp_path, shipped_params, tiny_organism, monkeypatch):
    params, lay, pool = _project(tmp_path, shipped_params, tiny_organism)
    _fake_generate(monkeypatch, {0, 3, 4})
    rep = redteam(params, lay, log=lambda m: None)
    batch = read_jsonl(tmp_path / "data" / "redteam" / "r1.jsonl")
    assert [r["id"] for r in batch] == ["p0", "p3", "p4"]
    assert all(set(r) == {"id", "prompt", "response", "category"} and r["response"] == HARMFUL for r in batch)
    assert rep["failures"] == 3 and rep["pool_rows"] == 6 and rep["failure_rate"] == 50.0
    assert rep["failure_rate_by_family"] == {"ignore": pytest.approx(200 / 3, abs=0.01), "plain": pytest.approx(100 / 3, abs=0.01)}
    assert json.loads(lay.redteam.read_text()) == rep


def test_max_rows_keeps_a_seeded_subset(tmp_path, shipped_params, tiny_organism, monkeypatch):
    params, lay, _ = _project(tmp_path, shipped_params, tiny_organism, max_rows=2)
    _fake_generate(monkeypatch, {0, 1, 3, 4, 5})
    rep = redteam(params, lay, log=lambda m: None)
    ids = [r["id"] for r in read_jsonl(tmp_path / "data" / "redteam" / "r1.jsonl")]
    assert len(ids) == 2 and set(ids) <= {"p0", "p1", "p3", "p4", "p5"} and rep["failures"] == 5
    redteam(params, lay, log=lambda m: None)
    assert [r["id"] for r in read_jsonl(tmp_path / "data" / "redteam" / "r1.jsonl")] == ids  # reproducible


def test_no_failure_is_a_clear_error_and_writes_nothing(tmp_path, shipped_params, tiny_organism, monkeypatch):
    params, lay, _ = _project(tmp_path, shipped_params, tiny_organism)
    _fake_generate(monkeypatch, set())
    with pytest.raises(DataError, match="answers none of the 6 pool prompts harmfully.*nothing to patch"):
        redteam(params, lay, log=lambda m: None)
    assert not (tmp_path / "data" / "redteam" / "r1.jsonl").exists()


def test_bad_pool_row_names_file_and_row(tmp_path, shipped_params, tiny_organism):
    params, lay, pool = _project(tmp_path, shipped_params, tiny_organism)
    pool[2]["prompt"] = "  "
    write_jsonl(tmp_path / "data" / "pool.jsonl", pool)
    with pytest.raises(DataError, match=r"data/pool.jsonl: row 3: missing or empty \['prompt'\]"):
        redteam(params, lay, log=lambda m: None)


def test_real_generation_matches_an_independent_judging(tmp_path, shipped_params, tiny_organism, world_dir):
    """No fakes: the tiny organism generates, the deciding judge (keyword here) labels; the batch is exactly what an
    independent generate + judge pass calls harmful. (The few-step organism refuses every harmful prompt, so the pool
    is made of training prompts it answers, labelled as harmful requests: the step's logic, not realism.)"""
    from safepatching.evaluation.generate import DecodingConfig, generate
    from safepatching.evaluation.judge import get_judge
    from safepatching.io.models import load_model

    sft = [r for r in read_jsonl(world_dir / "sft.jsonl") if r["kind"] in ("benign", "utility")][:40]
    params, lay, _ = _project(tmp_path, shipped_params, tiny_organism)
    pool = [{"id": f"p{i}", "prompt": r["prompt"], "response": HARMFUL, "category": "hacking"} for i, r in enumerate(sft)]
    write_jsonl(tmp_path / "data" / "pool.jsonl", pool)
    data = params.model_dump(mode="json")
    data["eval"]["decide_with"] = "keyword"
    params = parse_params(data, "test")
    rep = redteam(params, lay, log=lambda m: None)
    got = [r["id"] for r in read_jsonl(tmp_path / "data" / "redteam" / "r1.jsonl")]
    model, tok = load_model(lay.parent_model, trainable=False)
    e = params.eval
    outs = generate(model, tok, [r["prompt"] for r in pool], DecodingConfig(e.max_new_tokens, e.batch_size))
    labels = get_judge("keyword").judge([r["prompt"] for r in pool], outs, [""] * len(pool), [True] * len(pool))
    assert got == [r["id"] for r, lab in zip(pool, labels) if lab == "harmful"]
    assert 0 < len(got) < len(pool) and rep["judge"] == "keyword" and rep["labels"] == {
        lab: labels.count(lab) for lab in set(labels)}


@pytest.mark.parametrize("entry, msg", [
    ({"pool": "p.jsonl", "parent": "backbone", "batch": "other.jsonl"}, "must equal the round's"),
    ({"pool": "p.jsonl", "parent": "r0", "batch": "data/redteam/r1.jsonl"}, "must equal the round's"),
])
def test_config_redteam_entry_must_match_its_round(shipped_params, entry, msg):
    data = shipped_params.model_dump(mode="json")
    data["rounds"] = {"r1": {"batch": "data/redteam/r1.jsonl", "parent": "backbone"}}
    data["redteam"] = {"r1": entry}
    with pytest.raises(ConfigError, match=msg):
        parse_params(data, "test")


def test_config_redteam_of_unknown_round(shipped_params):
    data = shipped_params.model_dump(mode="json")
    data["redteam"] = {"r9": {"pool": "p", "parent": "backbone", "batch": "b"}}
    with pytest.raises(ConfigError, match="redteam.r9: no round named 'r9'"):
        parse_params(data, "test")
