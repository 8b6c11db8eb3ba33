"""bench/study.py's paired statistics: the standard errors behind the study's power statement."""

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("study", Path(__file__).resolve().parents[2] / "bench" / "study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def _row(over_refusal: str, plain: str = "0000", jailbreak: str = "0000") -> dict:
    return {"rows": {"over_refusal": over_refusal, "harmful_plain": plain, "harmful_jailbreak": jailbreak}}


def test_paired_se_counts_only_changed_labels():
    a, b = _row("1100"), _row("1000")  # one of 4 prompts changed: D = (0, 1, 0, 0)
    assert study.paired_se([a], [b], "over_refusal") == pytest.approx(100 * math.sqrt((1 / 4 - 1 / 16) / 4))
    assert study.paired_se([a, a], [b, b], "over_refusal") == pytest.approx(100 * math.sqrt(2 * (3 / 16) / 4) / 2)
    assert study.paired_se([a], [a], "over_refusal") == 0.0  # same answers: no variance however high the rate
    assert study.discordance([a], [b], "over_refusal") == 25.0
    # the same rates with every label changed (1100 vs 0011): the unpaired view cannot tell, the paired SE can
    assert study.paired_se([_row("1100")], [_row("0011")], "over_refusal") == pytest.approx(100 * math.sqrt(1 / 4))


def test_paired_se_of_harm_averages_its_two_sets():
    a, b = _row("0000", plain="1000", jailbreak="1100"), _row("0000", plain="0000", jailbreak="0000")
    var_plain, var_jb = (1 / 4 - 1 / 16) / 4, (2 / 4 - 4 / 16) / 4
    assert study.paired_se([a], [b], "harm") == pytest.approx(100 * math.sqrt((var_plain + var_jb) / 4))
    assert study.paired_se([{}], [b], "harm") is None  # results written before the flags were recorded


def test_row_flags_follow_the_deciding_judges_labels():
    samples = {"lookalike": [{"label_exact": "refusal"}, {"label_exact": "helpful"}],
               "harmful": [{"label_exact": "harmful"}], "jailbreak": [{"label_exact": "other"}]}
    assert study.row_flags(samples, "exact") == {"over_refusal": "10", "harmful_plain": "1", "harmful_jailbreak": "0"}


def _metrics(harm: float, over_refusal: float, other: float = 0.5) -> dict:
    return {"harmful_plain": harm, "harmful_jailbreak": harm, "over_refusal": over_refusal, "other": other}


def test_layer_shares_and_figures(tmp_path):
    layers = {"pct": 10.0, "share": {"se": {"L00": 0.6, "L01": 0.4}, "om": {"L00": 0.8, "L01": 0.2}}}
    test = {m: _metrics(40.0, 30.0) for m in ("parent", "safepatching") + study.ABLATIONS}
    results = [{"seed": s, "rounds": [{"name": "r1", "category": "weapons", "test": test,
                                       "importance_layers": layers}]} for s in (0, 1)]
    assert study.layer_lines(results) == [
        "importance, round 1: share of each patch's global top-10 % by layer (mean over seeds):",
        "  se: L00 60 %, L01 40 %", "  om: L00 80 %, L01 20 %"]
    files = study.figures(results, tmp_path)
    assert [f.name for f in files] == ["study_pareto.png", "study_importance_layers.png"]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)
    del results[1]["rounds"][0]["importance_layers"]  # a result without the shares: no layer lines, no layer figure
    assert study.layer_lines(results) == [] and len(study.figures(results, tmp_path)) == 1
