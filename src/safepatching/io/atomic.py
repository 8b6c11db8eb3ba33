"""Atomic file writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path


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
