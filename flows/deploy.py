"""Scheduled deployment of the continual flow.

    prefect server start --host 127.0.0.1 --port 4200 &          # a real local server (sqlite)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy --cron "0 3 * * *"                     # serves the deployment (a worker-less runner)
    prefect deployment run 'continual-psa/continual-psa-nightly' --watch   # or wait for the schedule

`flow.serve` keeps a runner process that polls the server and executes scheduled runs in this workspace.
Scale-out is configuration: `prefect.yaml` + a work pool (`prefect deploy`) runs the same flow on workers.
"""

from __future__ import annotations

import argparse
import sys

from safepatching import envdefaults

envdefaults.apply()

from flows.continual import continual_psa  # noqa: E402

DEPLOYMENT = "continual-psa-nightly"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cron", default="0 3 * * *")
    p.add_argument("--interval", type=float, default=None, help="seconds between runs (instead of --cron)")
    p.add_argument("--name", default=DEPLOYMENT)
    p.add_argument("--params", default="params.yaml")
    a = p.parse_args(argv)
    schedule = {"interval": a.interval} if a.interval else {"cron": a.cron}
    # one run at a time (rounds never overlap in a workspace): the runner executes one flow run at once (limit) and
    # the deployment has a concurrency limit of 1 (global_limit), so a run due while another is running waits
    continual_psa.serve(name=a.name, parameters={"params_path": a.params}, **schedule, limit=1, global_limit=1,
                        tags=["safepatching"], description="continual SafePatching rounds from data/incoming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
