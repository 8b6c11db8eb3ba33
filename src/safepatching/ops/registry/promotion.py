"""The promotion policy: which registered version may hold an alias, decided from plain recorded values.

Pure like `ops/gate.py` (which decides whether a new round's metrics may replace the champion's); no MLflow here:
`versions.ModelRegistry` reads the rows, asks this module and carries the decision out.

Pointing an alias at a version by hand (`decide_promotion`):
* a superseded version is refused, for every alias (a retrained round's new version replaced it);
* for `champion`, a version whose recorded gate did not pass is refused;
* a version whose model hash is not in the lineage (no round of params.yaml has that model now) is refused, when the
  lineage is given;
* the alias already on the version: nothing moves and nothing is refused;
* `force` overrides every refusal. It always needs a reason and is always recorded on the version (alias, who, why,
  when, the version it replaced) -- also when the alias already pointed at the version: nothing moves then, but the
  person's decision (e.g. keeping a champion that left the lineage) is on record, not silently dropped.
Moving `champion` back to the version it replaced (`decide_rollback`) refuses a superseded one unless forced, likewise.

A new round's gate compares it with the champion when there is one, else with the backbone (`gate_reference`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .rows import VersionRow, short

CANDIDATE = "candidate"
CHAMPION = "champion"
BACKBONE_REFERENCE = "backbone"
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")  # MLflow alias names (no spaces; 'latest' / 'vN' reserved)
_OVERRIDE = "use --force --reason '...' to override"


@dataclass(frozen=True)
class Promotion:
    """What a request to point `alias` at `version` comes to (`refusal` non-empty: nothing happens)."""

    version: str
    alias: str
    replaced: str | None  # the version the alias pointed at before (None: none)
    forced: bool = False  # recorded on the version as a forced promotion
    refusal: str = ""

    @property
    def moves(self) -> bool:
        """Whether the alias moves (False when refused or already on the version)."""
        return not self.refusal and self.replaced != self.version


def alias_problem(alias: str) -> str | None:
    """Why `alias` cannot be an MLflow alias name, or None."""
    if not _ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return (f"alias {alias!r}: must start with a letter and hold only letters, digits, '_' and '-' (at most 64), "
                "and not be 'latest' or v<N>")
    return None


def refusal(row: VersionRow, alias: str, lineage: Iterable[str] | None) -> str | None:
    """Why `row` may not get `alias` without force (None: it may); `lineage`: the model hashes of params.yaml's rounds
    now (None: not checked)."""
    if row.superseded:
        return f"v{row.version} ({row.round}) is superseded by v{row.superseded_by}"
    if alias == CHAMPION and row.gate != "passed":
        why = f": {row.gate_reasons[0]}" if row.gate_reasons else ""
        ref = f" vs {row.gate_reference}" if row.gate_reference else ""
        return f"v{row.version} ({row.round}) did not pass its gate{ref}{why}"
    if lineage is not None and row.model_sha256 not in set(lineage):
        what = f"model {short(row.model_sha256)}" if row.model_sha256 else "no recorded model hash"
        return (f"v{row.version} ({row.round}) is not in the lineage ({what}; no round in params.yaml has "
                "that model now)")
    return None


def decide_promotion(row: VersionRow, alias: str, current: str | None, *, force: bool = False, reason: str = "",
                     lineage: Iterable[str] | None = None) -> Promotion:
    """Point `alias` (now on version `current`, or None) at `row`'s version by hand?"""
    if force and not reason.strip():
        return Promotion(row.version, alias, current, True,
                         "a forced promotion needs a reason (--reason); it is recorded with who and when")
    if force:
        return Promotion(row.version, alias, current, forced=True)
    if current == row.version:
        return Promotion(row.version, alias, current)
    why = refusal(row, alias, lineage)
    refused = f"refusing to point {alias} at {why}; {_OVERRIDE}" if why else ""
    return Promotion(row.version, alias, current, refusal=refused)


def decide_rollback(previous: VersionRow, current: str, *, force: bool = False, reason: str = "") -> Promotion:
    """Move `champion` from version `current` back to `previous` (the champion it replaced)?"""
    if force and not reason.strip():
        return Promotion(previous.version, CHAMPION, current, True,
                         "a forced rollback needs a reason (--reason); it is recorded with who and when")
    if previous.superseded and not force:
        return Promotion(previous.version, CHAMPION, current, refusal=(
            f"refusing to roll champion back to v{previous.version} ({previous.round}): it is superseded by "
            f"v{previous.superseded_by}; {_OVERRIDE}"))
    return Promotion(previous.version, CHAMPION, current, forced=force)


def gate_reference(champion: str | None) -> str:
    """What a new round's gate compares it with: 'champion v<N>' (the registry's champion), else the backbone."""
    return f"champion v{champion}" if champion is not None else BACKBONE_REFERENCE
