"""The Prefect pull step of prefect.yaml: run a deployment's flow from the checkout on the worker's machine.

`prefect deploy` stores pull steps as text; a process worker runs them when it starts a flow run, on its own machine.
A templated `{{ $PWD }}` would be the PWD of whoever ran `prefect deploy` (resolved at deploy time, see STACK.md), so
a worker elsewhere would look for that machine's folder. This step resolves the folder at run time, on the worker:

    pull:
      - safepatching.ops.checkout.use_checkout: {}

  1. $SAFEPATCHING_ROOT in the worker's environment (`SAFEPATCHING_ROOT=/srv/safepatching prefect worker start ...`);
  2. else the checkout this installed `safepatching` package lives in (`pip install -e .` in the checkout).

The folder must hold dvc.yaml, params.yaml and the flow's entry point, else a CheckoutError names what is missing. The
step changes the working directory there (Prefect then loads `flows/continual.py` from it), exports SAFEPATCHING_ROOT
and puts the checkout's src/ first on sys.path and PYTHONPATH, so the flow run and its DVC stages import that
checkout's code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import SafePatchingError

ENTRYPOINT = Path("flows") / "continual.py"
MARKERS = ("dvc.yaml", "params.yaml", str(ENTRYPOINT))


class CheckoutError(SafePatchingError):
    """The worker's machine has no usable SafePatching checkout (names where it looked and what is missing)."""


def find_checkout(environ: dict | None = None) -> Path:
    """The checkout a flow run on this machine uses: $SAFEPATCHING_ROOT, else the installed package's checkout."""
    environ = os.environ if environ is None else environ
    if environ.get("SAFEPATCHING_ROOT"):
        root, how = Path(environ["SAFEPATCHING_ROOT"]).expanduser(), "$SAFEPATCHING_ROOT"
    else:
        import safepatching

        root, how = Path(safepatching.__file__).resolve().parents[2], "the installed safepatching package's checkout"
    root = root.resolve()
    missing = [m for m in MARKERS if not (root / m).is_file()]
    if missing:
        raise CheckoutError(f"{root} ({how}) is not a SafePatching checkout: no {', '.join(missing)}; start the worker "
                            "with SAFEPATCHING_ROOT=<the project folder on this machine>")
    return root


def use_checkout(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step: chdir into the worker's checkout (`directory` if given, else find_checkout()); returns
    {"directory": <checkout>} (Prefect's convention for the run's working directory)."""
    root = find_checkout({"SAFEPATCHING_ROOT": directory} if directory else None)
    os.chdir(root)
    os.environ["SAFEPATCHING_ROOT"] = str(root)
    for p in (root, root / "src"):  # the checkout's code first: src/ ends up in front
        if str(p) in sys.path:
            sys.path.remove(str(p))
        sys.path.insert(0, str(p))
    paths = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x and x != str(root / "src")]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root / "src"), *paths])  # the DVC stages' code too
    return {"directory": str(root)}
