"""The validation sweep's choice rule, its grid and its Pareto plot (safepatching.round.selection)."""

from safepatching.config import SelectCfg, merge_settings
from safepatching.round.selection import choose, harm_score, pareto_front, plot_pareto

PARENT = {"harmful_plain": 2.0, "harmful_jailbreak": 60.0, "over_refusal": 50.0, "utility": 99.0, "other": 1.0}


def pt(label, **m):
    return {"label": label, "merge": {"method": label}, "metrics": {**PARENT, **m}}


def MergeCfg(**kw):
    return merge_settings({"method": "safepatching", **kw})  # the shipped merge: with kw


def test_grid_covers_methods_without_retraining_knobs():
    g = SelectCfg().points()
    methods = [c.method for c in g]
    assert methods.count("safepatching") == 8 and methods.count("intersection") == 2
    assert {"se_only", "om_only", "task_arithmetic", "ties"} <= set(methods)
    assert len(g) == 14
    # the paper's full method: random retention p < 1, a and b < 100 p, ranked across the model
    sp = [c for c in g if c.method == "safepatching"]
    assert all(c.p < 1 and c.a < 100 * c.p and c.b < 100 * c.p and c.ranking == "global" for c in sp)


def test_choice_minimises_harm_under_constraints():
    sel = SelectCfg(over_refusal_margin=5, utility_tolerance=2, other_tolerance=2)
    res = [pt("a", harmful_jailbreak=10.0, over_refusal=48.0),                 # over-refusal not low enough
           pt("b", harmful_jailbreak=30.0, over_refusal=40.0),                 # feasible
           pt("c", harmful_jailbreak=20.0, over_refusal=40.0, utility=90.0),   # utility broken
           pt("d", harmful_jailbreak=25.0, over_refusal=44.0, other=9.0),      # gibberish
           pt("e", harmful_jailbreak=80.0, over_refusal=0.0)]                  # harm rises
    c = choose(res, PARENT, sel)
    assert c["label"] == "b" and c["feasible"] and c["rule"] == "constrained"


def test_choice_falls_back_then_keeps_parent():
    sel = SelectCfg()
    c = choose([pt("a", harmful_jailbreak=10.0, over_refusal=49.0), pt("e", harmful_jailbreak=90.0, over_refusal=0.0)],
               PARENT, sel)
    assert c["label"] == "a" and not c["feasible"]
    c = choose([pt("e", harmful_jailbreak=90.0, over_refusal=0.0)], PARENT, sel)
    assert c["label"] == "parent" and c["merge"] is None


def test_pareto_front_and_plot(tmp_path):
    res = [pt("a", harmful_jailbreak=10.0, over_refusal=40.0), pt("b", harmful_jailbreak=20.0, over_refusal=30.0),
           pt("c", harmful_jailbreak=30.0, over_refusal=45.0)]
    assert pareto_front(res) == [0, 1]
    for r in res:
        r["merge"] = MergeCfg().model_dump()
    plot_pareto(res, PARENT, dict(res[0], feasible=True), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert harm_score(PARENT) == 31.0
