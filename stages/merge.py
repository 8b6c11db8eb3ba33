"""DVC stage `merge`: stream the round's chosen merge into models/<round> (a plain HF checkpoint)."""

import json
import sys

from stages._cli import log, parser, run

from safepatching.config import MergeCfg
from safepatching.merging.engine import merge_checkpoint
from safepatching.paths import model_dir, round_dir


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True)

    def go(args, params):
        r = params.round(args.round)
        art = round_dir(args.round)
        cfg = params.merge_for(args.round)
        sel = art / "select" / "selected.json"
        if params.select.enabled and sel.exists():
            chosen = json.loads(sel.read_text())
            cfg = MergeCfg(**chosen["merge"]) if chosen.get("merge") else cfg.model_copy(update=dict(alpha=0.0, beta=0.0))
        m = merge_checkpoint(model_dir(r.parent), art / "se", art / "om", model_dir(args.round), cfg,
                             se_scores=art / "scores_se", om_scores=art / "scores_om", overwrite=True)
        log(f"{args.round}: merged with {cfg.method} -> {model_dir(args.round)}")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
