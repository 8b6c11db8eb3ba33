"""Round step: evaluate a round's (or the backbone's, or any) model on an eval split."""

from __future__ import annotations

import json
from pathlib import Path

from ... import crash
from ...config import Params
from ...layout import RoundLayout


def evaluate(params: Params, layout: RoundLayout, split: str, log=print) -> dict:
    """Metrics of the layout's model (a round's or the backbone's) on one eval split; returns the headline."""
    return evaluate_checkpoint(params, layout.model, split, layout.metrics(split), root=layout.root)


def evaluate_checkpoint(params: Params, model_path: str | Path, split: str | None, out: Path,
                        prompt_file: Path | None = None, kind: str | None = None, prompt_column: str = "prompt",
                        judges: tuple[str, ...] | None = None, root: str | Path = ".") -> dict:
    """Any HF causal LM (local path or id) on one split of the eval suite (`eval.suite`) or on a user's prompt
    file; writes `out` (+ samples) and returns the headline by the deciding judge."""
    from ...evaluation.generate import DecodingConfig
    from ...evaluation.metrics import evaluate_rows, headline, load_prompt_file, write_metrics
    from ...evaluation.suite import load_suite
    from ...evaluation.utility import run_utility
    from ...io.models import load_model

    c = params.compute
    model, tok = load_model(model_path, trainable=False, dtype=c.dtype, device=c.device, device_map=c.device_map)
    e = params.eval
    rows = load_prompt_file(prompt_file, kind, prompt_column) if prompt_file else load_suite(e.suite, split, root)
    configured = {j: e.judges[j] if j in e.judges else None for j in judges} if judges else e.judges
    decide = e.decide_with if e.decide_with in configured else next(iter(configured))
    utility = run_utility(model, tok, e.utility) if e.utility.tasks else None  # first: a bad task name fails fast
    metrics, samples = evaluate_rows(model, tok, rows, configured, DecodingConfig.of(e),
                                     e.samples_per_kind)
    write_metrics(out, metrics, decide, samples)
    crash.point("evaluate.outputs")
    head = headline(metrics, decide)
    return _record_utility(out, utility) if utility else head


def _record_utility(out: Path, res) -> dict:
    """Adds lm-eval's numbers to a written metrics JSON: `utility_benchmarks` ({task: {metric: value}}) and each
    task's `utility_<task>` percent in the headline; returns the headline."""
    from ...evaluation.utility import utility_headline

    flat = json.loads(Path(out).read_text())
    flat["utility_benchmarks"] = res.benchmarks
    flat["headline"] = utility_headline(flat["headline"], res)  # no exact-match set: the benchmarks' mean is utility
    Path(out).write_text(json.dumps(flat, indent=2, sort_keys=True))
    return flat["headline"]
