from pathlib import Path

import pytest
import yaml

from safepatching.config import Params, load_params, parse_params
from safepatching.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(p for p in ROOT.rglob("params*.yaml") if ".venv" not in p.parts))
def test_every_params_file_in_repo_loads(path):
    p = load_params(path)
    assert isinstance(p, Params)


def test_shipped_params_have_three_chained_rounds():
    p = load_params(ROOT / "params.yaml")
    assert list(p.rounds) == ["r1", "r2", "r3"]
    assert p.lineage("r3") == ["r1", "r2", "r3"]
    assert p.round("r2").parent == "r1"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"merge: .*'safepatching': alpah: unknown key"):
        parse_params({"merge": {"method": "safepatching", "alpah": 1.0}})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"world\.vulnerability"):
        parse_params({"world": {"vulnerability": 2.0}})


def test_round_parent_must_be_earlier():
    with pytest.raises(ConfigError, match="rounds.r2.parent"):
        parse_params({"rounds": {"r2": {"batch": "b.jsonl", "parent": "r1"}}})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_round_overrides_merge():
    p = parse_params({"rounds": {"r1": {"batch": "b", "parent": "backbone", "merge": {"method": "ties", "alpha": 0.25}}}})
    assert p.merge_for("r1").alpha == 0.25 and p.merge_for("r1").density == 0.2 and p.merge.alpha == 2.0
    with pytest.raises(ConfigError, match="no round named"):
        p.round("zz")
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["rounds"]["r1"]["parent"] == "backbone"


@pytest.mark.parametrize("section, value, known", [
    ({"merge": {"method": "tiess"}}, "tiess", "safepatching"),
    ({"patch": {"se": {"objective": "gaa"}}}, "gaa", "npo"),
    ({"eval": {"judges": {"exactt": {}}, "decide_with": "exactt"}}, "exactt", "keyword"),
    ({"select": {"grid": {"dare_tie": {"p": [0.5]}}}}, "dare_tie", "dare"),
])
def test_misspelled_extension_names_fail_at_load_listing_known_names(section, value, known):
    with pytest.raises(ConfigError, match=rf"unknown \w[\w ]* '{value}'; known .*'{known}'"):
        parse_params(section)


def test_an_extension_setting_is_checked_by_its_own_model():
    with pytest.raises(ConfigError, match=r"merge: .*'ties': density: Input should be less than or equal to 1"):
        parse_params({"merge": {"method": "ties", "density": 2.0}})
    with pytest.raises(ConfigError, match=r"'task_arithmetic': p: unknown key"):  # a knob that method does not have
        parse_params({"merge": {"method": "task_arithmetic", "p": 0.5}})
    p = parse_params({"patch": {"se": {"objective": "npo", "beta": 0.3}}})
    assert p.patch.se.beta == 0.3 and type(p.patch.se).__name__ == "NpoCfg"
    with pytest.raises(ConfigError, match=r"'gd': beta: unknown key"):
        parse_params({"patch": {"om": {"objective": "gd", "beta": 0.3}}})


def test_grid_points_sweep_lists_in_order_and_validate_each_point():
    p = parse_params({"select": {"grid": {"dare": {"p": [0.5, 0.9], "alpha": [1.0, 2.0], "beta": 1.0,
                                                   "rescale": True, "seed": 0}}}})
    pts = p.select.points()
    assert [(x.p, x.alpha) for x in pts] == [(0.5, 1.0), (0.5, 2.0), (0.9, 1.0), (0.9, 2.0)]
    with pytest.raises(ConfigError, match=r"select.grid: .*'dare': p: Input should be greater than 0"):
        parse_params({"select": {"grid": {"dare": {"p": [0.0, 0.5]}}}})


def test_deciding_judge_must_be_configured():
    with pytest.raises(ConfigError, match=r"decide_with: 'keyword' is not a configured judge"):
        parse_params({"eval": {"judges": {"exact": {}}, "decide_with": "keyword"}})
    p = parse_params({"eval": {"judges": {"keyword": {}}, "decide_with": "keyword"}})
    assert list(p.eval.judges) == ["keyword"]


