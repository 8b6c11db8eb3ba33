"""DVC stage `evaluate`: metrics of one checkpoint on one eval split (JSON for `dvc metrics`)."""

import json
import sys
from pathlib import Path

from stages._cli import log, parser, run

from safepatching.paths import EVAL, model_dir, round_dir


def evaluate_checkpoint(model_path, eval_dir: Path | None, out: Path, params, prompt_file: Path | None = None,
                        kind: str | None = None, prompt_column: str = "prompt", judges: tuple[str, ...] | None = None) -> dict:
    """Any HF causal LM (local path or id) on the organism's eval folder or on a user's prompt file."""
    from safepatching.evaluation.metrics import evaluate_rows, headline, load_eval_split, load_prompt_file, write_metrics
    from safepatching.evaluation.generate import DecodingConfig
    from safepatching.io.models import load_model

    model, tok = load_model(model_path, trainable=False)
    e = params.eval
    split = load_prompt_file(prompt_file, kind, prompt_column) if prompt_file else load_eval_split(eval_dir)
    judges = judges or e.judges
    metrics, samples = evaluate_rows(model, tok, split, judges, DecodingConfig(e.max_new_tokens, e.batch_size),
                                     e.samples_per_kind)
    write_metrics(out, metrics, samples)
    return headline(metrics, judges[0])


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="'backbone', a round name, or any HF model path / id")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--prompts", type=Path, help="a user's prompt file (JSONL/CSV: AdvBench, XSTest, ...) instead of the organism's split")
    p.add_argument("--kind", choices=["harmful", "jailbreak", "lookalike", "benign"], help="what the prompts are (default: from an XSTest type column)")
    p.add_argument("--prompt-column", default="prompt", help="e.g. goal for AdvBench")
    p.add_argument("--judges", nargs="+", help="default: eval.judges; use keyword (and classifier) for real models")
    p.add_argument("--out", type=Path, help="metrics JSON path (default artifacts/<model>/metrics_<split>.json)")

    def go(args, params):
        named = (model_dir(args.model) / "config.json").exists()
        model = model_dir(args.model) if named else args.model
        tag = args.prompts.stem if args.prompts else args.split
        out = args.out or round_dir(args.model if named else Path(args.model).name) / f"metrics_{tag}.json"
        h = evaluate_checkpoint(model, None if args.prompts else EVAL / args.split, out, params, args.prompts,
                                args.kind, args.prompt_column, tuple(args.judges) if args.judges else None)
        log(f"{args.model} [{tag}]: {json.dumps(h)} -> {out}")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
