"""DVC stage `importance`: SNIP scores of both patches of one round, on the patched models."""

import sys

from stages._cli import log, parser, round_run

from safepatching.round.steps.score import score


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: score(params, layout, log=log), parser(__doc__, round=True),
                     argv)


if __name__ == "__main__":
    sys.exit(main())
