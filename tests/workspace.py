"""Test workspaces built from the shipped params.yaml text (comments kept, as users' files have them)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

PLAIN_ROUNDS = """rounds:
  r1: {batch: data/world/batches/weapons.jsonl, parent: backbone}
  r2: {batch: data/world/batches/hacking.jsonl, parent: r1}
"""


def with_plain_rounds(params_text: str) -> str:
    """The shipped params.yaml text with its demo rounds (red-teamed from the parent model) replaced by two rounds
    on the organism's fixed plain batches (r1 weapons, r2 hacking) and an empty `redteam:`: intake and
    orchestration tests need batches that exist without running a model."""
    text, n = re.subn(r"(?ms)^rounds:.*?(?=^\S|\Z)", PLAIN_ROUNDS + "\n", params_text)
    text, m = re.subn(r"(?ms)^redteam:.*?(?=^\S|\Z)", "redteam: {}  # dvc.yaml's foreach needs the key\n\n", text)
    if n != 1 or m != 1:
        raise ValueError("params.yaml: expected one top-level rounds: and one redteam: section")
    return text


REPO = Path(__file__).resolve().parents[1]


def git_dvc_init(root: Path, run: Callable[[list[str], Path], object]) -> None:
    """Make `root` a git + DVC repository with everything committed, as a user's checkout is (analytics off;
    the repo's .dvcignore, so __pycache__ never changes a code dep's hash). `run(args, cwd)` runs one command."""
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                 ["git", "config", "user.name", "ci"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        run(args, root)
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "init"], root)
