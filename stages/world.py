"""DVC stage `world`: build the organism's synthetic world into data/world/."""

import sys

from stages._cli import log, parser, run

from safepatching.round.layout import Project


def main(argv=None) -> int:
    def go(args, params):
        from safepatching.organism.world import build_world, save_world

        w = params.world
        world = build_world(params.seed, w.vulnerability, w.over_safety, w.n_reverse_train, w.max_eval_per_kind,
                            w.decision_noise)
        meta = save_world(world, Project(args.root).world)
        log(f"world: {meta['counts']}")
    return run(go, parser(__doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
