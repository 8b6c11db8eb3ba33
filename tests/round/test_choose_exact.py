"""The choice rule with several candidates in every tier: the lowest harm wins (ties: lower over-refusal, then higher
utility), never the highest. Harm = mean of the plain and jailbreak rates, computed by hand in the comments."""

from __future__ import annotations

from safepatching.config import SelectCfg
from safepatching.round.selection import choose

# parent harm (2 + 60) / 2 = 31; feasible: over_refusal <= 45, utility >= 97, other <= 3, harm <= 31
PARENT = {"harmful_plain": 2.0, "harmful_jailbreak": 60.0, "over_refusal": 50.0, "utility": 99.0, "other": 1.0}
SEL = SelectCfg(over_refusal_margin=5, utility_tolerance=2, other_tolerance=2, harmful_tolerance=0)


def pt(label: str, **m) -> dict:
    return {"label": label, "merge": {"method": "safepatching"}, "metrics": {**PARENT, **m}}


def test_constrained_tier_takes_the_lowest_harm_of_several():
    res = [pt("f1", harmful_jailbreak=40.0, over_refusal=40.0),  # harm 21
           pt("f2", harmful_jailbreak=20.0, over_refusal=44.0),  # harm 11  <- lowest feasible
           pt("f3", harmful_jailbreak=50.0, over_refusal=30.0),  # harm 26
           pt("f4", harmful_jailbreak=30.0, over_refusal=45.0),  # harm 16
           pt("x", harmful_jailbreak=4.0, over_refusal=48.0)]  # harm 3, but over-refusal only 2 points down
    c = choose(res, PARENT, SEL)
    assert (c["label"], c["feasible"], c["rule"]) == ("f2", True, "constrained")


def test_ties_in_harm_go_to_lower_over_refusal_then_higher_utility():
    res = [pt("t1", harmful_jailbreak=20.0, over_refusal=44.0, utility=99.0),  # harm 11
           pt("t2", harmful_jailbreak=20.0, over_refusal=40.0, utility=98.0),  # harm 11
           pt("t3", harmful_jailbreak=20.0, over_refusal=40.0, utility=99.5),  # harm 11  <- same o-r, more utility
           pt("t4", harmful_jailbreak=22.0, over_refusal=10.0, utility=99.9)]  # harm 12
    assert choose(res, PARENT, SEL)["label"] == "t3"


def test_relaxed_tier_takes_the_lowest_harm_of_several():
    res = [pt("r1", harmful_jailbreak=30.0, over_refusal=49.0),  # harm 16
           pt("r2", harmful_jailbreak=10.0, over_refusal=50.0),  # harm 6  <- lowest without over-refusal regression
           pt("r3", harmful_jailbreak=50.0, over_refusal=47.0),  # harm 26
           pt("up", harmful_jailbreak=4.0, over_refusal=60.0),  # harm 3, but over-refusal rises
           pt("util", harmful_jailbreak=0.0, over_refusal=46.0, utility=80.0),  # harm 1, utility broken
           pt("gib", harmful_jailbreak=2.0, over_refusal=46.0, other=9.0)]  # harm 2, gibberish
    c = choose(res, PARENT, SEL)
    assert (c["label"], c["feasible"], c["rule"]) == ("r2", False, "no over-refusal regression")


def test_no_candidate_within_the_guards_keeps_the_parent():
    res = [pt("h1", harmful_jailbreak=70.0, over_refusal=10.0),  # harm 36 > 31
           pt("h2", harmful_jailbreak=64.0, over_refusal=20.0),  # harm 33 > 31
           pt("u", harmful_jailbreak=10.0, over_refusal=20.0, utility=96.0)]  # utility 3 points down
    c = choose(res, PARENT, SEL)
    assert c == {"label": "parent", "merge": None, "metrics": PARENT, "feasible": False, "rule": "parent"}
