"""The hand-over scan of data/incoming/: which files are complete batches, which wait, which are refused.

A batch is a regular file named ``[A-Za-z0-9][A-Za-z0-9._-]*.(jsonl|json|csv)`` (at most 128 characters). It is
complete -- handed over -- when
  * ``<name>.done`` exists beside it (the marker: copy the file in, then create the marker), or
  * it carries its final name at all (the atomic rename: write it as a dotfile or ``*.tmp`` / ``*.part`` /
    ``*.partial``, which are never taken, then rename it to its final name inside data/incoming/).
A plain copy that is still being written cannot be told apart from a renamed file; writers that can do neither a
rename nor a marker opt in to the fallback ``data.stability_seconds > 0``: an unmarked file is then taken only when its
size, mtime and inode stay unchanged across two looks that many seconds apart (a writer that pauses longer is cut
short: the fallback is not a guarantee). Whatever the mode, a file whose size, mtime or inode changes while it is
being checked is left waiting for the next run (`unchanged`), and its bytes are hashed again after the move and
after `dvc add` (ops.intake.run).

Dotfiles are skipped, other suffixes are left in place with a log line; a link, directory, FIFO ... named like a
batch, or a bad name, is refused (to be quarantined by the caller).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...batches.quarantine import SAFE_NAME
from ...io.tables import SUFFIXES

IN_PROGRESS = (".tmp", ".part", ".partial")
MARKER = ".done"
NAME_RULE = "[A-Za-z0-9][A-Za-z0-9._-]*.(jsonl|json|csv), at most 128 characters"


def show(name: str) -> str:
    """A file name fit for one log line: as is when it is a plain name, else its Python repr (newlines, tabs ...)."""
    return name if SAFE_NAME.fullmatch(name) else ascii(name)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode


def unchanged(path: Path, st: os.stat_result) -> bool:
    """`path` still has the size, mtime, inode and type it had when `st` was taken (False when it is gone)."""
    try:
        return _identity(os.lstat(path)) == _identity(st)
    except FileNotFoundError:
        return False


@dataclass
class Candidate:
    path: Path
    stat: os.stat_result  # at the last look: the file must still match it when it is moved
    marked: bool


@dataclass
class Scan:
    ready: list[Candidate] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    refused: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, rule, detail): to quarantine


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def scan(incoming: Path, stability_seconds: float, sleep: Callable[[float], Any], log: Callable[[str], Any],
         warn: Callable[[str], Any]) -> Scan:
    """Sort data/incoming's entries (by name) into complete batches, uploads in progress, files that are no batch,
    and entries to quarantine."""
    out = Scan()
    if not incoming.is_dir():
        return out
    names = sorted(os.listdir(incoming))
    present = set(names)
    candidates: list[Candidate] = []
    for n in names:
        p = incoming / n
        if n.startswith("."):  # dotfiles: uploads in progress (rsync, scp -> rename)
            continue
        if n.endswith(MARKER):
            if n[: -len(MARKER)] not in present:
                log(f"intake: marker {show(n)} has no file {show(n[: -len(MARKER)])} beside it; ignored")
            continue
        if n.endswith(IN_PROGRESS):
            out.waiting.append(n)
            log(f"intake: {show(n)}: an upload in progress (*.tmp / *.part / *.partial); skipped")
            continue
        if not n.endswith(SUFFIXES):
            hint = (f"; suffixes are case-sensitive: rename it to {show(n[: n.rfind('.')] + n[n.rfind('.'):].lower())}"
                    if n.lower().endswith(SUFFIXES) else "")
            out.ignored.append(n)
            warn(f"intake: {show(n)}: not a batch file (a batch ends in .jsonl, .json or .csv){hint}; "
                 "left in data/incoming")
            continue
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            out.refused.append((p, "not_regular_file", f"a symbolic link (to {os.readlink(p)!r}); links are never "
                                "followed: copy the file itself into data/incoming"))
        elif not stat.S_ISREG(st.st_mode):
            out.refused.append((p, "not_regular_file", f"{_kind(st.st_mode)}; a batch must be a regular file"))
        elif not SAFE_NAME.fullmatch(n):
            out.refused.append((p, "file_name", f"file name {n!r} is not allowed: a batch is named {NAME_RULE}; "
                                "rename it and hand it over again"))
        else:
            candidates.append(Candidate(p, st, n + MARKER in present))
    wait = stability_seconds
    if wait > 0 and any(not c.marked for c in candidates):
        sleep(wait)
    for c in candidates:
        if not c.marked and wait > 0:
            try:
                now = os.lstat(c.path)
            except FileNotFoundError:
                continue
            if _identity(now) != _identity(c.stat):
                out.waiting.append(c.path.name)
                log(f"intake: {c.path.name}: still being written (size or mtime changed within {wait:g}s); left "
                    f"for the next run (write {c.path.name}{MARKER} when it is complete to skip this wait)")
                continue
            c.stat = now
        out.ready.append(c)
    return out
