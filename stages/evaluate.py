"""DVC stage `evaluate`: metrics of one checkpoint on one eval split (JSON for `dvc metrics`)."""

import json
import sys
from pathlib import Path

from stages._cli import log, parser, run

from safepatching.paths import EVAL, model_dir, round_dir


def evaluate_checkpoint(model_path: Path, eval_dir: Path, out: Path, params) -> dict:
    from safepatching.evaluate import evaluate_model, headline, write_metrics
    from safepatching.generate import DecodingConfig
    from safepatching.patch import load_model

    model, tok = load_model(model_path, trainable=False)
    e = params.eval
    metrics, samples = evaluate_model(model, tok, eval_dir, e.judges, DecodingConfig(e.max_new_tokens, e.batch_size),
                                      samples_per_kind=e.samples_per_kind)
    write_metrics(out, metrics, samples)
    return headline(metrics)


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="'backbone' or a round name")
    p.add_argument("--split", default="test", choices=["val", "test"])

    def go(args, params):
        out = round_dir(args.model) / f"metrics_{args.split}.json"
        h = evaluate_checkpoint(model_dir(args.model), EVAL / args.split, out, params)
        log(f"{args.model} [{args.split}]: {json.dumps(h)}")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
