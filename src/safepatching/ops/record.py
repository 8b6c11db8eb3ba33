"""Recording a round: register its merged model in MLflow with its lineage, metrics and the gate's decision.

`record_round(params, layout)` is the round's last step. It runs outside DVC (a cached stage would skip or repeat
it) and is idempotent: a version's identity is what produced it -- round, batch hash, parent version, the merged
model's content hash and the hash of the DVC stage that wrote it. The same identity returns the existing version
with the gate decision it was registered with (never re-gated); a retrained round becomes a new version that
supersedes the old one (see `safepatching.ops.registry.versions`).

Besides the identity, the version (and its run) is tagged `decided_by` (eval.decide_with: the judge whose numbers
made the headline, the selection and the gate) and `selection` (`feasible` / `infeasible`: whether the round's
chosen point met the selection's constraints; `selection_rule` says which tier chose it), so `status` can show
that an infeasible point was registered.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..batches.loading import load_pairs
from ..io.checkpoints import sha256_dir
from ..layout import BACKBONE, RoundLayout
from .gate import GateDecision, gate
from .lineage import champion_warning, dvc_outs_md5, dvc_stage_hash, merge_stage, model_hashes
from .registry.promotion import gate_reference
from .report import read_headline, write_round_report


@dataclass(frozen=True)
class RecordResult:
    """A round's registration: the version, whether it is new, and its recorded gate decision."""

    round: str
    version: str
    created: bool
    passed: bool
    reasons: list[str] = field(default_factory=list)
    reference: str = ""
    model_sha256: str = ""
    dvc_stage_hash: str = ""
    supersedes: list[str] = field(default_factory=list)
    selection: str = ""  # feasible | infeasible (the chosen point of the round's selection), "" when unrecorded
    selection_rule: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """`r1: MLflow version 3 (new, supersedes v1; model 1a2b3c4d5e6f); gate FAILED vs champion v2: ...`"""
        how = "new" if self.created else "already registered"
        if self.supersedes:
            how += ", supersedes " + ", ".join(f"v{v}" for v in self.supersedes)
        verdict = "PASSED" if self.passed else "FAILED"
        ref = f" vs {self.reference}" if self.reference else ""
        why = ": " + "; ".join(self.reasons) if self.reasons else ""
        recorded = "" if self.created else "recorded "
        chosen = (f"; INFEASIBLE selection registered (rule: {self.selection_rule or '-'})"
                  if self.selection == "infeasible" else "")
        return (f"{self.round}: MLflow version {self.version} ({how}; model {self.model_sha256[:12] or '-'}); "
                f"{recorded}gate {verdict}{ref}{why}{chosen}")


def summary_line(result: dict) -> str:
    """`RecordResult.line()` of a result passed around as a dict (flow task results)."""
    names = RecordResult.__dataclass_fields__
    return RecordResult(**{k: v for k, v in result.items() if k in names}).line()


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


def selection_tags(selected: dict) -> dict[str, str]:
    """The chosen point's feasibility as tags: `selection` feasible | infeasible, `selection_rule` the tier that chose
    it (round.selection: constrained | no over-refusal regression | parent | fixed)."""
    return {"selection": "feasible" if selected.get("feasible") else "infeasible",
            "selection_rule": str(selected.get("rule", ""))}


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def record_round(params, layout: RoundLayout, log=print) -> RecordResult:
    """Register the round in MLflow (idempotent by identity); a new version is gated against the champion."""
    from .registry.store import RegistryError
    from .registry.versions import ModelRegistry

    root, name = layout.root, layout.name
    r = params.round(name)
    reg = ModelRegistry.from_params(params, root)
    if reg.rehomed:
        log(reg.rehomed)
    stage = merge_stage(name)
    stage_hash = dvc_stage_hash(root, stage)
    if not stage_hash:
        raise RegistryError(f"dvc.lock has no stage {stage}: run `dvc repro evaluate@{name}` before registering {name}")
    cand = read_headline(layout.metrics("test"))
    parent_version = None
    if r.parent != BACKBONE:
        pv = reg.live_version(r.parent, sha256_dir(RoundLayout.of(params, r.parent, root).model))
        if pv is None:
            raise RegistryError(f"{name}: parent round {r.parent} has no live registered version with its current "
                                f"model; register {r.parent} first")
        parent_version = str(pv.version)

    def decide() -> GateDecision:  # only called when a new version is created
        champ = reg.champion()
        backbone = read_headline(layout.project.backbone().metrics("test"))
        anchor = backbone if params.gate.anchor == "backbone" else None
        if champ:
            return gate(cand, champ[2], params.gate, gate_reference(champ[0]), anchor=anchor)
        return gate(cand, backbone, params.gate, gate_reference(None))

    tags = {"round": name, "parent_round": r.parent,
            "batch_sha256": json.loads(layout.validation.read_text())["sha256"],
            "model_sha256": sha256_dir(layout.model), "dvc_stage_hash": stage_hash,
            "dvc_outs_md5": dvc_outs_md5(root, stage), "git_commit": git_commit(root),
            "patch_se": (layout.patch("se") / "manifest.json").read_text(),
            "patch_om": (layout.patch("om") / "manifest.json").read_text(),
            "selected": layout.selected.read_text(), "parent_version": parent_version or ""}
    selected = json.loads(tags["selected"])
    tags.update(decided_by=params.eval.decide_with, **selection_tags(selected))
    report = write_round_report(params, layout.project, name)
    chosen = selected.get("merge") or {}
    run_params = {"round": name, "parent": r.parent, "eval.decide_with": params.eval.decide_with,
                  **{f"merge.{k}": v for k, v in chosen.items()}}
    full = json.loads(layout.metrics("test").read_text())
    judges = list(params.eval.judges)
    metrics = {**cand, **forgetting(full, seen_categories(params, root, name), params.eval.decide_with),
               **{f"{j}.{k}": v for j in judges for k, v in full.get(j, {}).items()}}
    version, created = reg.register_round(name, layout.model, run_params, metrics, decide, tags,
                                          [f for f in (report, layout.pareto, layout.importance_layers.with_suffix(".png"),
                                                       layout.diagnosis) if f.exists()], log=log)
    row = reg.version(version)
    res = RecordResult(name, str(version), created, row.gate == "passed", list(row.gate_reasons), row.gate_reference,
                       row.model_sha256, row.dvc_stage_hash, list(row.supersedes) if created else [],
                       row.selection, row.selection_rule)
    log(res.line())
    return res


def check_champion(params, root: Path) -> str | None:
    """One line when the registry's champion is not in the lineage (see `lineage.champion_warning`), else None
    (reads the registry only)."""
    from .registry.versions import ModelRegistry

    reg = ModelRegistry.from_params(params, root, writable=False)
    if not reg.exists():
        return None
    return champion_warning(reg.versions(), model_hashes(params, Path(root)))
