"""Intake of new harmful-data batches: data/incoming/ -> checked, validated, moved to data/batches/, tracked with DVC
and appended as the next round (its parent: the last round) to params.yaml -- one batch at a time, as a transaction.

  scan        the hand-over protocol: which files in data/incoming/ are complete batches (marker or atomic rename;
              the stability wait only as an opt-in fallback)
  journal     the transaction journal, bound to each batch's validation report, and start-up reconciliation
  paramsfile  appending a round to params.yaml (YAML emitter, comments kept, validated, atomic)
  run         one intake run: `intake(project, params_path, track, ...) -> IntakeResult`

`track(path)` puts a file under DVC (`dvc add`), `restore(path)` checks a tracked file out again; intake runs no
commands itself. See README, "How to hand a batch to the pipeline".
"""

from .run import IntakeResult, intake

__all__ = ["IntakeResult", "intake"]
