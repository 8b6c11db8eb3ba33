"""Shared plumbing of the DVC stage entry points: offline env, params, typed errors -> exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

from safepatching import envdefaults

envdefaults.apply()

from safepatching.config import Params, load_params  # noqa: E402
from safepatching.errors import SafePatchingError  # noqa: E402
from safepatching.layout import RoundLayout  # noqa: E402


def log(msg: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`: the main process speaks
        print(msg, flush=True)


def parser(desc: str, round: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--root", default=".", help="project root (artefact paths are relative to it)")
    if round:
        p.add_argument("--round", required=True)
    return p


Launcher = Callable[[Params, list[str]], "int | None"]


def run(fn: Callable[[argparse.Namespace, Params], None], p: argparse.ArgumentParser, argv: list[str] | None,
        launch: Launcher | None = None) -> int:
    """Parse, load params, run fn; typed errors -> exit 2. `launch(params, argv)` may run the stage elsewhere instead
    (e.g. re-executed under `accelerate launch`) and return its exit code; None: run fn here."""
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        params = load_params(args.params)
        if launch is not None:
            rc = launch(params, list(sys.argv[1:] if argv is None else argv))
            if rc is not None:
                return rc
        fn(args, params)
    except SafePatchingError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    import psutil

    proc = time.time() - psutil.Process().create_time()
    log(f"[{p.prog}] done in {proc:.1f}s (process; {time.time() - t0:.1f}s after imports)")
    return 0


def round_run(step: Callable[[argparse.Namespace, Params, RoundLayout], object], p: argparse.ArgumentParser,
              argv: list[str] | None, launch: Launcher | None = None) -> int:
    """A round stage: parse -> the round's layout -> one step (or `launch`, see `run`)."""
    return run(lambda args, params: step(args, params, RoundLayout.of(params, args.round, args.root)), p, argv,
               launch)


def end_process(code: int) -> None:
    """End a stage process with `code`. Outputs are complete (every stage writes through atomic renames) and only the
    exit code matters to DVC, so the interpreter's teardown of torch/transformers (~1 s per stage, ~25 s of a demo
    run) is skipped: flush, then os._exit. Processes under `accelerate launch` (RANK set) exit normally, so
    torch.distributed shuts down cleanly."""
    if os.environ.get("RANK") is not None:
        sys.exit(code)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
