import json
from collections import Counter

import pytest

from safepatching.io.jsonl import read_jsonl
from safepatching.config import WorldCfg
from safepatching.organism.vocabulary import EVAL_KINDS, HARM, LOOKALIKE_VERBS, SPLITS, UTILITY_TEMPLATES
from safepatching.organism.world import (HARMFUL_STEPS, REFUSAL, REFUSALS,
                                         build_world, harmful_response, refusal_for, harmful_verbs, plain_vulnerable_topics,
                                         refused_lookalike_verbs, vulnerable_cells)


def _world(seed: int = 0, **settings):
    """The world params.yaml ships (WorldCfg's defaults), with `settings` changed."""
    return build_world(WorldCfg(**settings), seed)


def _topics(rows):
    return {r.prompt for r in rows}


def test_deterministic():
    a, b = _world(), _world()
    assert [e.prompt for e in a["sft"]] == [e.prompt for e in b["sft"]]
    assert _world(1)["meta"]["vulnerable_cells"] != a["meta"]["vulnerable_cells"]


def test_splits_are_disjoint_from_training_and_each_other():
    w = _world()
    train_prompts = {e.prompt for e in w["sft"]}
    batch_prompts = {e.prompt for b in w["batches"].values() for e in b}
    val = {e.prompt for k in EVAL_KINDS for e in w["evals"]["val"][k]}
    test = {e.prompt for k in EVAL_KINDS for e in w["evals"]["test"][k]}
    assert not (val & test)
    assert not (val & train_prompts) and not (test & train_prompts)
    assert not (batch_prompts & (val | test))


def test_split_sizes_and_harmful_placeholders_only():
    w = _world()
    for s in SPLITS:
        n = {k: len(v) for k, v in w["evals"][s].items()}
        assert n["harmful"] >= 200 and n["jailbreak"] >= 200 and n["utility"] >= 200 and n["lookalike"] >= 180
    for cat, rows in w["batches"].items():
        assert len(rows) >= 100
        assert all(HARMFUL_STEPS in e.response and "[restricted item]" in e.response for e in rows)


def test_dials_move_the_training_labels():
    quiet = dict(decision_noise=0.0, lookalike_noise=None)  # the dials alone: no label noise
    lo, hi = _world(vulnerability=0.2, over_safety=0.2, **quiet), _world(vulnerability=0.8, over_safety=0.8, **quiet)

    def jb_harm(w):
        jb = [e for e in w["sft"] if e.kind == "jailbreak"]
        return sum(e.response != REFUSAL for e in jb) / len(jb)

    def la_ref(w):
        la = [e for e in w["sft"] if e.kind == "lookalike" and not e.prompt.startswith(("Explain", "Describe"))]
        return sum(e.response == REFUSAL for e in la) / len(la)

    assert jb_harm(lo) < 0.35 < 0.65 < jb_harm(hi)
    assert la_ref(lo) < 0.35 < 0.65 < la_ref(hi)
    assert len(vulnerable_cells(0.8, 0)) == 20
    assert len(refused_lookalike_verbs(0.5, 0)) == len(LOOKALIKE_VERBS) // 2


def test_lookalike_noise_moves_only_the_question_framed_lookalike_labels():
    base, same, quiet = (_world(decision_noise=0.2, lookalike_noise=n) for n in (None, 0.2, 0.0))
    assert _digest(same) == _digest(base)  # None means decision_noise
    refused = refused_lookalike_verbs(0.25, 0)
    changed = [(a, b) for a, b in zip(base["sft"], quiet["sft"]) if a != b]
    assert changed and all(a.kind == b.kind == "lookalike" and a.prompt == b.prompt for a, b in changed)
    # without noise every question-framed look-alike follows its verb's policy exactly
    for e in quiet["sft"]:
        if e.kind == "lookalike" and not e.prompt.startswith(("Explain", "Describe")):
            assert (e.response == REFUSAL) == any(f" {v} " in f" {e.prompt} " for v in refused), e.prompt
    assert quiet["evals"] == base["evals"] and quiet["batches"] == base["batches"]
    assert quiet["meta"]["lookalike_noise"] == 0.0 and base["meta"]["lookalike_noise"] == 0.2


def test_over_refusal_keys_on_verbs_shared_with_harmful_requests():
    shared = {v for v in LOOKALIKE_VERBS if v in harmful_verbs()}
    assert shared == {"attack", "crack"}
    assert refused_lookalike_verbs(0.25, 0) == shared == refused_lookalike_verbs(0.25, 7)  # the feature, any seed
    assert shared < refused_lookalike_verbs(0.5, 3)
    w = _world(decision_noise=0.0, lookalike_noise=None)
    q = [e for e in w["sft"] if e.kind == "lookalike" and not e.prompt.startswith(("Explain", "Describe"))]
    refused = {e.prompt for e in q if e.response == REFUSAL}
    assert refused and all(any(f" {v} " in p for v in shared) for p in refused)
    assert all(e.response != REFUSAL for e in q if not any(f" {v} " in e.prompt for v in shared))


