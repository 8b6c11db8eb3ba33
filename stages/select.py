"""DVC stage `select`: sweep merge variants on the validation split and pick this round's point."""

import sys

from stages._cli import parser, run

from safepatching.paths import EVAL, model_dir, round_dir
from safepatching.select import select_round


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True)

    def go(args, params):
        r = params.round(args.round)
        select_round(model_dir(r.parent), round_dir(args.round), EVAL / "val", params.select,
                     params.merge_for(args.round), params.eval, round_dir(args.round) / "select",
                     title=f"round {args.round} (validation)")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
