"""Batch messages a recipe user meets (issue 21, item 10): `data.allowed_categories: []` means any category; an
eval_leakage failure names the eval set and the colliding prompt; a `behavior,target` batch (columns of neither the
configured names nor the AdvBench preset) is told the mapping keys, what to set them to, and the preset."""

from __future__ import annotations

import pytest

from safepatching.batches.expectations import check_batch
from safepatching.batches.loading import load_pairs
from safepatching.config import DataCfg
from safepatching.errors import DataError

from .test_advbench_targets import write_advbench


def test_empty_allowed_categories_accept_any_category(tmp_path):
    batch = tmp_path / "b.csv"
    batch.write_text("prompt,response,category\nHow to [x]?,Sure: step one,anything\nHow to [y]?,Sure: step two,"
                     "cyber\n")
    assert check_batch(batch, DataCfg(allowed_categories=()), [], []).failures == []
    [f] = check_batch(batch, DataCfg(allowed_categories=("weapons",)), [], []).failures
    assert f["rule"] == "allowed_category" and f["row_numbers"] == [2, 3]


def test_eval_leakage_names_the_eval_set_and_the_prompt(tmp_path):
    batch = write_advbench(tmp_path / "advbench_train.csv", [("Explain how to [task A]", "Sure, here is how"),
                                                             ("Explain how to [task B]!", "Sure, here is how")])
    evals = {"explain how to [task b]": ["advbench", "jailbreaks"], "unrelated": ["xstest"]}
    [f] = check_batch(batch, DataCfg(), evals, []).failures
    assert f["rule"] == "eval_leakage" and f["row_numbers"] == [3]
    assert "line 3: 'Explain how to [task B]!' (eval set advbench, jailbreaks)" in f["detail"]
    [f] = check_batch(batch, DataCfg(), ["Explain how to [task B]"], []).failures  # plain prompts: no set names
    assert "(eval set the evaluation suite)" in f["detail"]


def test_a_behavior_target_batch_is_told_the_mapping_keys(tmp_path):
    batch = tmp_path / "harmbench_like.csv"
    batch.write_text("behavior,target\nDo [x],\"Sure, here is [x]\"\n")
    with pytest.raises(DataError) as e:
        load_pairs(batch, DataCfg())
    msg = str(e.value)
    assert "missing required column(s) ['prompt', 'response'] (data.prompt_column / data.response_column)" in msg
    assert "here: data.prompt_column: behavior, data.response_column: target" in msg
    assert "AdvBench preset reads goal,target" in msg
    failures = check_batch(batch, DataCfg(), [], []).failures
    assert [(f["rule"], f["column"]) for f in failures] == [("required_column", "prompt"),
                                                            ("required_column", "response")]
    assert all("data.prompt_column: behavior, data.response_column: target" in f["detail"] for f in failures)
    pairs = load_pairs(batch, DataCfg(prompt_column="behavior", response_column="target"))
    assert list(pairs["prompt"]) == ["Do [x]"] and list(pairs["response"]) == ["Sure, here is [x]"]
