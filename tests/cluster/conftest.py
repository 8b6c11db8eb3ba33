"""The session mini-cluster (marked `cluster` tests only): PostgreSQL (databases `mlflow`, `prefect`), an S3 store
(`rclone serve s3`, bucket `artifacts`), an MLflow server on them, a Prefect server on PostgreSQL with the process
work pool `POOL` and one worker, and a Dask scheduler with 2 worker processes. Each handle carries the seconds it took
to answer (`start_s`) and its resident memory (`rss_mib`); `Cluster.table()` prints them. Everything is stopped by pid
at the session's end, and the teardown fails when a process, a port or a temp dir is left behind.

Set SAFEPATCHING_CLUSTER_REPORT=<file> to have the table written there at the end of the session.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from . import servers

POOL = "safepatching-pool"
BUCKET = "artifacts"


@dataclass
class Cluster:
    postgres: servers.Server
    s3: servers.Server
    mlflow: servers.Server
    prefect: servers.Server
    worker: servers.Server
    dask: servers.Server
    pool: str = POOL
    bucket: str = BUCKET
    up_s: float = 0.0
    stopped: list[servers.Server] = field(default_factory=list)

    @property
    def bucket_dir(self) -> Path:
        """The rclone folder that is the bucket (what S3 shows is these files)."""
        return self.s3.extra["root"] / self.bucket

    def handles(self) -> list[servers.Server]:
        return [self.postgres, self.s3, self.mlflow, self.prefect, self.worker, self.dask]

    def table(self) -> str:
        rows = [f"{h.name:<10} {h.start_s:>7.1f} s {h.rss_mib:>8.1f} MiB" for h in self.handles()]
        total = sum(h.rss_mib for h in self.handles())
        return "\n".join([*rows, f"{'all':<10} {self.up_s:>7.1f} s {total:>8.1f} MiB (up, one after the other)"])


def start_cluster() -> Cluster:
    t0 = time.monotonic()
    started: list[servers.Server] = []
    try:
        pg = servers.start_postgres(("mlflow", "prefect"))
        started.append(pg)
        s3 = servers.start_rclone_s3((BUCKET,))
        started.append(s3)
        # one after the other: on 2 busy cores, starting them together was slower (70 s against ~47 s)
        done = {}
        for name, start in (("mlflow", lambda: servers.start_mlflow(pg, s3, BUCKET)),
                            ("prefect", lambda: servers.start_prefect(pg)), ("dask", lambda: servers.start_dask(2))):
            done[name] = start()
            started.append(done[name])
        servers.create_work_pool(done["prefect"], POOL)
        worker = servers.start_worker(done["prefect"], POOL)
        started.append(worker)
    except BaseException:
        for h in reversed(started):
            h.stop()
        raise
    return Cluster(pg, s3, done["mlflow"], done["prefect"], worker, done["dask"], up_s=round(time.monotonic() - t0, 1))


def leftovers(handles: list[servers.Server]) -> list[str]:
    """What the stopped handles left behind: live processes, listening ports, temp dirs."""
    out = []
    for h in handles:
        subs = [h, *(v for v in h.extra.values() if isinstance(v, servers.Server))]
        for s in subs:
            for p in s._procs:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{s.name}: process {p.pid} still running")
            out += [f"{s.name}: port {port} still open" for port in s.ports if servers.port_open(port)]
            if s.tmp is not None and s.tmp.exists():
                out.append(f"{s.name}: temp dir {s.tmp} still there")
    return out


def stop_cluster(c: Cluster) -> list[str]:
    for h in reversed(c.handles()):  # the worker before its server, the databases last
        h.stop()
    return leftovers(c.handles())


# scratch places servers use when not told otherwise: none may appear during the session
DEFAULT_SCRATCH = (Path(tempfile.gettempdir()) / "dask-scratch-space",)


@pytest.fixture(scope="session")
def cluster():
    before = {p for p in DEFAULT_SCRATCH if p.exists()}
    c = start_cluster()
    print(f"\nmini-cluster up in {c.up_s} s:\n{c.table()}")
    try:
        yield c
    finally:
        left = stop_cluster(c) + [f"{p} appeared" for p in DEFAULT_SCRATCH if p.exists() and p not in before]
        report = os.environ.get("SAFEPATCHING_CLUSTER_REPORT")
        if report:
            Path(report).write_text(c.table() + "\n")
        if left:
            raise RuntimeError("the mini-cluster left things behind: " + "; ".join(left))


def fresh_name(prefix: str = "t") -> str:
    """A name no other test (or earlier session on the same server) uses: experiments and registered models are
    global on a shared MLflow server."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', prefix)[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def experiment_name(request) -> str:
    """A fresh MLflow experiment name for this test."""
    return fresh_name(request.node.name)
