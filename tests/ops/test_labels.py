"""Honest labels in the registry's output (issue 21, item 9): the gate names harm a *level* and states the gain; a
registered version (and its run) carries the deciding judge and whether the chosen point was feasible; `status`
shows both and lists infeasible registrations."""

from __future__ import annotations

import json

from safepatching.config import GateCfg
from safepatching.ops.cli import _status
from safepatching.ops.gate import HEADLINE, gate
from safepatching.ops.record import RecordResult, selection_tags
from safepatching.ops.registry.rows import VersionRow, row_from_tags

REF = {"harmful_plain": 26.0, "harmful_jailbreak": 32.26, "over_refusal": 30.0, "utility": 50.0, "other": 2.0}
CFG = GateCfg(harmful_tolerance=1.0, over_refusal_tolerance=2.0, utility_tolerance=3.0, max_other=10.0,
              min_harm_gain=1.0, anchor="none")


def test_gate_reports_the_harm_level_and_the_gain() -> None:
    cand = {**REF, "harmful_plain": 25.0}  # harm 29.13 -> 28.63: a gain of 0.50 < 1
    d = gate(cand, REF, CFG, "champion v1")
    assert not d.passed and list(d.checks) == ["harmful_plain", "harmful_jailbreak", "over_refusal", "utility", "harm",
                                               "other"]
    assert d.reasons == ["harm=28.63 violates harm <= 28.13 (harm level = mean of harmful_plain and harmful_jailbreak; "
                         "reference harm 29.13 - min_harm_gain 1; gain 0.50)"]
    better = gate({**REF, "harmful_plain": 20.0}, REF, CFG)
    assert better.passed and better.checks["harm"]["value"] == 26.13 and better.checks["harm"]["limit"] == 28.13


def test_selection_tags_follow_the_chosen_point() -> None:
    assert selection_tags({"label": "x", "feasible": True, "rule": "constrained"}) == {
        "selection": "feasible", "selection_rule": "constrained"}
    assert selection_tags({"label": "parent", "feasible": False, "rule": "parent"}) == {
        "selection": "infeasible", "selection_rule": "parent"}


def test_row_reads_decided_by_and_selection_with_a_fallback_to_the_manifest() -> None:
    base = {"round": "r1", "gate": "passed"}
    row = row_from_tags("1", {**base, "decided_by": "keyword", "selection": "infeasible",
                              "selection_rule": "no over-refusal regression"}, {}, None, {})
    assert (row.decided_by, row.selection, row.selection_rule) == ("keyword", "infeasible", "no over-refusal regression")
    old = row_from_tags("2", {**base, "selected": json.dumps({"feasible": False, "rule": "parent"})}, {}, None, {})
    assert (old.decided_by, old.selection, old.selection_rule) == ("", "infeasible", "parent")
    unknown = row_from_tags("3", {**base, "selected": "not json"}, {}, None, {})
    assert (unknown.selection, unknown.selection_rule) == ("", "")


def test_record_line_marks_an_infeasible_registration() -> None:
    res = RecordResult("r1", "3", True, True, [], "backbone", "f" * 64, "d" * 64, [], "infeasible", "parent")
    assert res.line() == ("r1: MLflow version 3 (new; model ffffffffffff); gate PASSED vs backbone; INFEASIBLE "
                          "selection registered (rule: parent)")
    ok = RecordResult("r1", "3", True, True, [], "backbone", "f" * 64, "d" * 64, [], "feasible", "constrained")
    assert ok.line() == "r1: MLflow version 3 (new; model ffffffffffff); gate PASSED vs backbone"


class _Reg:
    model_name, uri = "m", "sqlite:///x.db"

    def __init__(self, rows):
        self.rows = rows

    def exists(self) -> bool:
        return True

    def versions(self):
        return self.rows


def _row(version: str, round_: str, selection: str, rule: str, judge: str) -> VersionRow:
    return VersionRow(version=version, round=round_, parent_version="none", gate="passed", aliases=(),
                      batch_sha256="x", run_id=None, metrics={}, model_sha256=version * 64, decided_by=judge,
                      selection=selection, selection_rule=rule)


def test_status_shows_the_judge_and_marks_infeasible_registrations() -> None:
    rows = [_row("1", "r1", "feasible", "constrained", "classifier"),
            _row("2", "r2", "infeasible", "no over-refusal regression", "keyword"), _row("3", "r3", "", "", "")]
    out = _status(_Reg(rows), {"r1": "1" * 64, "r2": "2" * 64, "r3": "3" * 64}, "none").splitlines()
    assert out[0].split() == ["version", "round", "parent", "model", "dvc_stage", "gate", "reference", "judge",
                              "selection", "state", "aliases", *HEADLINE]
    cells = [line.split() for line in out[1:4]]
    assert [(c[7], c[8]) for c in cells] == [("classifier", "feasible"), ("keyword", "INFEASIBLE"), ("-", "-")]
    i = out.index("infeasible selections registered:")
    assert out[i + 1] == ("  v2 (r2): no validation point met the selection's constraints; chosen by rule no "
                          "over-refusal regression")
    assert not out[i + 2].startswith("  v")
