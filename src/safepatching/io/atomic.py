"""Atomic writes: a reader sees the old file or folder or the new one, never a half-written one.

* `write_atomic` writes one file through a temporary file and `os.replace`.
* `atomic_dir` writes a folder under `<out>.tmp-<pid>` and renames it into place only when complete; it first
  removes the `.tmp-<pid>` folders of writers that were killed (`clean_stale`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import crash
from ..errors import CheckpointError


def write_atomic(path: str | Path, data: str | bytes, *, errors: str = "strict") -> None:
    """Write `data` (text is UTF-8 encoded with `errors`) to `path`: into a dot-named temporary file in the same
    folder (created if missing), fsynced, given the old file's permissions, then renamed over `path` with
    `os.replace`; the folder is fsynced too (best effort). The temporary name starts with a dot, so intake's scan
    of data/incoming never takes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8", errors) if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether a live process with this pid exists (one we may not signal counts as alive; a zombie, exited but not
    yet reaped by its parent, is dead: it writes and holds nothing any more)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no procfs: what kill() said
        return True


def clean_stale(out_dir: str | Path) -> list[Path]:
    """Remove the debris of killed `atomic_dir` writers of `out_dir`: `<out>.tmp-<pid>` folders whose process is gone
    (a live process's, e.g. a concurrent writer's, are left alone). A dead writer's `<out>.old-<pid>` (killed between
    its two renames) is put back as `<out>` when `<out>` is missing, else removed. Returns what it removed/restored."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        return []
    done = []
    for p in sorted(out.parent.iterdir()):
        m = re.fullmatch(re.escape(out.name) + r"\.(tmp|old)-(\d+)", p.name)
        if not m or int(m.group(2)) == os.getpid() or pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not os.path.lexists(out):
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()
        done.append(p)
    return done


@contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh `<out>.tmp-<pid>` folder; on success rename it to out_dir, on any error delete it.

    An existing out_dir is refused unless overwrite=True; then it is renamed aside, the new folder renamed in and
    the old one deleted (two renames: readers see the old or the new folder, never a half-written one). On start,
    the debris of writers that were killed (their pid is gone) is cleaned first (`clean_stale`)."""
    out = Path(out_dir)
    clean_stale(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    crash.point("publish")
    if out.exists():
        if not overwrite:  # appeared while we were writing
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"{out}: appeared while writing (pass overwrite=True to replace it)")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