@pytest.mark.parametrize("text,key,line", [
    ("seed: 0\nseed: 1\n", "seed", 2),
    ("rounds:\n  r1: {batch: x, parent: backbone}\n  r1: {batch: y, parent: backbone}\n", "r1", 3),
    # what the old intake wrote for a batch named "x, parent: backbone.jsonl" (parent r1: no longer backbone)
    ("rounds:\n  r1: {batch: a.jsonl, parent: backbone}\n  r2: {batch: data/batches/r2_x, parent: backbone.jsonl, "
     "parent: r1}\n", "parent", 3),
])
def test_duplicate_keys_are_refused_naming_key_and_line(tmp_path, text, key, line):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=rf"params.yaml: line {line}, column \d+: duplicate key '{key}'"):
        load_params(p)


def test_yaml_merge_keys_may_still_override():
    from safepatching.config import load_yaml_text

    assert load_yaml_text("a: &x {b: 1, c: 1}\nd: {<<: *x, b: 2}\n") == {"a": {"b": 1, "c": 1}, "d": {"b": 2, "c": 1}}


def test_a_round_merge_override_changes_only_what_it_names():
    shipped = load_params(ROOT / "params.yaml")
    rounds = {"r1": {"batch": "b", "parent": "backbone", "merge": {"method": "safepatching", "alpha": 3.0}},
              "r2": {"batch": "b", "parent": "r1", "merge": {"beta": 0.5}},  # no method: the merge's own
              "r3": {"batch": "b", "parent": "r2"}}
    p = parse_params({"merge": {"method": "safepatching", "a": 30.0, "p": 0.8}, "rounds": rounds})
    assert p.merge_for("r1").model_dump() == {**p.merge.model_dump(), "alpha": 3.0}
    assert (p.merge_for("r1").a, p.merge_for("r1").p, p.merge_for("r1").b) == (30.0, 0.8, shipped.merge.b)
    assert p.merge_for("r2").model_dump() == {**p.merge.model_dump(), "beta": 0.5}
    assert p.merge_for("r3") == p.merge
    # without a merge: section the update is of the shipped merge
    only = parse_params({"rounds": {"r1": {**rounds["r1"]}}})
    assert only.merge_for("r1").model_dump() == {**shipped.merge.model_dump(), "alpha": 3.0}
    # another method starts from that method's defaults: safepatching's a/p/ranking do not leak into ties
    other = parse_params({"merge": {"method": "safepatching", "alpha": 5.0},
                          "rounds": {"r1": {"batch": "b", "parent": "backbone", "merge": {"method": "ties"}}}})
    assert other.merge_for("r1").model_dump() == {"method": "ties", "alpha": 1.0, "beta": 1.0, "density": 0.2}


def test_a_round_merge_override_is_validated_at_load():
    with pytest.raises(ConfigError, match=r"rounds\.r1\.merge: .*'safepatching': a: Input should be less than"):
        parse_params({"rounds": {"r1": {"batch": "b", "parent": "backbone", "merge": {"a": 150.0}}}})
    with pytest.raises(ConfigError, match=r"rounds\.r1\.merge: .*'ties': p: unknown key"):  # p is not ties'
        parse_params({"rounds": {"r1": {"batch": "b", "parent": "backbone", "merge": {"method": "ties", "p": 0.5}}}})


def test_a_short_sweep_grid_runs_the_shipped_values_for_what_it_does_not_name():
    shipped = load_params(ROOT / "params.yaml").select
    short = parse_params({"select": {"grid": {"safepatching": {"a": [10.0, 20.0]}}}}).select
    sp = [pt for pt in shipped.points() if pt.method == "safepatching"]
    want = [pt.model_copy(update={"a": a}) for a in (10.0, 20.0) for pt in sp if pt.a == 20.0]
    pts = short.points()
    assert sorted(x.model_dump_json() for x in pts) == sorted(x.model_dump_json() for x in want)
    assert len(pts) == 2 * 2 * 2 and {pt.b for pt in pts} == {5.0, 20.0} and {pt.alpha for pt in pts} == {1.0, 2.0}
    assert {(pt.p, pt.ranking, pt.compose) for pt in pts} == {(0.5, "global", "sequential")}
    # a scalar fixes a swept setting; a method the shipped grid does not sweep runs its settings' defaults
    fixed = parse_params({"select": {"grid": {"safepatching": {"b": 5.0}, "dare": {}}}}).select
    assert {pt.b for pt in fixed.points() if pt.method == "safepatching"} == {5.0}
    assert [pt.model_dump() for pt in fixed.points() if pt.method == "dare"] == [
        {"method": "dare", "alpha": 1.0, "beta": 1.0, "p": 0.9, "rescale": True, "seed": 0}]