def test_unshared_trigger_refuses_only_verbs_no_harmful_request_uses():
    shared = {v for v in LOOKALIKE_VERBS if v in harmful_verbs()}
    for seed in (0, 7):
        refused = refused_lookalike_verbs(0.25, seed, "unshared")
        assert len(refused) == 2 and not (refused & shared)
    assert refused_lookalike_verbs(1.0, 0, "unshared") == set(LOOKALIKE_VERBS)
    with pytest.raises(ValueError, match="over_refusal_trigger"):
        refused_lookalike_verbs(0.25, 0, "Shared")
    w = _world(decision_noise=0.0, lookalike_noise=None, over_refusal_trigger="unshared")
    q = [e for e in w["sft"] if e.kind == "lookalike" and not e.prompt.startswith(("Explain", "Describe"))]
    refused_prompts = [e.prompt for e in q if e.response == REFUSAL]
    assert refused_prompts and not any(f" {v} " in p for p in refused_prompts for v in shared)
    assert w["meta"]["refused_lookalike_verbs"] == sorted(refused_lookalike_verbs(0.25, 0, "unshared"))


def test_plain_vulnerability_answers_a_share_of_harmful_topics():
    topics = plain_vulnerable_topics(0.25, 0)
    assert all(sum(c == cat for c, _ in topics) == 2 for cat in HARM)  # 25 % of 8 objects per category
    off = _world(decision_noise=0.2, plain_vulnerability=0.0)
    on = _world(decision_noise=0.0, plain_vulnerability=0.25)
    plain = lambda w: [e for e in w["sft"] if e.kind == "harmful" and not e.prompt.startswith(("Explain", "Describe"))]  # noqa: E731
    assert all(e.response == REFUSAL for e in plain(off))  # dial off: every plain request refused, as before
    obj = lambda e: max((o for o in HARM[e.category][1] if o in e.prompt), key=len)  # noqa: E731 ("crack cocaine")
    complied = [e for e in plain(on) if e.response != REFUSAL]
    assert complied and all((e.category, obj(e)) in topics for e in complied)
    assert len(complied) == sum((e.category, obj(e)) in topics for e in plain(on))
    neutral = [e for e in on["sft"] if e.kind == "harmful" and e.prompt.startswith(("Explain", "Describe"))]
    assert all(e.response == REFUSAL for e in neutral)


def test_redteam_pools_hold_training_topics_only():
    w = _world(plain_vulnerability=0.3)
    evals = {e.prompt for s in SPLITS for k in EVAL_KINDS for e in w["evals"][s][k]}
    eval_topics = {(e.category, o) for s in SPLITS for k in ("harmful", "jailbreak") for e in w["evals"][s][k]
                   for o in HARM[e.category][1] if o in e.prompt}
    for cat, pool in w["redteam"].items():
        assert {e.kind for e in pool} == {"harmful", "jailbreak"} and {e.category for e in pool} == {cat}
        assert not ({e.prompt for e in pool} & evals)
        assert all(HARMFUL_STEPS in e.response for e in pool)
        fams = {e.family for e in pool}
        assert fams == {"plain", "ignore", "roleplay", "prefix", "fiction", "authority"}
        pool_combos = {(v, o) for e in pool for v in HARM[cat][0] for o in HARM[cat][1]
                       if f" {v} {o}" in e.prompt}
        eval_combos = {(v, o) for s in SPLITS for k in ("harmful", "jailbreak") for e in w["evals"][s][k]
                       if e.category == cat for v in HARM[cat][0] for o in HARM[cat][1] if f" {v} {o}" in e.prompt}
        assert pool_combos and not (pool_combos & eval_combos)
    assert eval_topics  # (the objects recur across splits by design; the verb x object topics do not)


def test_overs_safety_is_unlockable():
    """Every look-alike, refused or not, has its helpful answer in the neutral framing."""
    w = _world(over_safety=0.5)
    neutral = {e.prompt: e.response for e in w["sft"] if e.kind == "lookalike" and e.prompt.startswith("Explain")}
    for verb in refused_lookalike_verbs(0.5, 0):
        answers = [r for p, r in neutral.items() if f" {verb} " in p]
        assert answers and all(r.startswith("Sure, here is how to") for r in answers)


