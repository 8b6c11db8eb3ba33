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
