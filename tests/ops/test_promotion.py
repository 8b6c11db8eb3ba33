"""The promotion policy (pure, no MLflow): which version may hold an alias, what force records, the gate reference."""

from __future__ import annotations

import pytest

from safepatching.ops.registry.promotion import (CANDIDATE, CHAMPION, Promotion, alias_problem, decide_promotion,
                                                 decide_rollback, gate_reference, refusal)
from safepatching.ops.registry.rows import VersionRow, row_from_tags


def _row(version: str = "2", gate: str = "passed", model: str = "m2", superseded_by: str = "",
         reasons: tuple[str, ...] = (), reference: str = "champion v1") -> VersionRow:
    return VersionRow(version=version, round="r2", parent_version="1", gate=gate, aliases=(), batch_sha256="b",
                      run_id=None, metrics={}, model_sha256=model, gate_reasons=reasons, gate_reference=reference,
                      superseded_by=superseded_by)


LINEAGE = {"m1", "m2"}


def test_refusal_order_and_wording() -> None:
    assert refusal(_row(), CHAMPION, LINEAGE) is None
    assert refusal(_row(superseded_by="5", gate="failed", model="mX"), CANDIDATE, LINEAGE) == (
        "v2 (r2) is superseded by v5")  # superseded first, for every alias
    failed = _row(gate="failed", reasons=("harmful_jailbreak=35.00 violates x", "other"), model="mX")
    assert refusal(failed, CHAMPION, LINEAGE) == (
        "v2 (r2) did not pass its gate vs champion v1: harmful_jailbreak=35.00 violates x")
    assert refusal(_row(gate="failed", reference=""), CHAMPION, None) == "v2 (r2) did not pass its gate"
    assert refusal(failed, CANDIDATE, {"mX"}) is None  # the gate only guards the champion
    assert refusal(_row(model="0123456789abcdef"), CANDIDATE, LINEAGE) == (
        "v2 (r2) is not in the lineage (model 0123456789ab; no round in params.yaml has that model now)")
    assert "no recorded model hash" in refusal(_row(model=""), CANDIDATE, LINEAGE)
    assert refusal(_row(model="mX"), CANDIDATE, None) is None  # lineage not given: not checked


def test_promotion_moves_refuses_or_is_forced() -> None:
    ok = decide_promotion(_row(), CHAMPION, "1", lineage=LINEAGE)
    assert ok == Promotion("2", CHAMPION, "1") and ok.moves and not ok.forced
    stale = _row(model="mX")
    no = decide_promotion(stale, CHAMPION, "1", lineage=LINEAGE)
    assert no.refusal == ("refusing to point champion at v2 (r2) is not in the lineage (model mX; no round in "
                          "params.yaml has that model now); use --force --reason '...' to override") and not no.moves
    forced = decide_promotion(stale, CHAMPION, "1", force=True, reason="hotfix", lineage=LINEAGE)
    assert forced.moves and forced.forced and forced.replaced == "1" and not forced.refusal
    assert decide_promotion(_row(), CHAMPION, None).moves  # the first champion


@pytest.mark.parametrize("current", ["1", "2", None])
def test_force_always_needs_a_reason(current) -> None:
    """Also when the alias is already on the version (the probe: it printed success and recorded nothing)."""
    d = decide_promotion(_row(), CHAMPION, current, force=True, reason="  ")
    assert d.refusal.startswith("a forced promotion needs a reason (--reason)") and not d.moves


def test_a_no_op_is_unchanged_and_a_forced_no_op_is_recorded() -> None:
    stale = _row(model="mX", gate="failed")
    same = decide_promotion(stale, CHAMPION, "2", lineage=LINEAGE)
    assert not same.moves and not same.forced and not same.refusal  # nothing to do, nothing refused
    kept = decide_promotion(stale, CHAMPION, "2", force=True, reason="keep it while r2 retrains", lineage=LINEAGE)
    assert not kept.moves and kept.forced and kept.replaced == "2" and not kept.refusal


def test_rollback_policy() -> None:
    assert decide_rollback(_row("1"), "2") == Promotion("1", CHAMPION, "2")
    sup = _row("1", superseded_by="3")
    assert decide_rollback(sup, "2").refusal == ("refusing to roll champion back to v1 (r2): it is superseded by v3; "
                                                 "use --force --reason '...' to override")
    assert decide_rollback(sup, "2", force=True).refusal.startswith("a forced rollback needs a reason")
    forced = decide_rollback(sup, "2", force=True, reason="v2 garbles")
    assert forced.moves and forced.forced and not forced.refusal


@pytest.mark.parametrize("alias,ok", [("champion", True), ("staging-2", True), ("a_b", True), ("x" * 64, True),
                                      ("Bad Alias", False), ("latest", False), ("LATEST", False), ("v3", False),
                                      ("V12", False), ("", False), ("x" * 65, False), ("1st", False)])
def test_alias_names(alias: str, ok: bool) -> None:
    assert (alias_problem(alias) is None) == ok


def test_gate_reference() -> None:
    assert gate_reference("3") == "champion v3" and gate_reference(None) == "backbone"


def test_rows_from_tags() -> None:
    tags = {"round": "r2", "parent_version": "1", "gate": "failed", "batch_sha256": "b", "model_sha256": "m",
            "gate_reasons": '["x", "y"]', "gate_reference": "champion v1", "supersedes": "1,3",
            "forced_promotions": "not json"}
    row = row_from_tags("4", tags, {"candidate": "4", "champion": "1", "staging": "4"}, "run", {"utility": 1.0})
    assert row.aliases == ("candidate", "staging") and row.gate_reasons == ("x", "y") and row.supersedes == ("1", "3")
    assert row.forced == ("not json",) and not row.superseded and row.metrics == {"utility": 1.0}
