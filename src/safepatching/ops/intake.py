"""Intake of new harmful-data batches: data/incoming/ -> validated, moved to data/batches/, tracked with DVC, and
appended as the next round (its parent: the last round) to params.yaml.

A failing batch goes to data/quarantine/ with its report (see batches.expectations) and stops the run.
`track(path)` is how the caller puts a file under DVC (`dvc add`); intake itself runs no commands.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from ..batches.expectations import load_eval_prompts, validate_batch
from ..config import load_params, parse_params
from ..errors import ConfigError
from ..round.layout import BACKBONE, Project

SUFFIXES = {".jsonl", ".json", ".csv"}


def incoming_files(project: Project) -> list[Path]:
    if not project.incoming.exists():
        return []
    return sorted(p for p in project.incoming.glob("*") if p.suffix in SUFFIXES)


def next_round_name(taken: set[str]) -> str:
    return next(f"r{n}" for n in range(1, len(taken) + 2) if f"r{n}" not in taken)


def intake(project: Project, params_path: Path, track: Callable[[Path], None], log=print) -> list[str]:
    """Validate each new file in data/incoming (sorted), track it with DVC and append a round to params.yaml."""
    files = incoming_files(project)
    if not files:
        return []
    params = load_params(params_path)
    evals = load_eval_prompts(project.eval_split("val")) | load_eval_prompts(project.eval_split("test"))
    earlier = [project.root / r.batch for r in params.rounds.values()]
    added: list[str] = []
    for f in files:
        rep = validate_batch(f, params.data, evals, earlier, project.quarantine, project.reports / "intake")
        name = next_round_name(set(params.rounds) | set(added))
        dest = project.batches / f"{name}_{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), dest)
        track(dest)
        parent = added[-1] if added else (list(params.rounds)[-1] if params.rounds else BACKBONE)
        append_round(params_path, name, str(dest.relative_to(project.root)), parent)
        earlier.append(dest)
        added.append(name)
        log(f"intake: {f.name} ({rep['rows']} rows) -> round {name} (parent {parent})")
    return added


def append_round(params_path: Path, name: str, batch: str, parent: str) -> None:
    """Append `name: {batch, parent}` under `rounds:` (keeps comments; the last top-level key is rounds)."""
    text = params_path.read_text()
    if not re.search(r"^rounds:", text, re.M):
        text += "\nrounds:\n"
    text = text.rstrip("\n") + f"\n  {name}: {{batch: {batch}, parent: {parent}}}\n"
    if name in (yaml.safe_load(params_path.read_text()).get("rounds") or {}):
        raise ConfigError(f"{params_path}: round {name!r} already exists")
    parse_params(yaml.safe_load(text), str(params_path))  # a broken params.yaml is never written
    tmp = params_path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(params_path)
