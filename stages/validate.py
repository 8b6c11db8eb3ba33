"""DVC stage `validate`: Great Expectations checks of one round's harmful-data batch.

Earlier batches are those of the round's lineage (parents); evaluation prompts come from data/world/eval.
A failing batch stops the round with a clear error; its report and Data Docs go to data/quarantine/.
"""

import json
import sys

from stages._cli import log, parser, run

from safepatching.paths import EVAL, QUARANTINE, round_dir
from safepatching.batches.expectations import load_eval_prompts, validate_batch


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True)

    def go(args, params):
        r = params.round(args.round)
        earlier = [params.round(n).batch for n in params.lineage(args.round)[:-1]]
        evals = load_eval_prompts(EVAL / "val") | load_eval_prompts(EVAL / "test")
        out = round_dir(args.round)
        rep = validate_batch(r.batch, params.data, evals, earlier, QUARANTINE, out / "validation_reports",
                             move=False)
        (out / "validation.json").write_text(json.dumps(rep, indent=2, default=str))
        log(f"{args.round}: batch {r.batch} valid ({rep['rows']} rows, sha256 {rep['sha256'][:12]})")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
