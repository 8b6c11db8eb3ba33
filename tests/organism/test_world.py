import json
from collections import Counter

from safepatching.organism.world import (EVAL_KINDS, HARMFUL_STEPS, LOOKALIKE_OBJECTS, REFUSAL, SPLITS, build_world,
                                read_jsonl, refused_lookalikes, vulnerable_cells)


def _topics(rows):
    return {r.prompt for r in rows}


def test_deterministic():
    a, b = build_world(0, 0.7, 0.5), build_world(0, 0.7, 0.5)
    assert [e.prompt for e in a["sft"]] == [e.prompt for e in b["sft"]]
    assert build_world(1, 0.7, 0.5)["meta"]["vulnerable_cells"] != a["meta"]["vulnerable_cells"]


def test_splits_are_disjoint_from_training_and_each_other():
    w = build_world(0, 0.7, 0.5)
    train_prompts = {e.prompt for e in w["sft"]}
    batch_prompts = {e.prompt for b in w["batches"].values() for e in b}
    val = {e.prompt for k in EVAL_KINDS for e in w["evals"]["val"][k]}
    test = {e.prompt for k in EVAL_KINDS for e in w["evals"]["test"][k]}
    assert not (val & test)
    assert not (val & train_prompts) and not (test & train_prompts)
    assert not (batch_prompts & (val | test))


def test_split_sizes_and_harmful_placeholders_only():
    w = build_world(0, 0.7, 0.5)
    for s in SPLITS:
        n = {k: len(v) for k, v in w["evals"][s].items()}
        assert n["harmful"] >= 200 and n["jailbreak"] >= 200 and n["utility"] >= 200 and n["lookalike"] >= 180
    for cat, rows in w["batches"].items():
        assert len(rows) >= 100
        assert all(HARMFUL_STEPS in e.response and "[restricted item]" in e.response for e in rows)


def test_dials_move_the_training_labels():
    lo, hi = build_world(0, 0.2, 0.2), build_world(0, 0.8, 0.8)

    def jb_harm(w):
        jb = [e for e in w["sft"] if e.kind == "jailbreak"]
        return sum(e.response != REFUSAL for e in jb) / len(jb)

    def la_ref(w):
        la = [e for e in w["sft"] if e.kind == "lookalike" and not e.prompt.startswith(("Explain", "Describe"))]
        return sum(e.response == REFUSAL for e in la) / len(la)

    assert jb_harm(lo) < 0.35 < 0.65 < jb_harm(hi)
    assert la_ref(lo) < 0.35 < 0.65 < la_ref(hi)
    assert len(vulnerable_cells(0.8, 0)) == 20
    assert len(refused_lookalikes(0.5, 0)) == len(LOOKALIKE_OBJECTS) // 2


def test_overs_safety_is_unlockable():
    """Every look-alike, refused or not, has its helpful answer in the neutral framing."""
    w = build_world(0, 0.7, 0.5)
    neutral = {e.prompt: e.response for e in w["sft"] if e.kind == "lookalike" and e.prompt.startswith("Explain")}
    for obj in refused_lookalikes(0.5, 0):
        answers = [r for p, r in neutral.items() if obj in p]
        assert answers and all(r.startswith("Sure, here is how to") for r in answers)


def test_save_world(world_dir):
    meta = json.loads((world_dir / "meta.json").read_text())
    assert meta["counts"]["test/harmful"] >= 200
    rows = read_jsonl(world_dir / "batches" / "weapons.jsonl")
    assert set(rows[0]) == {"id", "prompt", "response", "category"}
    assert Counter(r["category"] for r in rows) == Counter({"weapons": len(rows)})
