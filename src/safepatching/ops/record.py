"""Recording a round: register its merged model in MLflow with its lineage, metrics and the gate's decision.

`record_round(params, layout)` is the round's last step. It runs outside DVC (a cached stage would skip or repeat
it) and is idempotent: the registry returns the existing version for the same round identity.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..batches.loading import load_pairs
from ..round.layout import BACKBONE, RoundLayout
from .gate import gate
from .report import read_headline, write_round_report


@dataclass(frozen=True)
class RecordResult:
    round: str
    version: str
    created: bool
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"round": self.round, "version": self.version, "created": self.created, "passed": self.passed,
                "reasons": list(self.reasons)}


def seen_categories(params, root: Path, name: str) -> list[str]:
    """Harmful categories of every batch in the round's lineage (for forgetting)."""
    cats: list[str] = []
    for n in params.lineage(name):
        for c in load_pairs(Path(root) / params.round(n).batch, params.data)["category"].unique():
            if c and c not in cats:
                cats.append(str(c))
    return cats


def forgetting(full_metrics: dict, categories: list[str], judge: str) -> dict:
    """Jailbreak harmful rate (by `judge`) on the categories seen so far (the first ones = earlier rounds')."""
    ex = full_metrics.get(judge, {})
    out = {f"seen.harmful_jailbreak.{c}": ex[f"harmful_jailbreak/{c}"] for c in categories
           if f"harmful_jailbreak/{c}" in ex}
    if out:
        out["harmful_jailbreak_seen"] = round(sum(out.values()) / len(out), 2)
    return out


def dvc_stage_hash(root: Path, stage: str) -> str:
    """The md5s of a stage's outputs as recorded in dvc.lock ('' when not there)."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return ""
    st = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {})
    return ",".join(o.get("md5", "") for o in st.get("outs", []))


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def record_round(params, layout: RoundLayout, log=print) -> RecordResult:
    """Register the round in MLflow (idempotent) and apply the promotion gate against the champion."""
    from .tracking import ModelRegistry

    root, name = layout.root, layout.name
    r = params.round(name)
    reg = ModelRegistry.from_params(params, root)
    cand = read_headline(layout.metrics("test"))
    champ = reg.champion()
    reference = champ[2] if champ else read_headline(layout.project.backbone().metrics("test"))
    decision = gate(cand, reference, params.gate)
    tags = {"round": name, "parent_round": r.parent,
            "batch_sha256": json.loads(layout.validation.read_text())["sha256"],
            "dvc_stage_hash": dvc_stage_hash(root, f"merge@{name}"), "git_commit": git_commit(root),
            "patch_se": (layout.patch("se") / "manifest.json").read_text(),
            "patch_om": (layout.patch("om") / "manifest.json").read_text(),
            "selected": layout.selected.read_text()}
    parent_version = None
    if r.parent != BACKBONE:
        pv = reg.latest_version(r.parent)
        parent_version = pv.version if pv else None
    tags["parent_version"] = str(parent_version or "")
    report = write_round_report(params, layout.project, name)
    chosen = json.loads(tags["selected"]).get("merge") or {}
    run_params = {"round": name, "parent": r.parent, **{f"merge.{k}": v for k, v in chosen.items()}}
    full = json.loads(layout.metrics("test").read_text())
    judges = list(params.eval.judges)
    metrics = {**cand, **forgetting(full, seen_categories(params, root, name), params.eval.decide_with),
               **{f"{j}.{k}": v for j in judges for k, v in full.get(j, {}).items()}}
    version, created = reg.register_round(name, layout.model, run_params, metrics, decision, tags,
                                          [f for f in (report, layout.pareto, layout.importance_layers.with_suffix(".png"),
                                                       layout.diagnosis) if f.exists()])
    log(f"{name}: MLflow version {version} ({'new' if created else 'already registered'}); "
        f"gate {'PASSED' if decision.passed else 'FAILED: ' + '; '.join(decision.reasons)}")
    return RecordResult(name, str(version), created, decision.passed, list(decision.reasons))
