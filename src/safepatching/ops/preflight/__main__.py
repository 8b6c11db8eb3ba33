"""`python -m safepatching.ops.preflight --params params.yaml [--root .] [--no-models] [--record]`: exit 0 ok, 2 problems."""

from __future__ import annotations

import argparse
import sys
import time

from ... import envdefaults


def main(argv: list[str] | None = None) -> int:
    envdefaults.apply()
    p = argparse.ArgumentParser(prog="python -m safepatching.ops.preflight",
                                description="check a params file's data, models and benchmarks before a run")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--root", default=".", help="project root (the params file's paths are relative to it)")
    p.add_argument("--no-models", action="store_true", help="params and data only (no backbone, lm-eval, lengths)")
    p.add_argument("--record", action="store_true", help="mark models/backbone stale when its local source folder "
                                                         "changed (make run / make repro pass it)")
    args = p.parse_args(argv)
    from . import run_preflight

    t0 = time.perf_counter()
    rep = run_preflight(args.params, args.root, models=not args.no_models, record=args.record)
    lines = rep.lines()
    lines[0] += f" in {time.perf_counter() - t0:.1f}s"
    print("\n".join(lines), file=sys.stdout if rep.ok else sys.stderr, flush=True)
    return 0 if rep.ok else 2


if __name__ == "__main__":
    sys.exit(main())
