"""One registered model version as recorded: plain values read from its MLflow version tags (no MLflow here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class VersionRow:
    """One line of the status table."""

    version: str
    round: str
    parent_version: str
    gate: str
    aliases: tuple[str, ...]
    batch_sha256: str
    run_id: str | None
    metrics: dict[str, float]
    model_sha256: str = ""
    dvc_stage_hash: str = ""
    gate_reasons: tuple[str, ...] = ()
    gate_reference: str = ""
    supersedes: tuple[str, ...] = ()
    superseded_by: str = ""
    forced: tuple[dict, ...] = ()
    decided_by: str = ""     # the deciding judge (eval.decide_with) when it was registered
    selection: str = ""      # feasible | infeasible: the round's chosen point; "" when unknown
    selection_rule: str = ""

    @property
    def superseded(self) -> bool:
        return bool(self.superseded_by)


def split(v: str | None) -> tuple[str, ...]:
    """A comma-separated tag value ('1,3') as a tuple."""
    return tuple(x for x in (v or "").split(",") if x)


def json_list(v: str | None) -> list:
    """A tag holding a JSON list (a non-list or non-JSON value becomes a one-element list)."""
    try:
        out = json.loads(v or "[]")
    except json.JSONDecodeError:
        return [v]
    return out if isinstance(out, list) else [out]


def short(h: str | None, n: int = 12) -> str:
    """A hash shortened for tables ('-' when unknown)."""
    return h[:n] if h else "-"


def _selection(tags: Mapping[str, str]) -> tuple[str, str]:
    """(feasible | infeasible | "", rule) from the `selection` tags, or else from the `selected` manifest tag (versions
    registered before those tags existed)."""
    if tags.get("selection"):
        return tags["selection"], tags.get("selection_rule", "")
    try:
        chosen = json.loads(tags.get("selected") or "")
    except json.JSONDecodeError:
        return "", ""
    if not isinstance(chosen, dict) or not isinstance(chosen.get("feasible"), bool):
        return "", ""
    return ("feasible" if chosen["feasible"] else "infeasible"), str(chosen.get("rule", ""))


def row_from_tags(version: str, tags: Mapping[str, str], aliases: Mapping[str, str], run_id: str | None,
                  metrics: dict[str, float]) -> VersionRow:
    """The row of a version from its tags, the model's aliases (alias -> version) and its run's metrics."""
    t = tags
    selection, rule = _selection(t)
    return VersionRow(
        version=str(version), round=t.get("round", ""), parent_version=t.get("parent_version", ""),
        gate=t.get("gate", ""), aliases=tuple(sorted(a for a, v in aliases.items() if str(v) == str(version))),
        batch_sha256=t.get("batch_sha256", ""), run_id=run_id, metrics=metrics,
        model_sha256=t.get("model_sha256", ""), dvc_stage_hash=t.get("dvc_stage_hash", ""),
        gate_reasons=tuple(str(r) for r in json_list(t.get("gate_reasons"))),
        gate_reference=t.get("gate_reference", ""), supersedes=split(t.get("supersedes")),
        superseded_by=t.get("superseded_by", ""), forced=tuple(json_list(t.get("forced_promotions"))),
        decided_by=t.get("decided_by", ""), selection=selection, selection_rule=rule)
