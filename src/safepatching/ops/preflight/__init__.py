"""Preflight: everything a params file needs, checked in seconds before Prefect or DVC start, every problem at once.

    python -m safepatching.ops.preflight --params configs/params.llama2-7b-chat.yaml     (make preflight PARAMS=...)

`run_preflight(params_path, root) -> Report`: the params load (strict schema); every round's batch and every eval-suite
file exists and parses with its columns / preset, the batch passes the refusal check, its categories are allowed and
it shares no prompt with the suite (`data`); the backbone (and each model-backed judge) is reachable -- a local
folder with config, weights and tokenizer, or a hub id in the cache or reachable with the hub on; lm-eval's tasks
resolve and their datasets are there offline; the suite's prompts fit the model's context (`model`). Files the
pipeline writes itself (the organism's world, red-team batches) are not looked for. Each problem is one line naming
the file or key, the rule and the fix; notes (e.g. prompts that will be skipped as too long) do not fail.
With `--record` (make run / make repro) a models/backbone built from a local folder whose content changed since is
marked stale, so `dvc repro` rebuilds it (io.source). Exit codes: 0 no problem, 2 problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    where: str  # a file (and line) or a params key
    rule: str   # what is wrong
    fix: str    # what to do

    def line(self) -> str:
        return f"{self.where}: {self.rule}; fix: {self.fix}"


@dataclass
class Report:
    params: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, rule: str, fix: str) -> None:
        self.problems.append(Problem(where, rule, fix))

    def lines(self) -> list[str]:
        head = (f"preflight {self.params}: ok ({self.checks} checks)" if self.ok else
                f"preflight {self.params}: {len(self.problems)} problem(s) ({self.checks} checks)")
        return [head, *(f"  problem: {p.line()}" for p in self.problems), *(f"  note: {n}" for n in self.notes)]


def run_preflight(params_path: str | Path, root: str | Path = ".", models: bool = True, record: bool = False) -> Report:
    """All checks of `params_path` (paths in it relative to `root`); `models`: also the backbone, judges' models,
    lm-eval tasks and prompt lengths (False: params and data only); `record`: when models/backbone was built from a
    local backbone.source folder whose content has changed since, mark it stale (io.source) so DVC rebuilds it."""
    from ...config import load_params
    from ...errors import ConfigError
    from .data import check_data
    from .model import check_models

    rep = Report(str(params_path))
    rep.checks += 1
    try:
        params = load_params(params_path)
    except ConfigError as e:
        head, *rest = str(e).splitlines()
        for line in rest or [head]:
            key, _, msg = line.strip().partition(": ")
            rep.add(f"{params_path}: {key}" if rest else key, msg or head,
                    "correct the key (see params.yaml for every key and its default)")
        return rep
    root = Path(root)
    check_data(params, root, rep)
    if models:
        check_models(params, root, rep)
    if record:
        mark_stale_backbone(params, root, rep)
    return rep


def mark_stale_backbone(params, root: Path, rep: Report) -> None:
    """Remove models/backbone/source.json when the local source folder it records has changed: DVC then sees the
    backbone stage's output modified and rebuilds it (it cannot hash a folder outside the project itself)."""
    from ...io.source import SOURCE_FILE, stale
    from ...layout import Project

    out = Project(root).model("backbone")
    why = stale(out, params.backbone.source, root)
    if why:
        (out / SOURCE_FILE).unlink()
        rep.notes.append(f"models/backbone is stale ({why}): marked for DVC to rebuild it and every stage after it")
