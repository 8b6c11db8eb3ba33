"""Round step: evaluate a round's (or the backbone's, or any) model on an eval split."""

from __future__ import annotations

from pathlib import Path

from ...config import Params
from ..layout import RoundLayout


def evaluate(params: Params, layout: RoundLayout, split: str, log=print) -> dict:
    """Metrics of the layout's model (a round's or the backbone's) on one eval split; returns the headline."""
    return evaluate_checkpoint(params, layout.model, layout.project.eval_split(split), layout.metrics(split))


def evaluate_checkpoint(params: Params, model_path: str | Path, eval_dir: Path | None, out: Path,
                        prompt_file: Path | None = None, kind: str | None = None, prompt_column: str = "prompt",
                        judges: tuple[str, ...] | None = None) -> dict:
    """Any HF causal LM (local path or id) on an organism-style eval folder or on a user's prompt file; writes
    `out` (+ samples) and returns the headline by the deciding judge."""
    from ...evaluation.generate import DecodingConfig
    from ...evaluation.metrics import evaluate_rows, headline, load_eval_split, load_prompt_file, write_metrics
    from ...io.models import load_model

    c = params.compute
    model, tok = load_model(model_path, trainable=False, dtype=c.dtype, device=c.device, device_map=c.device_map)
    e = params.eval
    split = load_prompt_file(prompt_file, kind, prompt_column) if prompt_file else load_eval_split(eval_dir)
    configured = {j: e.judges[j] if j in e.judges else None for j in judges} if judges else e.judges
    decide = e.decide_with if e.decide_with in configured else next(iter(configured))
    metrics, samples = evaluate_rows(model, tok, split, configured, DecodingConfig(e.max_new_tokens, e.batch_size),
                                     e.samples_per_kind)
    write_metrics(out, metrics, decide, samples)
    return headline(metrics, decide)
