"""Crash points: a test hook that kills a run at a named point, as a power cut or an OOM kill of the job would.

`point(name)` does nothing unless $SAFEPATCHING_CRASH_AT names it; then it SIGKILLs this process's whole process group
at once (no `finally`, no atexit, no flush): the flow and everything it started -- `dvc repro`, the running stage, the
temporary Prefect server. Inside a stage run by DVC the name also matches as `<stage>:<name>` ($DVC_STAGE, e.g.
`merge@r2:merge.shards`), to aim a point shared by stages at one of them. tests/e2e/test_flow_crash.py starts the flow
in a process group of its own and sets the variable; never set it in a shell whose process group you care about.

Points: `intake.<step>` (before_move, after_move, before_track, after_track, after_append: ops/intake), `publish`
(io/atomic.atomic_dir: a complete folder not yet renamed into place), `merge.shards` (merging/engine: the
model's weights written into `<round>.tmp-<pid>`, no manifest yet), `select.outputs` (round/steps/select: the sweep's
results written, its plots not), `evaluate.outputs` (round/steps/evaluate: metrics written, the stage not finished),
`register.run` (ops/registry/versions: MLflow run open and the model logged, no version yet), `register.version` (the version
created, its aliases and `registered=complete` not yet).
"""

from __future__ import annotations

import os
import signal

ENV = "SAFEPATCHING_CRASH_AT"


def point(name: str) -> None:
    """Kill the process group here when $SAFEPATCHING_CRASH_AT is `name` or `<$DVC_STAGE>:<name>` (else nothing)."""
    want = os.environ.get(ENV)
    if not want:
        return
    stage = os.environ.get("DVC_STAGE")
    if want == name or (stage and want == f"{stage}:{name}"):
        try:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
