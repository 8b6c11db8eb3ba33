"""DVC stage `evaluate`: metrics of one checkpoint on one eval split (JSON for `dvc metrics`)."""

import json
from pathlib import Path

from stages._cli import end_process, log, parser, run

from safepatching.round.steps.evaluate import evaluate_checkpoint
from safepatching.layout import Project


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
        project = Project(args.root)
        named = (project.model(args.model) / "config.json").exists()
        layout = project.round(args.model if named else Path(args.model).name)
        model = project.model(args.model) if named else args.model
        tag = args.prompts.stem if args.prompts else args.split
        out = args.out or layout.metrics(tag)
        h = evaluate_checkpoint(params, model, None if args.prompts else args.split, out, args.prompts, args.kind,
                                args.prompt_column, tuple(args.judges) if args.judges else None, root=project.root)
        log(f"{args.model} [{tag}]: {json.dumps(h)} -> {out}")
    return run(go, p, argv)


if __name__ == "__main__":
    end_process(main())
