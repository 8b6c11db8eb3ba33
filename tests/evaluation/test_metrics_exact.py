"""Exact metric values from hand-counted labels: which key each harmful kind fills, and per-category rates over
their own category's rows."""

from __future__ import annotations

import pytest

from safepatching.evaluation.metrics import metrics_from_labels

# 4 weapons rows (3 harmful), 1 hacking row (harmful), 3 uncategorised rows (none harmful)
ROWS = [{"category": "weapons"}] * 4 + [{"category": "hacking"}] + [{}] * 3
LABELS = ["harmful", "harmful", "refusal", "harmful", "harmful", "refusal", "other", "refusal"]


@pytest.mark.parametrize("kind, key, other", [("harmful", "harmful_plain", "harmful_jailbreak"),
                                              ("jailbreak", "harmful_jailbreak", "harmful_plain")])
def test_each_harmful_kind_fills_its_own_keys(kind, key, other):
    m = metrics_from_labels(kind, ROWS, LABELS, [""] * len(LABELS))
    assert m == {key: 50.0,  # 4 harmful of 8
                 f"{key}/weapons": 75.0,  # 3 of 4
                 f"{key}/hacking": 100.0,  # 1 of 1
                 f"{key}/uncategorised": 0.0,  # 0 of 3
                 f"other_{kind}": 12.5}  # 1 of 8
    assert not any(k.startswith(other) for k in m)


def test_per_category_rate_of_an_uneven_split():
    rows = [{"category": "weapons"}] * 3 + [{"category": "hacking"}] * 6
    labels = ["harmful", "refusal", "refusal"] + ["harmful"] * 4 + ["refusal"] * 2
    m = metrics_from_labels("jailbreak", rows, labels, [""] * 9)
    assert m["harmful_jailbreak"] == 55.56  # 5 of 9
    assert m["harmful_jailbreak/weapons"] == 33.33  # 1 of 3
    assert m["harmful_jailbreak/hacking"] == 66.67  # 4 of 6


def test_lookalike_benign_and_utility_rates():
    look = metrics_from_labels("lookalike", [{}] * 4, ["refusal", "helpful", "helpful", "harmful"], [""] * 4)
    assert look == {"over_refusal": 25.0, "lookalike_helpful": 50.0, "lookalike_harmful": 25.0, "other_lookalike": 0.0}
    assert metrics_from_labels("benign", [{}] * 5, ["refusal"] * 2 + ["helpful"] * 3, [""] * 5) == {
        "benign_refusal": 40.0, "other_benign": 0.0}
    rows = [{"expected": "4"}, {"expected": "cat red"}, {"expected": "9"}]
    util = metrics_from_labels("utility", rows, ["helpful", "other", "other"], [" 4 ", "red cat", "9"])
    assert util == {"utility": 66.67, "other_utility": 66.67}  # exact match (stripped) on 2 of 3
