"""Hand-counted mask sizes (round half to even, as Python's round: never rounded down) and a TIES merge worked out
entry by entry, with α ≠ β so the two patches' scales cannot trade places unseen."""

from __future__ import annotations

import pytest
import torch

from safepatching.config import merge_settings
from safepatching.merging.in_memory import merge_in_memory
from safepatching.merging.masks import global_threshold, keep_count, topk_mask


@pytest.mark.parametrize("pct, n, kept", [(40, 9, 4),  # 3.6 -> 4
                                          (50, 7, 4),  # 3.5 -> 4 (half to even)
                                          (50, 5, 2),  # 2.5 -> 2 (half to even)
                                          (30, 7, 2),  # 2.1 -> 2
                                          (90, 10, 9), (1, 10, 0), (99, 10, 10), (0, 10, 0), (100, 10, 10)])
def test_keep_count_rounds_to_nearest(pct, n, kept):
    assert keep_count(pct, n) == kept


SCORES = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4])  # 9 distinct scores


def test_per_tensor_mask_keeps_the_rounded_count_of_the_largest():
    mask = topk_mask(SCORES, 40, "per_tensor")  # 40 % of 9 = 3.6 -> 4: 0.9, 0.8, 0.7, 0.6
    assert mask.tolist() == [True, False, False, True, False, True, False, True, False]
    mask = topk_mask(SCORES, 70, "per_tensor")  # 6.3 -> 6: also 0.5, 0.4
    assert int(mask.sum()) == 6 and not mask[[1, 4, 6]].any()


def test_per_row_mask_keeps_the_rounded_count_in_each_row():
    rows = torch.stack([SCORES, SCORES.flip(0)])
    mask = topk_mask(rows, 40, "per_row")  # 4 of 9 per row
    assert mask[0].tolist() == [True, False, False, True, False, True, False, True, False]
    # flipped row [.4, .6, .2, .8, .3, .7, .5, .1, .9]: keeps .9, .8, .7, .6
    assert mask[1].tolist() == [False, True, False, True, False, True, False, False, True]


def test_global_threshold_is_the_rounded_count_th_largest():
    a, b = SCORES[:4], SCORES[4:]  # two tensors, 9 scores in all
    assert global_threshold([("a", a), ("b", b)], 30) == pytest.approx(0.7)  # 2.7 -> 3: 3rd largest of 9
    assert global_threshold([("a", a), ("b", b)], 40) == pytest.approx(0.6)  # 3.6 -> 4: 4th largest
    assert global_threshold([("a", a), ("b", b)], 50) == pytest.approx(0.6)  # 4.5 -> 4 (half to even): 4th
    assert global_threshold([("a", a), ("b", b)], 60) == pytest.approx(0.5)  # 5.4 -> 5: 5th largest


def test_ties_scales_se_by_alpha_and_om_by_beta():
    base = {"w": torch.full((5,), 10.0)}
    p_se = {"w": torch.tensor([1.0, -1.0, 2.0, 0.5, 1.0])}
    p_om = {"w": torch.tensor([1.0, 3.0, -1.0, -4.0, -8.0])}
    cfg = merge_settings({"method": "ties", "alpha": 2.0, "beta": 0.5, "density": 1.0})
    merged = merge_in_memory(base, p_se, p_om, cfg)["w"]
    # α·P_SE = [2, -2, 4, 1, 2], β·P_OM = [.5, 1.5, -.5, -2, -4]; sum's sign [+, -, +, -, -];
    # mean of the entries agreeing with it: [1.25, -2, 4, -2, -4]
    assert torch.allclose(merged, torch.tensor([11.25, 8.0, 14.0, 8.0, 6.0]))


def test_ties_trims_each_scaled_patch_per_tensor():
    base = {"w": torch.zeros(4)}
    p_se = {"w": torch.tensor([4.0, -1.0, 0.5, 2.0])}
    p_om = {"w": torch.tensor([-0.5, 3.0, -2.0, 0.25])}
    cfg = merge_settings({"method": "ties", "alpha": 1.5, "beta": 3.0, "density": 0.5})
    merged = merge_in_memory(base, p_se, p_om, cfg)["w"]
    # trimmed α·P_SE (top 2 of |6, 1.5, .75, 3|) = [6, 0, 0, 3]; β·P_OM (top 2 of |1.5, 9, 6, .75|) = [0, 9, -6, 0]
    # signs of the sum [+, +, -, +]: every kept entry agrees and stands alone
    assert torch.allclose(merged, torch.tensor([6.0, 9.0, -6.0, 3.0]))