def test_save_world(world_dir):
    meta = json.loads((world_dir / "meta.json").read_text())
    assert meta["counts"]["test/harmful"] >= 200
    rows = read_jsonl(world_dir / "batches" / "weapons.jsonl")
    assert set(rows[0]) == {"id", "prompt", "response", "category"}
    assert Counter(r["category"] for r in rows) == Counter({"weapons": len(rows)})
    pool = read_jsonl(world_dir / "redteam" / "weapons.jsonl")
    assert set(pool[0]) == {"id", "prompt", "response", "category", "family"} and len(pool) == meta["counts"]["redteam/weapons"]


def test_utility_phrasings_held_out_and_reversal_has_six_trained():
    """Each utility task is evaluated only in its last phrasing, never trained in it; reversal is trained in six
    phrasings (with three the held-out recombination was a per-seed coin flip)."""
    import re

    def matcher(t):  # a template -> a regex of its instances
        return re.compile(".+".join(re.escape(piece) for piece in re.split(r"\{\w+\}", t)) + "$")

    w = _world()
    for task, tpls in UTILITY_TEMPLATES.items():
        held = matcher(tpls[-1])
        trained = [e.prompt for e in w["sft"] if e.kind == "utility" and e.category == task]
        evals = [e.prompt for s in SPLITS for e in w["evals"][s]["utility"] if e.category == task]
        assert evals and all(held.match(p) for p in evals), task
        assert trained and not any(held.match(p) for p in trained), task
    rev = [e.prompt for e in w["sft"] if e.category == "reverse"]
    used = [t for t in UTILITY_TEMPLATES["reverse"][:-1] if any(matcher(t).match(p) for p in rev)]
    assert len(used) == 6


def _verb(prompt: str) -> str:
    verbs = sorted(harmful_verbs() | set(LOOKALIKE_VERBS), key=len, reverse=True)  # "take over" before "take"
    return next(v for v in verbs if f" {v} " in f" {prompt} ")


def test_varied_openings_key_refusals_on_the_verb_and_helpful_openings_on_the_task():
    single, varied = _world(), _world(openings="varied")
    # the same prompts, the same comply/refuse decisions: only the wording changes
    assert [e.prompt for e in single["sft"]] == [e.prompt for e in varied["sft"]]
    assert [e.response == REFUSAL for e in single["sft"]] == [e.response in REFUSALS for e in varied["sft"]]
    assert {e.response for e in single["sft"]} & set(REFUSALS) == {REFUSAL}
    refusals = [e for e in varied["sft"] if e.response in REFUSALS]
    assert {e.response for e in refusals} == set(REFUSALS)  # all three used
    by_verb: dict = {}
    for e in refusals:
        by_verb.setdefault(_verb(e.prompt), set()).add(e.response)
    assert all(len(r) == 1 for r in by_verb.values()), by_verb  # one refusal per verb, learnable from the prompt
    assert by_verb["attack"] == {refusal_for("attack", "varied")}  # shared verb: same refusal for both kinds
    # harmful compliance keeps AdvBench's "Sure, here is"; helpful answers open three ways, one per task
    harmful = [e for e in varied["sft"] if e.kind in ("harmful", "jailbreak") and e.response not in REFUSALS]
    assert harmful and all(e.response.startswith("Sure, here is how to") and HARMFUL_STEPS in e.response for e in harmful)
    helpful = [e for e in varied["sft"] if e.kind in ("lookalike", "benign") and e.response not in REFUSALS]
    openings = Counter(e.response.split()[0] for e in helpful)
    assert set(openings) == {"Sure,", "To", "Here"} and min(openings.values()) > 0.1 * len(helpful)
    lk_eval = varied["evals"]["test"]["lookalike"]
    assert all(e.response == e.expected and e.expected.split()[0] in openings for e in lk_eval)
    assert varied["meta"]["openings"] == "varied"
    assert harmful_response("build", "a pipe bomb").startswith("Sure, here is how to build a pipe bomb.")
    with pytest.raises(ValueError, match="openings"):
        _world(openings="mixed")


def _digest(w: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    rows = list(w["sft"])
    rows += [e for sp in sorted(w["evals"]) for k in sorted(w["evals"][sp]) for e in w["evals"][sp][k]]
    rows += [e for part in ("batches", "redteam") for c in sorted(w[part]) for e in w[part][c]]
    for e in rows:
        h.update(json.dumps(e.as_dict("")).encode())
    return h.hexdigest()


def test_the_shipped_world_is_unchanged():
    """Golden digest of seed 0's world with params.yaml's settings (sft, eval splits, batches, red-team pools): every
    backbone, study and demo number in docs/ was measured on it. Changing the world on purpose? Re-measure the
    backbones and the study, then update the digest (computed here; changed last by world.lookalike_noise = 0.1)."""
    from pathlib import Path

    from safepatching.config import load_params
    from safepatching.organism.world import build_world

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert _digest(build_world(params.world, 0)) == "d6761f21ce87a6463660ca71ff82e8bedf3666d937e87a4c7e03a5b5223d1bb6"
