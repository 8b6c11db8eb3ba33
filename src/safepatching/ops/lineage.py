"""What the lineage holds now: each round's merged model (content hash) and the DVC lock entry that made it.

The registry's identity of a version is checked against this: a version is *current* when its recorded model
hash equals the hash of `models/<round>` today, and a champion whose model is no round's current model is
reported (it serves weights the lineage no longer has). No MLflow here: rows come from the registry adapter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import CheckpointError
from ..io.checkpoints import sha256_dir
from ..layout import RoundLayout
from .registry.promotion import CHAMPION, gate_reference


def merge_stage(name: str) -> str:
    """The DVC stage that writes round `name`'s merged model."""
    return f"merge@{name}"


def _lock_entry(root: Path, stage: str) -> dict | None:
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return None
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)


def dvc_stage_hash(root: Path, stage: str) -> str:
    """sha256 of what the stage's dvc.lock entry records: command, params, (path, md5) of every dependency and
    output ('' when the stage is not in dvc.lock). Sizes and file counts are left out, so a lock-format change
    that keeps the hashes does not change a version's identity."""
    entry = _lock_entry(root, stage)
    if not entry:
        return ""
    canon = {"cmd": entry.get("cmd"), "params": entry.get("params") or {},
             "deps": sorted((d.get("path"), d.get("md5")) for d in entry.get("deps") or []),
             "outs": sorted((o.get("path"), o.get("md5")) for o in entry.get("outs") or [])}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dvc_outs_md5(root: Path, stage: str) -> str:
    """The md5s of a stage's outputs as recorded in dvc.lock ('' when not there)."""
    entry = _lock_entry(root, stage) or {}
    return ",".join(o.get("md5", "") for o in entry.get("outs", []))


def model_hashes(params, root: Path) -> dict[str, str]:
    """Round name -> `sha256_dir` of its merged model now, for every round of params.yaml that has a readable one."""
    out = {}
    for name in params.rounds:
        model = RoundLayout.of(params, name, root).model
        if (model / "config.json").is_file():
            try:
                out[name] = sha256_dir(model)
            except CheckpointError:  # no weights there: that round has no model in the lineage now
                continue
    return out


def version_state(row, hashes: dict[str, str]) -> str:
    """'current', 'superseded by vN', 'stale (not in lineage)' or 'legacy (no model hash)' for a VersionRow."""
    if row.superseded_by:
        return f"superseded by v{row.superseded_by}"
    if not row.model_sha256:
        return "legacy (no model hash)"
    if hashes.get(row.round) == row.model_sha256:
        return "current"
    return "stale (not in lineage)"


def champion_warning(rows, hashes: dict[str, str]) -> str | None:
    """One line when the champion's model is not the current model of any round in params.yaml, else None; it says
    that the gate of every new round still compares against that champion."""
    champ = next((r for r in rows if CHAMPION in r.aliases), None)
    if champ is None or (champ.model_sha256 and champ.model_sha256 in hashes.values()):
        return None
    model = f"model {champ.model_sha256[:12]}" if champ.model_sha256 else "no recorded model hash"
    sup = f", superseded by v{champ.superseded_by}" if champ.superseded_by else ""
    return (f"champion v{champ.version} ({champ.round}, {model}{sup}) is not in the lineage: no round in "
            "params.yaml has that model now; models:/…@champion serves weights the lineage no longer has, and the gate of "
            f"every new round compares against it (reference: {gate_reference(champ.version)}); promote a current "
            "version to end this")
