"""Progress lines with an ETA (safepatching.progress.Progress, at most one per 30 s) from patch training, SNIP
importance and the validation sweep; here with a 0 s period, so every step, batch and point logs one."""

from __future__ import annotations

import functools
import re

from safepatching import progress
from safepatching.config import ObjectiveCfg
from safepatching.evaluation.suite import load_suite
from safepatching.round.selection import load_inputs, run_sweep

from .real_round import GOALS, build_patches, build_stand_in, real_params

LINE = re.compile(r"^(.*): (\d+)/(\d+) \(\d+%\), \d+s so far, ETA \d+s$")


def counts(lines: list[str], what: str) -> list[tuple[int, int]]:
    return [(int(m[2]), int(m[3])) for m in map(LINE.match, lines) if m and m[1].strip() == what]


def test_training_snip_and_sweep_report_progress(tmp_path, monkeypatch):
    import safepatching.patching.importance as imp
    import safepatching.patching.train as train

    every_time = functools.partial(progress.Progress, every=0.0)
    for mod in (train, imp, progress):  # train and importance import it at load; the sweep when it runs
        monkeypatch.setattr(mod, "Progress", every_time)
    model = build_stand_in(tmp_path)
    patches, scores = build_patches(model, tmp_path)

    lines: list[str] = []
    pairs = [(g, "Sure, here is how.") for g in GOALS]
    train.train_patch(model, pairs, tmp_path / "p", ObjectiveCfg(objective="gd", lr=1e-3, max_steps=4, batch_size=6),
                      log=lines.append)
    assert counts(lines, "gd training steps") == [(1, 4), (2, 4), (3, 4)]  # none at the end: the summary says it
    lines.clear()
    imp.compute_importance(model, tmp_path / "p", pairs, tmp_path / "s", "weight", 12, 4, log=lines.append)
    assert counts(lines, "SNIP batches") == [(1, 3), (2, 3)]

    params = real_params({"task_arithmetic": {"alpha": [1.0, 2.0], "beta": 1.0}})
    lines.clear()
    run_sweep(model, load_inputs(patches, scores), load_suite(params.eval.suite, "val", tmp_path),
              params.select.points(), params.eval, log=lines.append)
    assert counts(lines, "sweep points (parent first)") == [(1, 3), (2, 3)]
    assert [s.split("]")[0].strip() for s in lines if s.strip().startswith("[")] == ["[1/2", "[2/2"]
