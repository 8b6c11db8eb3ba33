"""The mini-cluster itself: every server answers, and stopping leaves no process, port or temp dir behind."""

from __future__ import annotations

import json
import urllib.request

import pytest

from . import servers
from .conftest import leftovers

pytestmark = pytest.mark.cluster


def test_every_server_answers(cluster) -> None:
    with urllib.request.urlopen(f"{cluster.mlflow.url}/health", timeout=10) as r:
        assert r.status == 200
    req = urllib.request.Request(f"{cluster.prefect.url}/work_pools/{cluster.pool}", method="GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.load(r)["type"] == "process"
    assert servers._dask_workers(cluster.dask.url) == 2
    servers.s3_client(cluster.s3).put_object(Bucket=cluster.bucket, Key="probe/x", Body=b"x")
    assert (cluster.bucket_dir / "probe" / "x").read_bytes() == b"x"  # a bucket is a folder
    servers.s3_client(cluster.s3).delete_object(Bucket=cluster.bucket, Key="probe/x")
    for h in cluster.handles():
        assert h.start_s > 0 and h.rss_mib > 0, h.name


def test_wrong_keys_are_refused_by_the_store(cluster) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        servers.s3_client(cluster.s3, "wrong", "keys").list_objects_v2(Bucket=cluster.bucket)


def test_stopped_servers_leave_nothing_behind() -> None:
    pg = servers.start_postgres(("x",))
    s3 = servers.start_rclone_s3()
    dask = servers.start_dask(2)
    handles = [dask, s3, pg]
    pids = [p.pid for h in handles for s in (h, *(v for v in h.extra.values() if isinstance(v, servers.Server)))
            for p in s._procs]
    assert len(pids) >= 5  # postmaster (+ its children), rclone, scheduler, the worker nanny and 2 workers
    assert len(leftovers(handles)) >= len(pids)  # running: the check sees every process (it can fail)
    for h in handles:
        h.stop()
    assert leftovers(handles) == []
    assert not any(servers.psutil.pid_exists(pid) and servers.psutil.Process(pid).status() != "zombie"
                   for pid in pids)
