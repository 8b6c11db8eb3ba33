"""DVC stage `importance`: SNIP scores of both patches of one round, on the patched models."""

import sys

from stages._cli import parser, run

from safepatching.batches.loading import load_pairs
from safepatching.patching.importance import compute_importance
from safepatching.paths import model_dir, round_dir


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True)

    def go(args, params):
        r = params.round(args.round)
        df = load_pairs(r.batch, params.data)
        pairs = list(zip(df["prompt"], df["response"]))
        imp = params.importance
        for kind in ("se", "om"):
            compute_importance(model_dir(r.parent), round_dir(args.round) / kind, pairs,
                               round_dir(args.round) / f"scores_{kind}", imp.score, imp.n_samples,
                               imp.batch_size, params.seed)
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
