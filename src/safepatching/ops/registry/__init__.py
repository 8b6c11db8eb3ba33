"""The model registry: the pipeline's one MLflow adapter, in three parts.

  store       MLflow store plumbing: the tracking URI, the experiment and its artifact location, `rehome` (a copied
              or moved workspace's store pointed at its own artifacts), the raw queries of model versions.
  server      the tracking-server side (an http(s) URI): the `/health` probe and typed errors naming the URI.
  versions    `ModelRegistry`: idempotent registration of a round, legacy adoption, queries, aliases, serving.
  promotion   the promotion policy (pure, no MLflow): which version may hold an alias, what a forced promotion
              records, which reference the gate of a new round uses; beside the pure `ops/gate.py`.
  rows        `VersionRow`: one registered version as recorded (plain values, no MLflow).

Only `store`, `server` and `versions` import mlflow; the rest of the package never does.
"""
