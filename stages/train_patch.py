"""DVC stage `train_patch`: derive the SE (--method ga|npo) or OM (--method gd) patch of one round (under
`accelerate launch` when `compute.num_processes > 1` or `compute.accelerate_config` is set)."""

from stages._cli import end_process, log, parser, round_run

from safepatching.patching.distributed import maybe_relaunch
from safepatching.round.steps.train_patch import train_patch


def _launch(params, argv: list[str]) -> int | None:
    return maybe_relaunch(params.compute, "stages.train_patch", argv, log)


def main(argv=None) -> int:
    p = parser(__doc__, round=True)
    p.add_argument("--kind", required=True, choices=["se", "om"])
    p.add_argument("--method", help="override the objective of this kind (ga | gd | npo); default from params.yaml")
    return round_run(lambda args, params, layout: train_patch(params, layout, args.kind, args.method, log=log),
                     p, argv, launch=_launch)


if __name__ == "__main__":
    end_process(main())
