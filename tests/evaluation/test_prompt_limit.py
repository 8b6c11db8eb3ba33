"""Prompts longer than the model's context are skipped and counted (issue 21, item 8): the limit is
eval.max_prompt_tokens, else the context (config max_position_embeddings) minus max_new_tokens; the rates are over
the generated prompts and `skipped_too_long/<kind>` appears only when a prompt was skipped."""

from __future__ import annotations

import pytest

from safepatching.evaluation.generate import DecodingConfig, model_context, prompt_limit, prompt_tokens
from safepatching.evaluation.metrics import evaluate_rows, fitting

from ..stand_ins import build_qwen_stand_in


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    from safepatching.io.models import load_model

    out = build_qwen_stand_in(tmp_path_factory.mktemp("si") / "m", ["how to open a door"] * 20)
    return load_model(out, trainable=False)


def test_the_limit():
    assert prompt_limit(100, 32, 4096) == 100
    assert prompt_limit(None, 256, 4096) == 3840
    assert prompt_limit(None, 32, None) is None


def test_long_prompts_are_skipped_and_counted(stand_in):
    model, tok = stand_in
    assert model_context(model, tok) == 256  # the stand-in's max_position_embeddings
    rows = [{"prompt": "how to open a door", "category": "a"}, {"prompt": "open " * 400, "category": "b"},
            {"prompt": "open a door " * 30, "category": "c"}]
    n = prompt_tokens(tok, [r["prompt"] for r in rows])
    assert n[0] < 30 and n[1] > 300 and 30 < n[2] < 250
    kept, skipped = fitting(tok, rows, 256 - 8)
    assert [r["category"] for r in kept] == ["a", "c"] and skipped == 1
    assert fitting(tok, rows, None) == (rows, 0)
    lines = []
    met, samples = evaluate_rows(model, tok, {"harmful": rows}, {"keyword": {}}, DecodingConfig(8, 4),
                                 samples_per_kind=5, log=lines.append)
    assert met["keyword"]["skipped_too_long/harmful"] == 1
    assert set(k.split("/")[1] for k in met["keyword"] if k.startswith("harmful_plain/")) == {"a", "c"}
    assert len(samples["harmful"]) == 2 and lines == ["harmful: 1 prompt(s) longer than 248 tokens skipped "
                                                      "(eval.max_prompt_tokens)"]
    met, _ = evaluate_rows(model, tok, {"harmful": rows}, {"keyword": {}}, DecodingConfig(8, 4, max_prompt_tokens=n[0]),
                           samples_per_kind=0, log=lines.append)
    assert met["keyword"]["skipped_too_long/harmful"] == 2
    met, _ = evaluate_rows(model, tok, {"harmful": rows[:1]}, {"keyword": {}}, DecodingConfig(8, 4),
                           samples_per_kind=0)
    assert not any(k.startswith("skipped_too_long") for k in met["keyword"])  # nothing skipped: no key


def test_progress_lines_at_a_sane_rate():
    from safepatching.progress import Progress

    t = [0.0]
    lines: list[str] = []
    pr = Progress("generate [harmful]", 1000, lines.append, every=30, clock=lambda: t[0])
    for done, now in ((64, 10.0), (128, 31.0), (192, 40.0), (256, 62.0), (1000, 200.0)):
        t[0] = now
        pr.update(done)
    assert lines == ["generate [harmful]: 128/1000 (13%), 31s so far, ETA 3m31s",
                     "generate [harmful]: 256/1000 (26%), 1m02s so far, ETA 3m00s"]
