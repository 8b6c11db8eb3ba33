"""DVC stage `importance`: SNIP scores of both patches of one round, on the patched models (under `accelerate
launch` when `compute.num_processes > 1` or `compute.accelerate_config` is set)."""


from stages._cli import end_process, log, parser, round_run

from safepatching.patching.distributed import maybe_relaunch
from safepatching.round.steps.importance import importance


def _launch(params, argv: list[str]) -> int | None:
    return maybe_relaunch(params.compute, "stages.importance", argv, log)


def main(argv=None) -> int:
    return round_run(lambda args, params, layout: importance(params, layout, log=log), parser(__doc__, round=True),
                     argv, launch=_launch)


if __name__ == "__main__":
    end_process(main())
