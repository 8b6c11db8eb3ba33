"""What a backbone came from, for the lineage: `source.json` in models/backbone (written by the backbone stage for
any source but the organism).

A hub id records its id, the pinned `backbone.revision` and the commit the hub resolved it to; a local folder records
its content hash (sha256 over every file's relative path and bytes) and each file's size, mtime and hash, so a
re-check (`stale`) re-hashes only files whose size or mtime changed. DVC cannot hash a folder outside the project, so
`make run` / `make repro` run the preflight with `--record`, which compares the folder with the recorded hash and, on
a change, removes models/backbone/source.json: DVC then sees the stage's output modified and rebuilds the backbone
(and every stage downstream)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SOURCE_FILE = "source.json"
CHUNK = 1 << 22


def local_folder(source: str, root: str | Path = ".") -> Path | None:
    """`source` as an existing local folder (relative paths from `root`), or None (a hub id, the organism)."""
    if source == "organism":
        return None
    p = Path(source).expanduser()
    p = p if p.is_absolute() else Path(root) / p
    return p if p.is_dir() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(folder: Path, previous: dict | None = None) -> dict:
    """{"sha256": content hash of the folder, "files": {relpath: [size, mtime_ns, sha256]}}; a file whose size and
    mtime equal `previous`'s entry keeps its recorded hash (not re-read). Hidden files and folders (.git, .cache)
    are left out."""
    prev = (previous or {}).get("files", {})
    files: dict[str, list] = {}
    total = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        st = p.stat()
        old = prev.get(rel)
        digest = old[2] if old and old[0] == st.st_size and old[1] == st.st_mtime_ns else _sha256(p)
        files[rel] = [st.st_size, st.st_mtime_ns, digest]
        total.update(f"{rel}\0{digest}\n".encode())
    return {"sha256": total.hexdigest(), "files": files}


def source_record(source: str, revision: str | None, root: str | Path = ".", commit: str | None = None,
                  previous: dict | None = None) -> dict:
    """The record of a backbone source: a local folder's content hash, or a hub id's revision and resolved commit."""
    folder = local_folder(source, root)
    if folder is not None:
        return {"source": source, "kind": "local", **folder_digest(folder, previous)}
    return {"source": source, "kind": "hub", "revision": revision, "commit": commit}


def read_record(model_dir: Path) -> dict | None:
    try:
        return json.loads((Path(model_dir) / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def stale(model_dir: Path, source: str, root: str | Path = ".") -> str | None:
    """Why models/backbone no longer matches a local `source` folder (its content hash changed, or it was built from
    another source), or None (it matches, it was never built, or the source is not a local folder)."""
    rec = read_record(model_dir)
    folder = local_folder(source, root)
    if rec is None or folder is None:
        return None
    if rec.get("source") != source:
        return f"built from {rec.get('source')!r}, backbone.source is now {source!r}"
    now = folder_digest(folder, rec)["sha256"]
    return None if now == rec.get("sha256") else f"{source}: content hash {rec.get('sha256', '?')[:12]} -> {now[:12]}"
