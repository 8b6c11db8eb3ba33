"""DVC stage `train_patch`: derive the SE (--method ga|npo) or OM (--method gd) patch of one round."""

import sys

from stages._cli import log, parser, run

from safepatching.batches.loading import load_pairs
from safepatching.paths import model_dir, round_dir
from safepatching.io.checkpoints import sha256_file
from safepatching.patching.train import train_patch


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True)
    p.add_argument("--kind", required=True, choices=["se", "om"])
    p.add_argument("--method", help="override the objective of this kind (ga | gd | npo); default from params.yaml")

    def go(args, params):
        r = params.round(args.round)
        obj = params.patch.se if args.kind == "se" else params.patch.om
        if args.method:
            obj = obj.model_copy(update={"objective": args.method})
        df = load_pairs(r.batch, params.data)
        pairs = list(zip(df["prompt"], df["response"]))
        m = train_patch(model_dir(r.parent), pairs, round_dir(args.round) / args.kind, obj, params.patch.backend,
                        params.patch.lora, params.patch.seed, batch_sha256=sha256_file(r.batch), log=log)
        log(f"{args.round}/{args.kind}: {m['objective']} {m['steps']} steps, NLL {m['start_nll']:.3f} -> "
            f"{m['final_nll']:.3f}, |P|={m['l2_norm']:.3f}")
    return run(go, p, argv)


if __name__ == "__main__":
    sys.exit(main())
