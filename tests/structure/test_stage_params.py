"""Stage params name exactly what a stage reads of `data:`: the batch checks' settings re-run `validate`, the column
mapping re-runs training; intake-only knobs (data.stability_seconds) re-run nothing."""

from __future__ import annotations

import yaml

from safepatching.config import DataCfg

from .imports import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
INTAKE_ONLY = {"stability_seconds"}
COLUMNS = {"prompt_column", "response_column", "category_column", "id_column"}


def _data_params(stage: str) -> set[str]:
    params = DVC[stage].get("do", DVC[stage]).get("params", [])
    assert "data" not in params, f"{stage}: name data.<field>s, not the whole section (intake knobs would re-run it)"
    return {p.split(".", 1)[1] for p in params if isinstance(p, str) and p.startswith("data.")}


def test_validate_depends_on_every_batch_check_setting():
    assert _data_params("validate") == set(DataCfg.model_fields) - INTAKE_ONLY


def test_training_stages_depend_on_the_column_mapping_only():
    for stage in ("train_se", "train_om", "importance"):
        assert _data_params(stage) == COLUMNS, stage
