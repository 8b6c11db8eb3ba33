"""The workspace's DVC remote (params.yaml `storage:`): how machines share the lineage's data.

  configure(storage, root)      the remote as the workspace's default, in .dvc/config.local (git-ignored; never
                                .dvc/config): url (a relative folder resolved from the project root) and, for an
                                S3-compatible store, endpointurl. Idempotent: nothing is written when it is already
                                so, and the remote's other keys (credentials a person set with
                                `dvc remote modify --local`) are kept.
  pull_missing(storage, root)   before `dvc repro`: `dvc pull` of the recorded outputs (dvc.lock, *.dvc) this
                                workspace lacks. An output the lock names but the remote does not hold (produced on a
                                machine that never pushed it) is no error: `dvc repro` rebuilds it.
  push(storage, root, targets)  after a round's registration: `dvc push --with-deps` of its stages (its batch, its
                                parent's model and everything upstream the remote still lacks).

With `storage.url: null` (the default) every function returns at once: one machine, exactly as before. A failure
(wrong credentials, an unreachable endpoint, a missing bucket) is a RemoteError of one line naming the remote, its
URL and DVC's reason; nothing is deleted, so a round whose push failed keeps its outputs here and the next run
pushes them. Credentials only ever come from the environment (AWS_ACCESS_KEY_ID, ...) or DVC's --local config.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..config import StorageCfg
from ..errors import SafePatchingError

Log = Callable[[str], None]


class RemoteError(SafePatchingError):
    """The DVC remote refused or could not be reached; the message names the remote, its URL and the reason."""


def remote_url(storage: StorageCfg, root: Path) -> str | None:
    """The remote's URL as DVC gets it: s3://... as written, a folder made absolute (from the project root)."""
    if not storage.enabled:
        return None
    url = storage.url
    if url.startswith("s3://"):
        return url
    path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
    return str(path if path.is_absolute() else (Path(root) / path).resolve())


def describe(storage: StorageCfg, root: Path) -> str:
    """`'<name>' (<url>[ at <endpoint>])`: how errors and logs name the remote."""
    where = f" at {storage.endpoint_url}" if storage.endpoint_url else ""
    return f"DVC remote {storage.remote!r} ({remote_url(storage, root)}{where})"


def configure(storage: StorageCfg, root: Path, log: Log | None = None) -> bool:
    """Make the configured remote the workspace's default remote in .dvc/config.local. Returns True when something
    was written, False when it already was so (or no remote is configured)."""
    if not storage.enabled:
        return False
    from dvc.config import Config

    root = Path(root)
    want = {"url": remote_url(storage, root)}
    if storage.endpoint_url:
        want["endpointurl"] = storage.endpoint_url
    conf = Config(dvc_dir=str(root / ".dvc"), validate=False)
    local = conf.load_one("local")
    have = dict(local.get("remote", {}).get(storage.remote, {}))
    current = {k: have.get(k) for k in ("url", "endpointurl")}
    if not storage.endpoint_url and "endpointurl" in have:
        want["endpointurl"] = None  # the setting was removed: drop it
    if {k: current.get(k) for k in want} == want and (local.get("core") or {}).get("remote") == storage.remote:
        return False
    with conf.edit("local") as c:
        section = c.setdefault("remote", {}).setdefault(storage.remote, {})
        for k, v in want.items():
            if v is None:
                section.pop(k, None)
            else:
                section[k] = v
        c.setdefault("core", {})["remote"] = storage.remote
    if log:
        log(f"{describe(storage, root)}: set as this workspace's default remote (.dvc/config.local)")
    return True


def missing_outputs(root: Path) -> list[str]:
    """Cached outputs the pipeline has recorded (dvc.lock, *.dvc files) that are absent from the workspace, as
    paths relative to the root. Outputs no lock records yet (not produced anywhere) are not listed."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    out = []
    with Repo(str(root)) as repo:
        for o in repo.index.outs:
            if o.use_cache and o.hash_info and o.hash_info.value and not o.exists:
                out.append(os.path.relpath(o.fs_path, root))
    return sorted(set(out))


def pull_missing(storage: StorageCfg, root: Path, log: Log | None = None, env: dict | None = None) -> list[str]:
    """`dvc pull` what the workspace lacks (see missing_outputs) from the remote; returns the paths asked for."""
    if not storage.enabled:
        return []
    configure(storage, root, log)
    targets = missing_outputs(root)
    if not targets:
        return []
    if log:
        log(f"{describe(storage, root)}: pulling {len(targets)} output(s) this workspace lacks: {', '.join(targets)}")
    _dvc(storage, root, "pull", ["--allow-missing", "-r", storage.remote, *targets], env, log)
    absent = [t for t in targets if not (Path(root) / t).exists()]
    if absent and log:
        log(f"{describe(storage, root)}: not on the remote (dvc repro rebuilds them): {', '.join(absent)}")
    return targets


def push(storage: StorageCfg, root: Path, targets: list[str], log: Log | None = None, env: dict | None = None) -> None:
    """`dvc push --with-deps` of `targets` (DVC stage names or tracked paths) to the remote."""
    if not storage.enabled:
        return
    configure(storage, root, log)
    out = _dvc(storage, root, "push", ["--with-deps", "-r", storage.remote, *targets], env, log)
    if log:
        summary = [line for line in out.splitlines() if re.search(r"pushed|up to date", line)]
        log(f"{describe(storage, root)}: {summary[-1].strip() if summary else 'pushed'} ({' '.join(targets)})")


def _dvc(storage: StorageCfg, root: Path, verb: str, args: list[str], env: dict | None, log: Log | None) -> str:
    env = dict(env if env is not None else os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    p = subprocess.run(["dvc", verb, *args], cwd=root, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RemoteError(f"{describe(storage, root)}: dvc {verb} failed: {_reason(p.stdout + p.stderr)}"
                          + ("; nothing was deleted: the outputs stay in this workspace and the next run pushes them"
                             if verb == "push" else "; nothing was changed in this workspace"))
    return p.stdout


def _reason(output: str) -> str:
    """DVC's first `ERROR:` line (the specific one: 'failed to connect to s3 ... Forbidden'), on one line."""
    errors = [line.split("ERROR:", 1)[1].strip() for line in output.splitlines() if "ERROR:" in line]
    text = errors[0] if errors else (output.strip().splitlines() or ["no output"])[-1]
    return re.sub(r"\s+", " ", text)[:400]
